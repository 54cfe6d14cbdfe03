"""Inputs: the files a prompt loads come from the job owner's folders on the hub, never from
whatever ComfyUI happens to have.

Each referenced file is fetched from the hub under the job's lease and uploaded into ComfyUI's
input folder under `cm-<job id>/`; the prompt is rewritten to point there. Every reference is
rewritten, found or not, so a name can never reach a file ComfyUI holds for someone else (a
missing file fails ComfyUI's validation under the rewritten name, and `unstage` maps messages
back to the user's own names).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from comfymulti.catalog.prompt import parse_reference
from comfymulti.errors import InvalidInput, NotFound

log = logging.getLogger("comfymulti.worker.staging")

# Loader nodes whose file input is known even when the catalog lacks an upload flag.
KNOWN_FILE_INPUTS = {
    "LoadImage": "image",
    "LoadImageMask": "image",
    "LoadVideo": "file",
    "LoadAudio": "audio",
}
class _Hub(Protocol):
    async def download_input(self, job_id: str, lease_id: str, filename: str,
                             subfolder: str = "", type: str = "input") -> bytes: ...


class _Comfy(Protocol):
    async def upload_input(self, data: bytes, filename: str,
                           subfolder: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class InputRef:
    """One file input of one node: where the user's file lives."""

    node_id: str
    input_name: str
    value: str
    type: str  # input | output | temp, in the owner's folders on the hub
    subfolder: str
    filename: str
    annotated: bool


def staging_folder(job_id: str) -> str:
    return f"cm-{job_id}"


def _upload_flagged(spec: Any) -> tuple[bool, str]:
    """(is a file-upload input, default folder type) for one input spec of the catalog."""
    if not isinstance(spec, list) or len(spec) < 2 or not isinstance(spec[1], dict):
        return False, "input"
    options = spec[1]
    flagged = any(v and (k == "upload" or k.endswith("_upload")) for k, v in options.items())
    folder = options.get("image_folder")
    return flagged, folder if folder in ("input", "output", "temp") else "input"


def file_inputs(class_type: str, node_def: dict[str, Any] | None) -> dict[str, str]:
    """Input name → default folder type, for every file input of a node type."""
    found: dict[str, str] = {}
    if class_type in KNOWN_FILE_INPUTS:
        found[KNOWN_FILE_INPUTS[class_type]] = "input"
    inputs = (node_def or {}).get("input") or {}
    for group in ("required", "optional"):
        for name, spec in (inputs.get(group) or {}).items():
            flagged, folder = _upload_flagged(spec)
            if flagged:
                found[name] = folder
    return found


def find_inputs(prompt: dict[str, Any], object_info: dict[str, Any]) -> list[InputRef]:
    refs = []
    for node_id, node in prompt.items():
        class_type = node.get("class_type", "")
        wanted = file_inputs(class_type, object_info.get(class_type))
        for name, default_type in wanted.items():
            value = (node.get("inputs") or {}).get(name)
            if not isinstance(value, str) or not value.strip():
                continue  # a link or an empty widget
            kind, sub, filename, annotated = parse_reference(value, default_type)
            refs.append(InputRef(str(node_id), name, value, kind, sub, filename, annotated))
    return refs


async def stage_inputs(prompt: dict[str, Any], object_info: dict[str, Any], *, job_id: str,
                       lease_id: str, hub: _Hub, comfy: _Comfy) -> dict[str, Any]:
    """A copy of the prompt whose file inputs point at this job's own copies in ComfyUI."""
    refs = find_inputs(prompt, object_info)
    if not refs:
        return prompt
    folder = staging_folder(job_id)
    unique = {(r.type, r.subfolder, r.filename): r for r in refs}

    async def stage(ref: InputRef) -> str:
        target_sub = "/".join(p for p in (folder, ref.subfolder) if p)
        fallback = f"{target_sub}/{ref.filename or 'missing'}"
        if not ref.filename:
            return fallback
        try:
            data = await hub.download_input(job_id, lease_id, ref.filename, ref.subfolder,
                                            ref.type)
        except (NotFound, InvalidInput) as exc:
            log.info("job %s: input %r not available (%s); ComfyUI will report it",
                     job_id, ref.value, exc.message)
            return fallback
        stored = await comfy.upload_input(data, ref.filename, target_sub)
        sub = str(stored.get("subfolder") or target_sub)
        return f"{sub}/{stored.get('name') or ref.filename}"

    keys = list(unique)
    staged = await asyncio.gather(*(stage(unique[k]) for k in keys))
    where = dict(zip(keys, staged, strict=True))
    out = copy.deepcopy(prompt)
    for ref in refs:
        new = where[(ref.type, ref.subfolder, ref.filename)]
        out[ref.node_id]["inputs"][ref.input_name] = new + (" [input]" if ref.annotated else "")
    return out


def unstage(value: Any, job_id: str) -> Any:
    """Map names in ComfyUI's messages back to the user's (drop the staging folder)."""
    prefix = staging_folder(job_id) + "/"
    if isinstance(value, str):
        return value.replace(prefix, "").replace(staging_folder(job_id), "")
    if isinstance(value, list):
        return [unstage(v, job_id) for v in value]
    if isinstance(value, dict):
        return {k: unstage(v, job_id) for k, v in value.items()}
    return value
