"""/api/v1: the hub's own JSON API for scripts and tests (the ComfyUI-compatible API of the
workspaces is built on the same JobQueue, not on calls to this)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from comfymulti.catalog.prompt import SUBMISSION_SCHEMA, parse_submission
from comfymulti.db import transaction
from comfymulti.errors import InvalidInput
from comfymulti.hub.context import HubContext
from comfymulti.hub.web.access import current_user, get_hub, owned_job, visible_jobs
from comfymulti.hub.web.bodies import read_json
from comfymulti.hub.web.openapi import request_body
from comfymulti.models import Job, JobEvent, User
from comfymulti.queue.jobs import JobState

router = APIRouter(prefix="/api/v1", tags=["jobs"], dependencies=[Depends(current_user)])


def job_view(job: Job, user_name: str | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": job.id, "number": job.seq, "state": job.state, "priority": job.priority,
        "attempts": job.attempts, "created_at": job.created_at, "leased_at": job.leased_at,
        "started_at": job.started_at, "finished_at": job.finished_at,
        "worker_id": job.worker_id, "cancel_requested": job.cancel_requested,
        "error": json.loads(job.error) if job.error else None,
        "outputs": json.loads(job.outputs),
    }
    if user_name is not None:
        view["user"] = user_name
    return view


@router.post("/jobs", status_code=201, openapi_extra=request_body(SUBMISSION_SCHEMA))
async def submit(request: Request, user: User = Depends(current_user),
                 hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    """Body: {"prompt": {...API format...}, "extra_data"?, "client_id"?, "prompt_id"?}."""
    body = await read_json(request, hub.settings.queue.max_prompt_bytes)
    if not isinstance(body, dict) or "prompt" not in body:
        raise InvalidInput('body must be an object with a "prompt"')
    job = await hub.queue.submit(user, parse_submission(body))
    return job_view(job)


@router.get("/jobs")
def list_jobs(state: str | None = None, limit: int = Query(100, ge=1, le=1000),
              user: User = Depends(current_user),
              hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    stmt = visible_jobs(user).order_by(Job.seq.desc()).limit(limit)
    if state:
        states = state.split(",")
        if not set(states) <= {str(s) for s in JobState}:
            raise InvalidInput(f"unknown state in {state!r}")
        stmt = stmt.where(Job.state.in_(states))
    with transaction(hub.factory) as s:
        jobs = list(s.scalars(stmt))
    return {"jobs": [job_view(j) for j in jobs]}


@router.get("/jobs/{job_id}")
def get_job(job_id: str, user: User = Depends(current_user),
            hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    with transaction(hub.factory) as s:
        job = owned_job(s, user, job_id)
    return job_view(job)


@router.get("/jobs/{job_id}/events")
def job_events(job_id: str, user: User = Depends(current_user),
               hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    """The job's history: hub state changes and the ComfyUI events workers relayed, in order."""
    with transaction(hub.factory) as s:
        owned_job(s, user, job_id)
        rows = s.scalars(select(JobEvent).where(JobEvent.job_id == job_id)
                         .order_by(JobEvent.id)).all()
    return {"events": [{"attempt": r.attempt, "seq": r.seq, "type": r.type,
                        "data": json.loads(r.data), "at": r.created_at} for r in rows]}


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, user: User = Depends(current_user),
           hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    with transaction(hub.factory) as s:
        job = owned_job(s, user, job_id)
    return {"outcome": hub.queue.cancel(job, reason=f"cancelled by {user.name}")}
