"""/api/v1/templates: instructors publish workshop workflows to every participant."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from comfymulti.hub.context import HubContext
from comfymulti.hub.services import templates
from comfymulti.hub.web.access import current_user, get_hub, require_instructor
from comfymulti.hub.web.bodies import read_body
from comfymulti.hub.web.openapi import JSON_OBJECT, request_body

# Everyone logged in reads; instructors and admins change (their routes add that).
router = APIRouter(prefix="/api/v1/templates", tags=["templates"],
                   dependencies=[Depends(current_user)])


@router.get("")
def list_all(hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    return {"templates": [p.name for p in templates.list_templates(hub.settings)]}


@router.put("/{name}", dependencies=[Depends(require_instructor)], status_code=201,
            openapi_extra=request_body(JSON_OBJECT))
async def publish(name: str, request: Request, hub: HubContext = Depends(get_hub)
                  ) -> dict[str, str]:
    """Body: the workflow JSON as the frontend saves it."""
    body = await read_body(request, hub.settings.files.max_upload_bytes)
    path = templates.publish(hub.settings, name, body)
    return {"name": path.name, "path": templates.PREFIX + path.name}


@router.delete("/{name}", dependencies=[Depends(require_instructor)], status_code=204)
def remove(name: str, hub: HubContext = Depends(get_hub)) -> Response:
    templates.remove(hub.settings, name)
    return Response(status_code=204)
