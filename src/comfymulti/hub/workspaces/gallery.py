"""The frontend's template dialog, filled with the workshop's templates through the routes it
already reads (`templates/index.json`, `templates/<name>.json`, `templates/<name>-1.<ext>`),
so a participant finds them where stock ComfyUI shows its gallery."""

from __future__ import annotations

import mimetypes
from typing import Any

from fastapi import Depends
from fastapi.responses import FileResponse

from comfymulti.errors import NotFound
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import templates
from comfymulti.hub.web.access import get_hub
from comfymulti.hub.workspaces.frontend import STATIC
from comfymulti.hub.workspaces.router import workspace_router

router = workspace_router()

CATEGORY = "Workshop"
# Shown for a template published without a thumbnail (the frontend's own placeholder).
PLACEHOLDER = STATIC / "assets/images/default-template.png"


@router.get("/templates/index.json")
def template_index(hub: HubContext = Depends(get_hub)) -> list[dict[str, Any]]:
    """One category, "Workshop", in the shape of the comfyui-workflow-templates index."""
    published = templates.describe(hub.settings)
    if not published:
        return []
    return [{"moduleName": "default", "title": CATEGORY, "category": CATEGORY, "type": "image",
             "icon": "icon-[lucide--graduation-cap]",
             "templates": [{"name": templates.slug(t.name), "title": t.title,
                            "description": t.description, "mediaType": "image",
                            "mediaSubtype": (t.thumbnail or PLACEHOLDER).suffix[1:]}
                           for t in published]}]


@router.get("/api/workshop/default_workflow")
def default_workflow(hub: HubContext = Depends(get_hub)) -> dict[str, str | None]:
    """The organiser's default workflow by its dialog name (start_workflow.js opens it in
    place of the frontend's built-in graph), or null."""
    return {"name": templates.default_slug(hub.settings)}


@router.get("/templates/index_logo.json")
def template_logos() -> dict[str, Any]:
    return {}


@router.get("/templates/{file_name}")
def template_file(file_name: str, hub: HubContext = Depends(get_hub)) -> FileResponse:
    """`<name>.json` (the workflow) or `<name>-1.<ext>` (its thumbnail)."""
    stem, dot, ext = file_name.rpartition(".")
    if dot and ext == "json" and (found := templates.by_slug(hub.settings, stem)):
        return FileResponse(hub.settings.templates_dir / found.name,
                            media_type="application/json", headers={"Cache-Control": "no-cache"})
    name, dash, index = stem.rpartition("-")
    found = templates.by_slug(hub.settings, name) if dash and index == "1" else None
    thumbnail = found and (found.thumbnail or PLACEHOLDER)
    if thumbnail and thumbnail.suffix == f".{ext}":
        return FileResponse(thumbnail, headers={"Cache-Control": "no-cache"},
                            media_type=mimetypes.guess_type(thumbnail.name)[0])
    raise NotFound(f"no template file {file_name!r}")
