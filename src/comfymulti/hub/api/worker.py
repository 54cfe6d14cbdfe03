"""/worker/v1: the routes GPU workers call (outbound from the worker, token-authenticated).

Credentials are checked by each route's dependency before its body is read; bodies are read
with `bodies`, so each has a cap. Database work runs on the workers' own threads (`hub.work`);
their reports (renewals, events, outputs, completions) are written in groups by the queue."""

from __future__ import annotations

import asyncio
import contextlib
import json

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse

from comfymulti.catalog.codec import unpack
from comfymulti.catalog.prompt import references_file
from comfymulti.errors import InvalidInput, NotFound
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import workers
from comfymulti.hub.web import bodies
from comfymulti.hub.web.access import current_worker, get_hub, worker_token
from comfymulti.hub.web.openapi import BINARY, request_body
from comfymulti.models import Job, User, WorkerToken
from comfymulti.protocol import (
    PREFIX,
    Commands,
    CompleteRequest,
    EventsRequest,
    EventsResponse,
    JobStateResponse,
    LeasedJob,
    LeaseRef,
    RegisterRequest,
    RegisterResponse,
    RenewRequest,
    RenewResponse,
    StoredFile,
)
from comfymulti.userfiles import resolve

# Every route needs a worker token; all but /register also a registered worker.
router = APIRouter(prefix=PREFIX, tags=["worker"], dependencies=[Depends(worker_token)])

_CATALOG_LIMIT = 16 * 1024 * 1024  # gzip; unpacked size is capped by the codec
_PREVIEW_LIMIT = 8 * 1024 * 1024
_EVENTS_LIMIT = 16 * 1024 * 1024  # up to 1000 events, some with large outputs lists or
# output frame parts (the worker puts at most 8 MiB of those in one batch)


async def _held(hub: HubContext, worker_id: str, job_id: str, lease_id: str) -> Job:
    return await hub.work(hub.queue.held, job_id, lease_id, worker_id)


@router.post("/register", response_model=RegisterResponse,
             openapi_extra=request_body(RegisterRequest))
async def register(request: Request, token: WorkerToken = Depends(worker_token),
                   hub: HubContext = Depends(get_hub)) -> RegisterResponse:
    req = await bodies.read_model(request, RegisterRequest)
    worker, needed = await hub.tx(lambda s: workers.register(
        s, token, req, cap=hub.settings.queue.max_workers_per_token, window=hub.online_window),
        hub.work)
    hub.queue.notify.wake_workers()
    q = hub.settings.queue
    return RegisterResponse(worker_id=worker.id, catalog_needed=needed,
                            lease_seconds=q.lease_seconds, long_poll_seconds=q.long_poll_seconds)


@router.put("/catalog/{catalog_hash}", status_code=204,
            openapi_extra=request_body(BINARY, "application/gzip"))
async def upload_catalog(catalog_hash: str, request: Request,
                         worker_id: str = Depends(current_worker),
                         token: WorkerToken = Depends(worker_token),
                         hub: HubContext = Depends(get_hub)) -> Response:
    """Body: the catalog as gzip-compressed JSON."""
    body = await bodies.read_body(request, _CATALOG_LIMIT, "catalog")
    catalog = await hub.work(unpack, body)
    await hub.tx(lambda s: workers.store_catalog(s, workers.get_worker(s, token, worker_id),
                                                 catalog_hash, catalog), hub.work)
    hub.queue.notify.wake_workers()
    return Response(status_code=204)


@router.post("/lease", response_model=LeasedJob,
             responses={204: {"description": "no work within the wait"}})
async def lease(wait: float = Query(0.0, ge=0, le=3600),
                worker_id: str = Depends(current_worker),
                hub: HubContext = Depends(get_hub)) -> LeasedJob | Response:
    wait = min(wait, hub.settings.queue.long_poll_seconds)
    job = await hub.queue.lease(worker_id, wait)
    if job is None:
        return Response(status_code=204)
    return LeasedJob(job_id=job.id, lease_id=job.lease_id or "", attempt=job.attempts,
                     lease_seconds=hub.settings.queue.lease_seconds,
                     prompt=json.loads(job.prompt), extra_data=json.loads(job.extra_data))


@router.post("/renew", response_model=RenewResponse, openapi_extra=request_body(RenewRequest))
async def renew(request: Request, worker_id: str = Depends(current_worker),
                hub: HubContext = Depends(get_hub)) -> RenewResponse:
    req = await bodies.read_model(request, RenewRequest)
    lost, cancel = await hub.queue.renew(worker_id, req.leases)
    return RenewResponse(lost=lost, cancel=cancel)


@router.get("/commands", response_model=Commands)
async def commands(wait: float = Query(0.0, ge=0, le=3600), known: str = "",
                   worker_id: str = Depends(current_worker),
                   hub: HubContext = Depends(get_hub)) -> Commands:
    """Long-poll: answers at once if the commands differ from `known` (their JSON), else
    when a cancel or drain for this worker happens or the hub stops, else after `wait`."""
    wait = min(wait, hub.settings.queue.long_poll_seconds)
    signal = hub.queue.notify.worker_signal(worker_id)
    current = await hub.work(hub.queue.commands, worker_id)
    if json.dumps(current, sort_keys=True) == known and wait > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(signal.wait(), wait)
        current = await hub.work(hub.queue.commands, worker_id)
    return Commands(**current)


@router.post("/drain", status_code=204)
async def drain(worker_id: str = Depends(current_worker),
                hub: HubContext = Depends(get_hub)) -> Response:
    await hub.work(hub.queue.drain, worker_id)
    return Response(status_code=204)


@router.post("/jobs/{job_id}/events", response_model=EventsResponse,
             openapi_extra=request_body(EventsRequest))
async def events(job_id: str, request: Request, worker_id: str = Depends(current_worker),
                 hub: HubContext = Depends(get_hub)) -> EventsResponse:
    req = await bodies.read_model(request, EventsRequest, _EVENTS_LIMIT)
    job = await hub.queue.record_events(job_id, req.lease_id,
                                        [e.model_dump() for e in req.events], worker_id)
    return EventsResponse(cancel=job.cancel_requested)


@router.post("/jobs/{job_id}/preview", status_code=204,
             openapi_extra=request_body(BINARY, "application/octet-stream"))
async def preview(job_id: str, request: Request, lease_id: str = Query(..., max_length=64),
                  node: str = Query("", max_length=64),
                  worker_id: str = Depends(current_worker),
                  hub: HubContext = Depends(get_hub)) -> Response:
    """A binary preview frame (ComfyUI's WebSocket bytes), passed on live, not stored."""
    job = await _held(hub, worker_id, job_id, lease_id)
    frame = await bodies.read_body(request, _PREVIEW_LIMIT, "preview")
    if node and hub.queue.executing(job_id) not in (None, node):
        return Response(status_code=204)  # stale: ComfyUI has moved on to another node
    hub.bus.publish(job.user_id, {"job_id": job_id, "client_id": job.client_id,
                                  "type": "binary", "data": frame})
    return Response(status_code=204)


@router.get("/jobs/{job_id}/inputs", response_class=FileResponse)
async def input_file(job_id: str, lease_id: str, filename: str, subfolder: str = "",
                     type: str = "input", worker_id: str = Depends(current_worker),
                     hub: HubContext = Depends(get_hub)) -> FileResponse:
    """A file of the job owner's (input/output/temp), only while the lease is held."""
    job = await _held(hub, worker_id, job_id, lease_id)
    if type not in ("input", "output", "temp"):
        raise InvalidInput("type must be input, output or temp")
    if not references_file(json.loads(job.prompt), subfolder, filename):
        raise NotFound("the job's prompt does not load that file")
    owner = await hub.tx(lambda s: s.get(User, job.user_id), hub.work)
    if owner is None:
        raise NotFound(f"job {job_id} has no owner any more")
    path = resolve(hub.settings.data_dir, owner.name, type, subfolder, filename)
    if not path.is_file():
        raise NotFound(f"{type} file {subfolder + '/' if subfolder else ''}{filename} not found")
    return FileResponse(path)


@router.put("/jobs/{job_id}/outputs", response_model=StoredFile,
            openapi_extra=request_body(BINARY, "application/octet-stream"))
async def upload_output(job_id: str, request: Request, lease_id: str, key: str, node_id: str,
                        filename: str, subfolder: str = "", type: str = "output",
                        worker_id: str = Depends(current_worker),
                        hub: HubContext = Depends(get_hub)) -> StoredFile:
    """Stream one output file to disk (never whole in memory), then file it for the owner.
    A retry of an upload already stored answers at once, without reading the body again."""
    target, done = await hub.work(hub.queue.prepare_output, job_id, lease_id, worker_id, key,
                                 type, subfolder, filename)
    if done is None:
        received = await bodies.receive_file(request, hub.settings.files.max_output_bytes,
                                             hub.settings.data_dir, "upload", "output")
        try:
            done = await hub.queue.store_output(job_id, lease_id, key, node_id, target,
                                                received.path, received.size, received.sha256)
        finally:
            received.path.unlink(missing_ok=True)
    return StoredFile(filename=done.filename, subfolder=done.subfolder, type=done.type)


@router.post("/jobs/{job_id}/complete", response_model=JobStateResponse,
             openapi_extra=request_body(CompleteRequest))
async def complete(job_id: str, request: Request, worker_id: str = Depends(current_worker),
                   hub: HubContext = Depends(get_hub)) -> JobStateResponse:
    req = await bodies.read_model(request, CompleteRequest, _EVENTS_LIMIT)
    job = await hub.queue.complete(job_id, req.lease_id, req.status, req.error, worker_id,
                                   [e.model_dump() for e in req.events])
    return JobStateResponse(job_id=job.id, state=job.state)


@router.post("/jobs/{job_id}/release", response_model=JobStateResponse,
             openapi_extra=request_body(LeaseRef))
async def release(job_id: str, request: Request, worker_id: str = Depends(current_worker),
                  hub: HubContext = Depends(get_hub)) -> JobStateResponse:
    req = await bodies.read_model(request, LeaseRef)
    job = await hub.queue.release(job_id, req.lease_id, worker_id)
    return JobStateResponse(job_id=job.id, state=job.state)
