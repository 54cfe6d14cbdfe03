"""The ComfyUI routes the frontend reads at start-up: features, users, system stats,
extensions, the node catalog, model lists, and the empty-but-valid extras."""

from __future__ import annotations

import platform
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import Response

from comfymulti import __version__
from comfymulti.db import transaction
from comfymulti.errors import NotFound
from comfymulti.hub.context import HubContext
from comfymulti.hub.web.access import get_hub
from comfymulti.hub.workspaces.router import workspace_router
from comfymulti.queue import fleet

router = workspace_router()

EXTENSIONS = ["/extensions/comfymulti/queue_eta.js", "/extensions/comfymulti/announcements.js"]


def features(hub: HubContext) -> dict[str, Any]:
    """What this server supports (also the answer to the socket's feature_flags)."""
    return {"supports_preview_metadata": True, "supports_model_type_tags": True,
            "max_upload_size": hub.settings.files.max_upload_bytes,
            "node_replacements": True, "assets": False}


@router.get("/api/features")
def get_features(hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    return features(hub)


@router.get("/api/users")
def get_users() -> dict[str, Any]:
    # Single-user shape: the hub already knows who this is; no user picker in the UI.
    return {"storage": "server", "migrated": True}


@router.get("/api/system_stats")
def system_stats(hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    """The hub as the 'system', every online worker's GPU as a device."""
    with transaction(hub.factory) as s:
        workers = fleet.online_workers(s, hub.online_window)
    version = next((w.comfyui_version for w in workers if w.comfyui_version), "")
    return {
        "system": {"os": platform.system().lower(), "ram_total": 0, "ram_free": 0,
                   "comfyui_version": version, "comfymulti_version": __version__,
                   "required_frontend_version": "", "python_version": platform.python_version(),
                   "pytorch_version": "", "embedded_python": False,
                   "deploy_environment": "comfymulti", "argv": []},
        "devices": [{"name": f"{w.name}: {w.gpu}", "type": "cuda", "index": i,
                     "vram_total": w.vram_total, "vram_free": 0, "torch_vram_total": 0,
                     "torch_vram_free": 0} for i, w in enumerate(workers)],
    }


@router.get("/api/extensions")
def extensions() -> list[str]:
    return EXTENSIONS


@router.get("/api/object_info")
def object_info(request: Request, hub: HubContext = Depends(get_hub)) -> Response:
    """Served from bytes prepared once, gzipped for every client that accepts it."""
    with transaction(hub.factory) as s:
        plain, packed = hub.queue.catalogs.current_object_info_json(s)
    if "gzip" in request.headers.get("accept-encoding", "").lower():
        return Response(packed, media_type="application/json",
                        headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
    return Response(plain, media_type="application/json", headers={"Vary": "Accept-Encoding"})


@router.get("/api/object_info/{class_type}")
def object_info_one(class_type: str, hub: HubContext = Depends(get_hub)
                    ) -> dict[str, Any]:
    with transaction(hub.factory) as s:
        info = hub.queue.catalogs.current(s)["object_info"]
    return {class_type: info[class_type]} if class_type in info else {}


def _models(hub: HubContext) -> dict[str, list[str]]:
    with transaction(hub.factory) as s:
        models = hub.queue.catalogs.current(s).get("models", {})
    return models if isinstance(models, dict) else {}


@router.get("/api/experiment/models")
def model_folders(hub: HubContext = Depends(get_hub)) -> list[dict[str, Any]]:
    return [{"name": folder, "folders": [f"/models/{folder}"]} for folder in _models(hub)]


@router.get("/api/experiment/models/{folder}")
def model_files(folder: str, hub: HubContext = Depends(get_hub)) -> list[dict[str, Any]]:
    models = _models(hub)
    if folder not in models:
        raise NotFound(f"no model folder {folder!r}")
    return [{"name": name, "pathIndex": 0} for name in models[folder]]


@router.get("/api/models")
def legacy_model_folders(hub: HubContext = Depends(get_hub)) -> list[str]:
    return sorted(_models(hub))


@router.get("/api/models/{folder}")
def legacy_model_files(folder: str, hub: HubContext = Depends(get_hub)) -> list[str]:
    models = _models(hub)
    if folder not in models:
        raise NotFound(f"no model folder {folder!r}")
    return list(models[folder])


@router.get("/internal/folder_paths")
def folder_paths(hub: HubContext = Depends(get_hub)) -> dict[str, list[str]]:
    return {folder: [f"/models/{folder}"] for folder in _models(hub)}


@router.get("/api/i18n")
@router.get("/api/global_subgraphs")
@router.get("/api/node_replacements")
@router.get("/api/workflow_templates")
def empty_map() -> dict[str, Any]:
    """Nothing from custom nodes: the workers run core ComfyUI nodes only."""
    return {}


@router.get("/api/global_subgraphs/{subgraph_id}")
def no_subgraph(subgraph_id: str) -> dict[str, Any]:
    raise NotFound(f"no global subgraph {subgraph_id!r}")


@router.get("/templates/index.json")
def template_index() -> list[Any]:
    """ComfyUI's template gallery (a separate package) is not installed: an empty gallery.
    Workshop workflows appear under Workflows/Workshop instead."""
    return []


@router.get("/templates/index_logo.json")
def template_logos() -> dict[str, Any]:
    return {}


@router.get("/api/embeddings")
def embeddings() -> list[str]:
    return []


@router.post("/api/free", response_class=Response)
def free() -> Response:
    """Memory on the GPU machines is the workers' business; accepted and ignored."""
    return Response(status_code=200)
