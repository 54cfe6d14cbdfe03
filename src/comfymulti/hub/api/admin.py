"""/admin/api: the organiser's view and levers (admins only)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from comfymulti.db import transaction
from comfymulti.hub.api.jobs import job_view
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import announcements, dashboard, workers
from comfymulti.hub.services.users import list_users
from comfymulti.hub.web import bodies
from comfymulti.hub.web.access import get_hub, owned_job, require_admin
from comfymulti.hub.web.openapi import request_body
from comfymulti.models import Job, User
from comfymulti.queue import fleet, store
from comfymulti.queue.jobs import Policy

router = APIRouter(prefix="/admin/api", tags=["admin"], dependencies=[Depends(require_admin)])


class PolicyBody(BaseModel):
    policy: Policy


class DispatchBody(BaseModel):
    paused: bool


class AnnouncementBody(BaseModel):
    text: str = Field(min_length=1, max_length=announcements.MAX_CHARS)


@router.get("/dashboard")
async def overview(hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    """Everything the /admin page shows (its socket pushes the same on every change)."""
    return await hub.run(dashboard.snapshot, hub)


@router.get("/queue")
def queue(hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    """Counts by state and the queued jobs in the order they are expected to run."""
    ordered = hub.queue.order()
    etas = hub.queue.etas()
    with transaction(hub.factory) as s:
        names = dict(s.execute(select(User.id, User.name)).all())
        counts = store.counts_by_state(s)
    return {
        "policy": hub.queue.policy,
        "counts": counts,
        "queued": [{"id": c.job_id, "user": names.get(c.user_id), "position": i + 1,
                    "eta_seconds": round(etas[c.job_id][1], 1)}
                   for i, c in enumerate(ordered)],
    }


@router.get("/jobs")
def jobs(state: str | None = None, hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    stmt = select(Job, User.name).join(User).order_by(Job.seq.desc()).limit(1000)
    if state:
        stmt = stmt.where(Job.state.in_(state.split(",")))
    with transaction(hub.factory) as s:
        rows = s.execute(stmt).all()
    return {"jobs": [job_view(job, name) for job, name in rows]}


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, admin: User = Depends(require_admin),
           hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    with transaction(hub.factory) as s:
        job = owned_job(s, admin, job_id)
    return {"outcome": hub.queue.cancel(job, reason=f"cancelled by admin {admin.name}")}


@router.post("/jobs/{job_id}/run-next")
def run_next(job_id: str, admin: User = Depends(require_admin),
             hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    with transaction(hub.factory) as s:
        job = owned_job(s, admin, job_id)
    hub.queue.run_next(job)
    return {"id": job_id, "run_next": True}


@router.get("/policy")
def get_policy(hub: HubContext = Depends(get_hub)) -> dict[str, str]:
    return {"policy": hub.queue.policy}


@router.put("/policy", openapi_extra=request_body(PolicyBody))
async def put_policy(request: Request, hub: HubContext = Depends(get_hub)) -> dict[str, str]:
    body = await bodies.read_model(request, PolicyBody)
    return {"policy": await hub.run(hub.queue.set_policy, body.policy)}


@router.put("/dispatch", openapi_extra=request_body(DispatchBody))
async def put_dispatch(request: Request, hub: HubContext = Depends(get_hub)) -> dict[str, bool]:
    """Pause handing out jobs (running ones go on), or resume."""
    body = await bodies.read_model(request, DispatchBody)
    return {"paused": await hub.run(hub.queue.set_paused, body.paused)}


@router.get("/workers")
def list_all_workers(hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    with transaction(hub.factory) as s:
        rows = workers.list_workers(s)
    now = time.time()
    return {"workers": [
        {"id": w.id, "name": w.name, "gpu": w.gpu, "vram_total": w.vram_total,
         "comfyui_version": w.comfyui_version, "draining": w.draining,
         "online": fleet.is_online(w, hub.online_window, now),
         "state": fleet.state(w, hub.online_window, now), "last_seen": w.last_seen}
        for w in rows]}


@router.post("/workers/{worker_id}/drain")
def drain(worker_id: str, hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    hub.queue.drain(worker_id)
    return {"id": worker_id, "draining": True}


@router.delete("/workers/{worker_id}")
async def forget_worker(worker_id: str, hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    """Remove an offline worker from the list (an online one is refused: 409)."""
    names = await hub.tx(lambda s: workers.forget(s, hub.online_window, worker_id))
    hub.queue.notify.changed()
    return {"forgotten": names}


@router.post("/announcements", openapi_extra=request_body(AnnouncementBody))
async def announce(request: Request, admin: User = Depends(require_admin),
                   hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    """Show a line as a toast in every open workspace."""
    body = await bodies.read_model(request, AnnouncementBody)
    entry = await hub.tx(lambda s: announcements.add(s, body.text, admin.name))
    hub.bus.broadcast(announcements.message(entry))
    hub.queue.notify.changed()
    return entry


@router.get("/users")
def users(hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    with transaction(hub.factory) as s:
        rows = list_users(s)
    return {"users": [{"name": u.name, "role": u.role, "disabled": u.disabled} for u in rows]}
