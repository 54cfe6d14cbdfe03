"""/admin/api/templates: publish a workflow with its title, description and thumbnail,
reorder, remove, and choose the default workflow new participants open with."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from comfymulti.errors import InvalidInput, NotFound
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import templates
from comfymulti.hub.web import bodies
from comfymulti.hub.web.access import get_hub, require_admin
from comfymulti.hub.web.openapi import request_body

router = APIRouter(prefix="/admin/api/templates", tags=["admin"],
                   dependencies=[Depends(require_admin)])


class PublishBody(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    workflow: dict[str, Any]
    title: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=2000)
    thumbnail: str | None = Field(default=None, description="base64 PNG, JPEG or WebP "
                                  "(a data: URL is accepted too)")


class OrderBody(BaseModel):
    names: list[str] = Field(min_length=1, max_length=1000)


class DefaultBody(BaseModel):
    name: str | None = Field(max_length=200)


def _decode(thumbnail: str) -> bytes:
    try:
        return base64.b64decode(thumbnail.partition(",")[2] or thumbnail, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("thumbnail: not base64") from None


@router.post("", status_code=201, openapi_extra=request_body(PublishBody))
async def publish(request: Request, hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    """Publish (or replace) a template; participants see it at once."""
    body = await bodies.read_model(request, PublishBody,
                                   hub.settings.files.max_upload_bytes)
    image = _decode(body.thumbnail) if body.thumbnail else None

    path = await hub.run(lambda: templates.publish(
        hub.settings, body.name, json.dumps(body.workflow).encode(), title=body.title,
        description=body.description, thumbnail_bytes=image))
    name = path.name
    hub.queue.notify.changed()
    return {"name": name, "path": templates.PREFIX + name, "thumbnail": image is not None}


@router.put("/order", openapi_extra=request_body(OrderBody))
async def reorder(request: Request, hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    body = await bodies.read_model(request, OrderBody)
    order = await hub.run(templates.reorder, hub.settings, body.names)
    hub.queue.notify.changed()
    return {"order": order}


@router.put("/default", openapi_extra=request_body(DefaultBody))
async def set_default(request: Request, hub: HubContext = Depends(get_hub)
                      ) -> dict[str, str | None]:
    """The workflow new participants open with (null: none)."""
    body = await bodies.read_model(request, DefaultBody)
    chosen = await hub.run(templates.set_default, hub.settings, body.name)
    hub.queue.notify.changed()
    return {"default": chosen}


@router.get("/{name}/thumbnail", response_class=FileResponse,
            responses={200: {"content": {"image/*": {}}}})
def thumbnail(name: str, hub: HubContext = Depends(get_hub)) -> FileResponse:
    path = templates.thumbnail(hub.settings, name)
    if path is None:
        raise NotFound(f"template {name!r} has no thumbnail")
    return FileResponse(path, headers={"Cache-Control": "no-cache"})


@router.delete("/{name}", status_code=204)
async def remove(name: str, hub: HubContext = Depends(get_hub)) -> Response:
    await hub.run(templates.remove, hub.settings, name)
    hub.queue.notify.changed()
    return Response(status_code=204)
