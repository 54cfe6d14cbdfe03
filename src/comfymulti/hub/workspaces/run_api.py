"""The ComfyUI routes for running things: prompt, queue, interrupt, history and jobs, all
answered from the central queue and scoped to the workspace's owner."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Select, func, select
from sqlalchemy.orm import defer

from comfymulti.catalog.prompt import SUBMISSION_SCHEMA, Submission, parse_submission
from comfymulti.catalog.prompt import workflow_id as workflow_id_of
from comfymulti.catalog.validate import validate
from comfymulti.db import transaction
from comfymulti.errors import ComfyMultiError, InvalidInput
from comfymulti.hub.context import HubContext
from comfymulti.hub.web.access import get_hub, workspace_jobs, workspace_owner
from comfymulti.hub.web.bodies import read_json, read_object
from comfymulti.hub.web.errors import comfy_error, comfy_message
from comfymulti.hub.web.openapi import request_body
from comfymulti.hub.workspaces.comfy_jobs import (
    STATES_FOR,
    history_entry,
    job_object,
    queue_item,
    status_object,
)
from comfymulti.hub.workspaces.router import workspace_router
from comfymulti.models import Job, JobEvent, User
from comfymulti.queue.jobs import HELD, TERMINAL, CancelOutcome, JobState
from comfymulti.queue.service import ETA_TTL
from comfymulti.userfiles import resolve

router = workspace_router()
# A job list without queued jobs changes only when the user's version does; it is still
# recomputed this often, which bounds what a change made outside this hub could leave stale.
REUSE_SECONDS = 30.0

# The largest number SQLite binds (LIMIT, OFFSET); a larger one is refused as invalid input.
_SQL_INT_MAX = 2**63 - 1
_PROMPT_IDS: dict[str, Any] = {"type": "array", "items": {"type": ["string", "integer"]}}
# Queue and history edits: delete some entries, or clear them all.
_EDIT = request_body({"type": "object", "properties": {"delete": _PROMPT_IDS,
                                                       "clear": {"type": "boolean"}}})

def _output_nodes(hub: HubContext) -> Callable[[Job], list[str]]:
    """A function giving a job's output node ids; reads the catalog once per request."""
    with transaction(hub.factory) as s:
        info = hub.queue.catalogs.current(s)["object_info"]

    def of(job: Job) -> list[str]:
        return [n for n, node in json.loads(job.prompt).items()
                if info.get(node.get("class_type"), {}).get("output_node")]

    return of


@router.post("/api/prompt", openapi_extra=request_body(SUBMISSION_SCHEMA))
async def post_prompt(request: Request, me: User = Depends(workspace_owner),
                      hub: HubContext = Depends(get_hub)) -> Response:
    sub = parse_submission(await read_json(request, hub.settings.queue.max_prompt_bytes))
    checked = await hub.run(_check, hub, me, sub)
    if isinstance(checked, Response):
        return checked
    job = await hub.queue.submit(me, sub)
    return JSONResponse({"prompt_id": job.id, "number": job.seq, "node_errors": checked})


def _check(hub: HubContext, me: User, sub: Submission) -> dict[str, Any] | Response:
    """Validate against the workers' catalog as ComfyUI would (in a thread): the node
    errors that do not stop the prompt, or the error answer that does."""
    with transaction(hub.factory) as s:
        object_info = hub.queue.catalogs.current(s)["object_info"]
    if not object_info:
        return {}
    verdict = validate(sub.prompt, object_info, lambda name: _has_input(hub, me, name))
    if verdict.error is not None:
        return comfy_error(InvalidInput(verdict.error["message"]), verdict.node_errors,
                           error=verdict.error)
    return verdict.node_errors


def _has_input(hub: HubContext, me: User, name: str) -> bool:
    name = name.removesuffix(" [input]")
    try:
        return resolve(hub.settings.data_dir, me.name, "input", "", name).is_file()
    except ComfyMultiError:
        return False


@router.get("/api/prompt")
def get_prompt(me: User = Depends(workspace_owner), hub: HubContext = Depends(get_hub)
               ) -> dict[str, Any]:
    return {"exec_info": {"queue_remaining": hub.queue.remaining(me.id)}}


@router.get("/api/queue")
def get_queue(me: User = Depends(workspace_owner), hub: HubContext = Depends(get_hub)
              ) -> dict[str, Any]:
    with transaction(hub.factory) as s:
        jobs = s.scalars(workspace_jobs(me).where(
            Job.state.in_([str(x) for x in (JobState.QUEUED, *HELD)])).order_by(Job.seq)).all()
    running = [j for j in jobs if j.state == JobState.RUNNING]
    pending = [j for j in jobs if j.state != JobState.RUNNING]
    outputs_of = _output_nodes(hub)
    return {"queue_running": [queue_item(j, outputs_of(j)) for j in running],
            "queue_pending": [queue_item(j, outputs_of(j)) for j in pending]}


@router.post("/api/queue", response_class=Response, openapi_extra=_EDIT)
async def post_queue(request: Request, me: User = Depends(workspace_owner),
                     hub: HubContext = Depends(get_hub)) -> Response:
    body = await read_object(request)
    ids = _ids(body, "delete")
    stmt = workspace_jobs(me).where(Job.state.in_([str(x) for x in
                                                   (JobState.QUEUED, JobState.LEASED)]))
    if not body.get("clear"):
        stmt = stmt.where(Job.id.in_(ids or []))
    await hub.run(_cancel_all, hub, stmt, f"removed from queue by {me.name}")
    return Response(status_code=200)


def _cancel_all(hub: HubContext, stmt: Select[tuple[Job]], reason: str) -> list[CancelOutcome]:
    """Cancel every job `stmt` selects (a query already scoped to the workspace's owner)."""
    with transaction(hub.factory) as s:
        targets = list(s.scalars(stmt))
    return [hub.queue.cancel(job, reason=reason) for job in targets]


@router.post("/api/interrupt", response_class=Response, openapi_extra=request_body(
    {"type": "object", "properties": {"prompt_id": {"type": "string"}}}, required=False))
async def interrupt(request: Request, me: User = Depends(workspace_owner),
                    hub: HubContext = Depends(get_hub)) -> Response:
    """With a prompt_id: stop that job if it runs; without: stop this user's running jobs.
    Never anyone else's."""
    body = await read_object(request, empty_ok=True)
    prompt_id = body.get("prompt_id")
    stmt = workspace_jobs(me).where(Job.state == str(JobState.RUNNING))
    if prompt_id:
        stmt = stmt.where(Job.id == str(prompt_id))
    await hub.run(_cancel_all, hub, stmt, f"interrupted by {me.name}")
    return Response(status_code=200)


def _events(s: Any, job_ids: list[str]) -> dict[str, list[JobEvent]]:
    grouped: dict[str, list[JobEvent]] = {}
    if job_ids:
        for ev in s.scalars(select(JobEvent).where(JobEvent.job_id.in_(job_ids))
                            .order_by(JobEvent.id)):
            grouped.setdefault(ev.job_id, []).append(ev)
    return grouped


@router.get("/api/history")
def get_history(max_items: int | None = Query(None, ge=0, le=_SQL_INT_MAX),
                offset: int = Query(0, ge=0, le=_SQL_INT_MAX),
                me: User = Depends(workspace_owner), hub: HubContext = Depends(get_hub)
                ) -> dict[str, Any]:
    with transaction(hub.factory) as s:
        stmt = workspace_jobs(me).where(Job.state.in_([str(t) for t in TERMINAL]))
        if max_items is not None and offset == 0:
            jobs = list(reversed(s.scalars(stmt.order_by(Job.seq.desc()).limit(max_items)).all()))
        else:
            stmt = stmt.order_by(Job.seq).offset(offset)
            jobs = list(s.scalars(stmt.limit(max_items) if max_items is not None else stmt))
        events = _events(s, [j.id for j in jobs])
    outputs_of = _output_nodes(hub)
    return {j.id: history_entry(j, events.get(j.id, []), outputs_of(j)) for j in jobs}


@router.get("/api/history/{prompt_id}")
def get_history_one(prompt_id: str, me: User = Depends(workspace_owner),
                    hub: HubContext = Depends(get_hub)) -> dict[str, Any]:
    with transaction(hub.factory) as s:
        job = s.scalar(workspace_jobs(me).where(Job.id == prompt_id))
        if job is None or job.state not in TERMINAL:
            return {}
        events = _events(s, [job.id])
    return {job.id: history_entry(job, events.get(job.id, []), _output_nodes(hub)(job))}


@router.post("/api/history", response_class=Response, openapi_extra=_EDIT)
async def post_history(request: Request, me: User = Depends(workspace_owner),
                       hub: HubContext = Depends(get_hub)) -> Response:
    """Delete finished entries from this user's history (their files stay)."""
    body = await read_object(request)
    ids = _ids(body, "delete")
    await hub.run(hub.queue.forget, me, None if body.get("clear") else ids or [])
    return Response(status_code=200)


def _ids(body: dict[str, Any], key: str) -> list[str] | None:
    """A list of prompt ids in the body under `key` (None if absent)."""
    ids = body.get(key)
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
        raise InvalidInput(f"{key} must be a list of prompt ids")
    return [str(i) for i in ids]


def _etas(hub: HubContext, me: User, jobs: list[Job]) -> dict[str, tuple[int, float]]:
    """Position and ETA of these of the user's jobs that are queued (positions count
    everyone's jobs)."""
    queued = [j.id for j in jobs if j.state == JobState.QUEUED]
    return hub.queue.etas(user_id=me.id, wanted=queued) if queued else {}


@router.get("/api/jobs")
async def list_jobs(status: str | None = None, limit: int | None = Query(None),
                    offset: int = Query(0), sort_by: str = "created_at",
                    sort_order: str = "desc", workflow_id: str | None = None,
                    me: User = Depends(workspace_owner), hub: HubContext = Depends(get_hub)
                    ) -> Response:
    """Every open workspace polls this every few seconds: an answer still current is sent
    from the loop at once; only a changed list is read again, in a database thread."""
    wanted = status.split(",") if status else list(STATES_FOR)
    if not set(wanted) <= set(STATES_FOR):
        return comfy_message(f"invalid status: {status}", 400)
    if sort_by not in ("created_at", "execution_duration") or sort_order not in ("asc", "desc"):
        return comfy_message("invalid sort", 400)
    if (limit is not None and limit < 1) or offset < 0:
        return comfy_message("invalid limit or offset", 400)
    key = (me.id, status, limit, offset, sort_by, sort_order, workflow_id)
    version = hub.queue.notify.user_versions[me.id]
    if (body := hub.job_lists.get(key, version)) is None:
        page = hub.job_pages.get(key, version)
        if page is not None:
            if (body := _with_etas(hub, page)) is None:  # positions moved: compute them
                body = await hub.polls(_with_etas, hub, page, True)
        else:
            states = [str(st) for w in wanted for st in STATES_FOR[w]]
            body, page = await hub.polls(_job_list, hub, me, states, workflow_id, sort_by,
                                         sort_order, offset, limit)
            if page is not None:
                hub.job_pages.put(key, version, page, REUSE_SECONDS)
        hub.job_lists.put(key, version, body, ETA_TTL if page is not None else REUSE_SECONDS)
    return Response(body, media_type="application/json")


@dataclass(frozen=True)
class JobPage:
    """A job list without positions and ETAs, and the ids of its queued jobs: while a queue
    drains positions move every few seconds, the user's jobs do not."""
    jobs: list[dict[str, Any]]
    pagination: dict[str, Any]
    queued: frozenset[str]


def _job_list(hub: HubContext, me: User, states: list[str], workflow_id: str | None,
              sort_by: str, sort_order: str, offset: int, limit: int | None
              ) -> tuple[bytes, JobPage | None]:
    """The /api/jobs answer, and when it shows queued jobs, its JobPage (for `_with_etas`).
    Blocking: in a thread."""
    jobs, total = _jobs_page(hub, me, states, workflow_id, sort_by, sort_order, offset, limit)
    pagination = {"offset": offset, "limit": limit if limit is not None else total,
                  "total": total, "has_more": offset + len(jobs) < total}
    bare = [job_object(j) for j in jobs]
    queued = frozenset(j.id for j in jobs if j.state == JobState.QUEUED)
    body = {"jobs": _placed(bare, _etas(hub, me, jobs)), "pagination": pagination}
    return JSONResponse(body).body, JobPage(bare, pagination, queued) if queued else None


def _placed(jobs: list[dict[str, Any]], etas: dict[str, tuple[int, float]]
            ) -> list[dict[str, Any]]:
    """Job list entries with the queue positions and ETAs of those waiting (new dicts: the
    entries may be a kept page's, shared between polls)."""
    return [{**obj, "queue_position": eta[0], "eta_seconds": round(eta[1], 1)}
            if (eta := etas.get(obj["id"])) is not None else obj for obj in jobs]


def _with_etas(hub: HubContext, page: JobPage, compute: bool = False) -> bytes | None:
    """A job list read before, with the current positions and ETAs of its queued jobs, from
    the shared computation; when that is out of date, None, or with `compute` it is done
    again (database work: then in a thread). The kept page is shared: never changed."""
    etas = hub.queue.etas(wanted=page.queued) if compute else hub.queue.cached_etas(
        page.queued)
    if etas is None:
        return None
    return JSONResponse({"jobs": _placed(page.jobs, etas), "pagination": page.pagination}).body


def _jobs_page(hub: HubContext, me: User, states: list[str], workflow_id: str | None,
               sort_by: str, sort_order: str, offset: int, limit: int | None
               ) -> tuple[list[Job], int]:
    """One page of the user's jobs, sorted and cut by the database (every open workspace
    polls this; loading all of a busy user's jobs per poll would not scale)."""
    stmt = workspace_jobs(me).where(Job.state.in_(states)).options(defer(Job.prompt))
    key = Job.seq if sort_by == "created_at" else (
        func.coalesce(Job.finished_at, 0) - func.coalesce(Job.started_at, Job.finished_at, 0))
    stmt = stmt.order_by(key.desc() if sort_order == "desc" else key.asc(),
                         Job.seq.desc() if sort_order == "desc" else Job.seq.asc())
    with transaction(hub.factory) as s:
        if workflow_id:  # the workflow id lives inside extra_data: filtered here (rare)
            jobs = [j for j in s.scalars(stmt)
                    if workflow_id_of(json.loads(j.extra_data)) == workflow_id]
            return (jobs[offset:offset + limit] if limit is not None else jobs[offset:],
                    len(jobs))
        total = s.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
        return list(s.scalars(stmt.offset(offset).limit(limit))), total or 0


@router.get("/api/jobs/{job_id}")
def get_job(job_id: str, me: User = Depends(workspace_owner),
            hub: HubContext = Depends(get_hub)) -> Response:
    with transaction(hub.factory) as s:
        job = s.scalar(workspace_jobs(me).where(Job.id == job_id))
        if job is None:
            return comfy_message("Job not found", 404)
        events = _events(s, [job.id]).get(job.id, [])
    etas = _etas(hub, me, [job])
    obj = job_object(job, *etas.get(job.id, (None, None)))
    obj["outputs"] = json.loads(job.outputs)
    obj["execution_status"] = status_object(job, events)
    obj["workflow"] = {"prompt": json.loads(job.prompt), "extra_data": json.loads(job.extra_data)}
    return JSONResponse(obj)


@router.post("/api/jobs/{job_id}/cancel")
def cancel_job(job_id: str, me: User = Depends(workspace_owner),
               hub: HubContext = Depends(get_hub)) -> dict[str, bool]:
    with transaction(hub.factory) as s:
        job = s.scalar(workspace_jobs(me).where(Job.id == job_id))
    if job is None:
        return {"cancelled": False}
    outcome = hub.queue.cancel(job, reason=f"cancelled by {me.name}")
    return {"cancelled": outcome != CancelOutcome.FINAL}


@router.post("/api/jobs/cancel", openapi_extra=request_body(
    {"type": "object", "required": ["job_ids"], "properties": {"job_ids": _PROMPT_IDS}}))
async def cancel_jobs(request: Request, me: User = Depends(workspace_owner),
                      hub: HubContext = Depends(get_hub)) -> Response:
    ids = _ids(await read_object(request), "job_ids")
    if ids is None:
        raise InvalidInput("job_ids must be a list")
    outcomes = await hub.run(_cancel_all, hub, workspace_jobs(me).where(Job.id.in_(ids)),
                             f"cancelled by {me.name}")
    return JSONResponse({"cancelled": any(o != CancelOutcome.FINAL for o in outcomes)})
