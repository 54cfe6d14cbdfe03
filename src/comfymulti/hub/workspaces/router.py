"""The one way to declare ComfyUI-compatible routes under /u/<user>/."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from comfymulti.hub.web.access import workspace_owner
from comfymulti.hub.web.errors import ComfyRoute


def workspace_router() -> APIRouter:
    """Every route on it needs the workspace's owner (anyone else: 404) and answers errors
    in ComfyUI's shape. A route added here cannot forget either."""
    return APIRouter(prefix="/u/{user}", tags=["workspace"],
                     dependencies=[Depends(workspace_owner)], route_class=ComfyRoute)
