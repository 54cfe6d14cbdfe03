"""A run request in ComfyUI's API format (`POST /prompt`), checked once where it enters the
hub; everything after (validation, the queue, the worker) may rely on its shape."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from comfymulti.catalog.index import requirements, requirements_key
from comfymulti.errors import InvalidInput

Prompt = dict[str, dict[str, Any]]

# The run request as JSON Schema, for the API documents of the routes taking one.
SUBMISSION_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["prompt"],
    "properties": {
        "prompt": {"type": "object", "minProperties": 1, "additionalProperties": {
            "type": "object", "required": ["class_type"],
            "properties": {"class_type": {"type": "string", "minLength": 1},
                           "inputs": {"type": "object"}, "_meta": {"type": "object"}}}},
        "extra_data": {"type": "object"},
        "client_id": {"type": "string"},
        "prompt_id": {"type": "string", "format": "uuid"},
    },
}

# Partner-node credentials a browser adds to extra_data; never stored on the hub.
SECRET_EXTRA = ("auth_token_comfy_org", "api_key_comfy_org")


class NoPrompt(InvalidInput):
    """No prompt provided"""

    error_type = "no_prompt"


def check_prompt_shape(prompt: Any) -> Prompt:
    """The API-format prompt, or InvalidInput saying what is wrong with its shape.
    Flat loops only: a prompt is checked node by node, never by following links."""
    if not isinstance(prompt, dict) or not prompt:
        raise InvalidInput("prompt must be a non-empty object of nodes")
    for node_id, node in prompt.items():
        if not isinstance(node, dict):
            raise InvalidInput(f"node {node_id!r} must be an object")
        if not isinstance(node.get("class_type"), str) or not node["class_type"]:
            raise InvalidInput(f"node {node_id!r} has no class_type")
        if not isinstance(node.get("inputs", {}), dict):
            raise InvalidInput(f"node {node_id!r}: inputs must be an object")
        if not isinstance(node.get("_meta", {}), dict):
            raise InvalidInput(f"node {node_id!r}: _meta must be an object")
    return prompt


@dataclass(frozen=True)
class Submission:
    """A checked run request: what the queue stores and a worker receives."""

    prompt: Prompt
    extra_data: dict[str, Any]
    client_id: str = ""
    prompt_id: str | None = None

    @property
    def requirements(self) -> str:
        """Node types and model files this prompt needs, as the scheduler's matching key."""
        return requirements_key(requirements(self.prompt))


def parse_submission(body: Any) -> Submission:
    """`{"prompt": …, "extra_data"?, "client_id"?, "prompt_id"?}` → Submission, or
    InvalidInput (NoPrompt when there is no prompt object at all, as ComfyUI says)."""
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), dict):
        raise NoPrompt()
    prompt = check_prompt_shape(body["prompt"])
    extra = body.get("extra_data") or {}
    if not isinstance(extra, dict):
        raise InvalidInput("extra_data must be an object")
    if not isinstance(extra.get("extra_pnginfo", {}), dict):
        raise InvalidInput("extra_data.extra_pnginfo must be an object")
    extra = {k: v for k, v in extra.items() if k not in SECRET_EXTRA}
    client_id = body.get("client_id") or ""
    if not isinstance(client_id, str):
        raise InvalidInput("client_id must be a string")
    prompt_id = body.get("prompt_id")
    if prompt_id is not None:
        if not isinstance(prompt_id, str):
            raise InvalidInput("prompt_id must be a UUID string")
        try:
            prompt_id = str(uuid.UUID(prompt_id))
        except ValueError:
            raise InvalidInput("prompt_id must be a UUID") from None
    return Submission(prompt=prompt, extra_data=extra, client_id=client_id, prompt_id=prompt_id)


_ANNOTATION = re.compile(r"^(?P<name>.*?)\s*\[(?P<type>input|output|temp)\]$")


def parse_reference(value: str, default_type: str = "input") -> tuple[str, str, str, bool]:
    """`"sub/name.png [output]"` → (type, subfolder, filename, annotated).

    Empty, '.' and '..' parts are dropped, so the result never leaves the folder.
    """
    kind, annotated = default_type, False
    m = _ANNOTATION.match(value)
    if m:
        value, kind, annotated = m["name"], m["type"], True
    parts = [p for p in value.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        return kind, "", "", annotated
    return kind, "/".join(parts[:-1]), parts[-1], annotated


def references_file(prompt: Prompt, subfolder: str, filename: str) -> bool:
    """True if some input of the prompt names this file (as `parse_reference` reads it): a
    worker may fetch only the files its job loads."""
    wanted = parse_reference(f"{subfolder}/{filename}")[1:3]
    return any(isinstance(value, str) and parse_reference(value)[1:3] == wanted
               for node in prompt.values() for value in node.get("inputs", {}).values())


def workflow_id(extra_data: dict[str, Any]) -> str | None:
    """The id of the UI workflow a job came from (in extra_pnginfo), if it has one."""
    info = extra_data.get("extra_pnginfo")
    workflow = info.get("workflow") if isinstance(info, dict) else None
    value = workflow.get("id") if isinstance(workflow, dict) else None
    return value if isinstance(value, str) else None
