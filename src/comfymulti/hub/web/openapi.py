"""The hub's OpenAPI document, served at /openapi.json without credentials, like /health.

Public on purpose: it describes the routes of this version of the code (no users, jobs,
tokens, workers or settings), which anyone can read in the source, and tools such as
schemathesis or client generators should fetch it before they hold a token. The login form
and the frontend's static files are left out (`include_in_schema=False`).

Routes read their bodies by hand, after their access check (see `bodies`), so FastAPI does
not see them: each such route declares its body with `request_body(...)` as `openapi_extra`.
FastAPI's default 422 answer is replaced by what the hub really answers: a JSON error for
any 4xx (the hub's shape, or ComfyUI's under /u/<user>/).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

URL = "/openapi.json"

# Schemas of bodies that no pydantic model describes.
JSON_OBJECT: dict[str, Any] = {"type": "object"}
ANY_JSON: dict[str, Any] = {}
BINARY: dict[str, Any] = {"type": "string", "format": "binary"}

_ERROR = {"description": "Refused: a JSON error (ComfyUI's shape under /u/<user>/)",
          "content": {"application/json": {"schema": {"type": "object",
                                                      "required": ["error"]}}}}


def request_body(schema: type[BaseModel] | dict[str, Any],
                 media_type: str = "application/json", *, required: bool = True
                 ) -> dict[str, Any]:
    """`openapi_extra` declaring a body the handler reads itself: a pydantic model's JSON
    schema (its `$defs` inlined, as they cannot stay inside an operation) or a given one."""
    if isinstance(schema, type):
        schema = _inline(schema.model_json_schema())
    return {"requestBody": {"required": required,
                            "content": {media_type: {"schema": schema}}}}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    return walk(schema)  # type: ignore[no-any-return]


def install(app: FastAPI) -> None:
    """Build the document once, on first request, with the hub's error answers."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for operations in doc.get("paths", {}).values():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
                    operation["responses"]["4XX"] = _ERROR
            schemas = doc.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
