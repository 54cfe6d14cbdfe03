"""JobQueue: submit, cancel, run next, lease, renew, complete. The entry point for the hub's
routes and the CLI alike; nothing else decides what happens to a job.

DB work happens in short transactions on the event-loop thread: with SQLite there is one writer
anyway, and keeping it on one thread means no lock contention between requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from comfymulti.config import Policy, QueueSettings
from comfymulti.db import transaction
from comfymulti.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from comfymulti.hub.catalog import (
    CatalogIndex,
    check_prompt_shape,
    merge_catalogs,
    requirements,
    requirements_key,
    unpack,
)
from comfymulti.hub.events import EventBus
from comfymulti.hub.files import free_name, resolve
from comfymulti.metrics import Metrics
from comfymulti.models import Catalog, Job, Output, User, Worker
from comfymulti.queue import scheduler, store
from comfymulti.queue.eta import Estimator, queue_etas
from comfymulti.queue.jobs import HELD, ROLE_PRIORITY, TERMINAL, JobState, Role

log = logging.getLogger("comfymulti.queue")

# What a worker's terminal report becomes.
_FINISH = {
    "success": JobState.SUCCEEDED,
    "error": JobState.FAILED,
    "interrupted": JobState.CANCELLED,
}


class JobQueue:
    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: QueueSettings,
        data_dir: Path,
        bus: EventBus,
        metrics: Metrics,
        catalogs: CatalogCache,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.data_dir = data_dir
        self.bus = bus
        self.metrics = metrics
        self.catalogs = catalogs
        self._work = asyncio.Event()
        self._worker_signals: dict[str, asyncio.Event] = {}

    # --- notifications ---------------------------------------------------------------------

    def wake_workers(self) -> None:
        """Wake every long-polling lease request: there may be work for it now."""
        self._work.set()
        self._work = asyncio.Event()

    def notify_user(self, user_id: int) -> None:
        """Tell the user's sockets their queue changed (they answer with a `status`)."""
        self.bus.publish(user_id, {"type": "queue_changed"})

    def worker_signal(self, worker_id: str) -> asyncio.Event:
        return self._worker_signals.setdefault(worker_id, asyncio.Event())

    def signal_worker(self, worker_id: str | None) -> None:
        if worker_id and (event := self._worker_signals.pop(worker_id, None)):
            event.set()

    # --- policy ----------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        with transaction(self.factory) as s:
            value = store.get_state(s, "policy")
        return value or self.settings.policy  # type: ignore[return-value]

    def set_policy(self, policy: Policy) -> None:
        if policy not in ("fifo", "fair", "priority"):
            raise InvalidInput(f"unknown policy {policy!r}; use fifo, fair or priority")
        with transaction(self.factory) as s:
            store.set_state(s, "policy", policy)
        log.info("scheduling policy is now %s", policy, extra={"action": "set_policy"})
        self.wake_workers()

    # --- users' actions --------------------------------------------------------------------

    def submit(
        self,
        user: User,
        prompt: Any,
        *,
        extra_data: dict[str, Any] | None = None,
        client_id: str = "",
        priority: int | None = None,
        job_id: str | None = None,
    ) -> Job:
        prompt = check_prompt_shape(prompt)
        if extra_data is not None and not isinstance(extra_data, dict):
            raise InvalidInput("extra_data must be an object")
        if job_id is not None:
            try:
                job_id = str(uuid.UUID(job_id))
            except ValueError:
                raise InvalidInput("prompt_id must be a UUID") from None
        role = Role(user.role)
        req = requirements_key(requirements(prompt))
        now = time.time()
        with transaction(self.factory) as s:
            if store.count_queued(s) >= self.settings.max_queued_total:
                raise QuotaExceeded(
                    f"the hub's queue is full ({self.settings.max_queued_total} jobs); "
                    "try again when some have run"
                )
            if role == Role.PARTICIPANT and (
                store.count_queued(s, user.id) >= self.settings.max_queued_per_user
            ):
                raise QuotaExceeded(
                    f"you already have {self.settings.max_queued_per_user} jobs waiting; "
                    "wait for one to start or cancel one"
                )
            if job_id and s.scalar(select(Job.seq).where(Job.id == job_id)) is not None:
                raise Conflict(f"a job with id {job_id} exists already")
            job = store.insert_job(
                s, job_id=job_id or str(uuid.uuid4()), user=user, prompt=prompt,
                extra_data=extra_data or {}, client_id=client_id,
                priority=ROLE_PRIORITY[role] if priority is None else priority,
                instructor=role == Role.INSTRUCTOR, requirements=req, now=now,
            )
        self.metrics.jobs_submitted.inc()
        self.wake_workers()
        self.notify_user(user.id)
        return job

    def cancel(self, job: Job, reason: str) -> str:
        """Cancel a job; for a running one the worker is told and ComfyUI interrupted."""
        with transaction(self.factory) as s:
            current = s.scalars(select(Job).where(Job.id == job.id)).one()
            outcome = store.cancel(s, current, time.time(), reason)
            worker_id = current.worker_id
        if outcome == "requested":
            self.signal_worker(worker_id)
        self.notify_user(job.user_id)
        return outcome

    def run_next(self, job: Job) -> None:
        with transaction(self.factory) as s:
            store.set_run_next(s, s.scalars(select(Job).where(Job.id == job.id)).one(),
                               time.time())
        self.wake_workers()

    def order(self) -> list[scheduler.Candidate]:
        """The whole queue in the order it is expected to run."""
        with transaction(self.factory) as s:
            candidates = store.queued_candidates(s)
            last = store.last_dispatch(s)
            policy = store.get_state(s, "policy") or self.settings.policy
        return scheduler.order(policy, candidates, last)  # type: ignore[arg-type]

    def etas(self, online_window: float, user_id: int | None = None
             ) -> dict[str, tuple[int, float]]:
        """job id → (queue position, seconds until done) for queued jobs (of one user)."""
        order = self.order()
        now = time.time()
        with transaction(self.factory) as s:
            estimator = Estimator(s)
            online = s.scalar(select(func.count()).select_from(Worker).where(
                Worker.last_seen >= now - online_window)) or 0
            busy = sum(max(0.0, estimator.seconds(j.requirements) - (now - (j.started_at or now)))
                       for j in s.scalars(select(Job).where(Job.state.in_([str(x) for x in HELD]))))
        etas = queue_etas(order, estimator, online, busy)
        if user_id is None:
            return etas
        mine = {c.job_id for c in order if c.user_id == user_id}
        return {job_id: value for job_id, value in etas.items() if job_id in mine}

    # --- workers ---------------------------------------------------------------------------

    def _try_lease(self, worker_id: str) -> Job | None:
        now = time.time()
        with transaction(self.factory) as s:
            worker = s.get(Worker, worker_id)
            if worker is None or worker.draining:
                return None
            index = self.catalogs.index(s, worker.catalog_hash)
            if index is None:
                return None
            policy = store.get_state(s, "policy") or self.settings.policy
            candidate = scheduler.pick(
                policy,  # type: ignore[arg-type]
                store.queued_candidates(s),
                store.last_dispatch(s),
                lambda req: index.can_run(json.loads(req)),
            )
            if candidate is None:
                return None
            job = store.lease(
                s, candidate, worker_id=worker_id, lease_id=str(uuid.uuid4()),
                expires_at=now + self.settings.lease_seconds, now=now,
            )
        self.metrics.dispatched.labels(policy=policy).inc()
        if job.attempts == 1:
            self.metrics.wait_seconds.observe(now - job.created_at)
        self.notify_user(job.user_id)
        return job

    async def lease(self, worker_id: str, wait: float) -> Job | None:
        """A job for this worker, waiting up to `wait` seconds for one to arrive."""
        deadline = time.monotonic() + wait
        while True:
            work = self._work
            job = self._try_lease(worker_id)
            if job is not None or (remaining := deadline - time.monotonic()) <= 0:
                return job
            if self._draining(worker_id):  # answer a draining worker's long-poll at once
                return None
            try:
                await asyncio.wait_for(work.wait(), remaining)
            except TimeoutError:
                return self._try_lease(worker_id)

    def _draining(self, worker_id: str) -> bool:
        with transaction(self.factory) as s:
            worker = s.get(Worker, worker_id)
            return worker is None or worker.draining

    def renew(self, worker_id: str, leases: dict[str, str]) -> tuple[list[str], list[str]]:
        """Extend this worker's leases: (jobs whose lease is lost, jobs to cancel)."""
        lost, cancel = [], []
        until = time.time() + self.settings.lease_seconds
        with transaction(self.factory) as s:
            for job_id, lease_id in leases.items():
                try:
                    job = store.renew(s, job_id, lease_id, until)
                except Conflict:
                    lost.append(job_id)
                    continue
                if job.worker_id != worker_id:
                    lost.append(job_id)
                elif job.cancel_requested:
                    cancel.append(job_id)
        return lost, cancel

    def held(self, job_id: str, lease_id: str, worker_id: str | None = None) -> Job:
        with transaction(self.factory) as s:
            return store.held_job(s, job_id, lease_id, worker_id)

    def record_events(self, job_id: str, lease_id: str, events: list[dict[str, Any]],
                      worker_id: str | None = None) -> Job:
        """Store relayed ComfyUI events in order (duplicates by seq are ignored), renew the
        lease, and pass them on to the job owner's sockets. One short transaction."""
        now = time.time()
        fresh: list[dict[str, Any]] = []
        with transaction(self.factory) as s:
            job = store.held_job(s, job_id, lease_id, worker_id)
            job.lease_expires_at = now + self.settings.lease_seconds
            seen = store.seen_seqs(s, job_id, job.attempts, [ev["seq"] for ev in events])
            for ev in sorted(events, key=lambda e: e["seq"]):
                if ev["seq"] in seen:
                    continue
                seen.add(ev["seq"])
                if job.state == JobState.LEASED:
                    job = store.mark_running(s, job_id, lease_id, now)
                store.add_worker_event(s, job, ev["seq"], ev["type"], ev["data"], now)
                if ev["type"] == "executed":
                    outputs = json.loads(job.outputs)
                    _merge_output(outputs, ev["data"])
                    store.set_outputs(s, job, outputs)
                fresh.append(ev)
            user_id, client_id = job.user_id, job.client_id
        for ev in fresh:
            if ev["type"] == "executing" and ev["data"].get("node") is None:
                continue  # sent by complete(), once the hub's history is final
            self.bus.publish(user_id, {"job_id": job_id, "client_id": client_id,
                                       "type": ev["type"], "data": ev["data"]})
        return job

    def complete(self, job_id: str, lease_id: str, status: str,
                 error: dict[str, Any] | None = None) -> Job:
        now = time.time()
        if status == "retry":
            return self._retry(job_id, lease_id, error, now)
        if status not in _FINISH:
            raise InvalidInput(f"unknown status {status!r}")
        with transaction(self.factory) as s:
            job = store.finish(s, job_id, lease_id, _FINISH[status], now=now,
                               reason=f"worker reported {status}", error=error)
        if job.started_at:
            self.metrics.run_seconds.observe(now - job.started_at)
        self.wake_workers()
        self.notify_user(job.user_id)
        # ComfyUI's last word for a prompt; the job's history is final by now.
        self.bus.publish(job.user_id, {"job_id": job.id, "client_id": job.client_id,
                                       "type": "executing",
                                       "data": {"node": None, "prompt_id": job.id}})
        return job

    def _retry(self, job_id: str, lease_id: str, error: dict[str, Any] | None,
               now: float) -> Job:
        with transaction(self.factory) as s:
            job = store.held_job(s, job_id, lease_id)
            self._drop_outputs(s, job)
            if job.attempts >= self.settings.max_attempts:
                message = (error or {}).get("message", "the GPU worker could not run it")
                job = store.finish(s, job_id, lease_id, JobState.FAILED, now=now,
                                   reason="no attempts left",
                                   error=hub_error(job_id, f"gave up after {job.attempts} "
                                                           f"attempts: {message}"))
            else:
                job = store.requeue(s, job_id, now=now, lease_id=lease_id,
                                    reason=(error or {}).get("message", "worker asked to retry"))
        self.wake_workers()
        self.notify_user(job.user_id)
        if job.state == JobState.FAILED:
            self._announce_end(job)
        return job

    def release(self, job_id: str, lease_id: str) -> Job:
        """Give a job back unstarted (drain, prefetch not needed): no attempt is counted."""
        with transaction(self.factory) as s:
            job = store.held_job(s, job_id, lease_id)
            self._drop_outputs(s, job)
            job = store.requeue(s, job_id, now=time.time(), lease_id=lease_id,
                                reason="released by worker", count_attempt=False)
        self.wake_workers()
        self.notify_user(job.user_id)
        return job

    def _drop_outputs(self, s: Session, job: Job) -> None:
        """Forget what an abandoned attempt delivered, files included."""
        for out in store.attempt_outputs(s, job.id, job.attempts):
            owner = s.get(User, out.user_id)
            if owner is not None:
                path = resolve(self.data_dir, owner.name, out.type, out.subfolder, out.filename)
                path.unlink(missing_ok=True)
            s.delete(out)

    def reap(self) -> int:
        """Requeue (or fail, or cancel) every job whose lease expired. Returns how many."""
        now = time.time()
        changed = 0
        touched: set[int] = set()
        ended: list[Job] = []
        with transaction(self.factory) as s:
            for job in store.expired(s, now):
                self._drop_outputs(s, job)
                if job.cancel_requested:
                    ended.append(store.finish(s, job.id, job.lease_id or "",
                                              JobState.CANCELLED, now=now,
                                              reason="cancelled; worker gone"))
                elif job.attempts >= self.settings.max_attempts:
                    ended.append(store.finish(
                        s, job.id, job.lease_id or "", JobState.FAILED, now=now,
                        reason="lease expired, no attempts left",
                        error=hub_error(job.id, f"gave up after {job.attempts} attempts: "
                                                "the GPU worker stopped answering each time"),
                    ))
                else:
                    store.requeue(s, job.id, now=now, reason="lease expired")
                changed += 1
                touched.add(job.user_id)
        if changed:
            log.warning("%d expired lease(s) handled", changed, extra={"action": "reap"})
            self.wake_workers()
            for user_id in touched:
                self.notify_user(user_id)
            for job in ended:
                self._announce_end(job)
        return changed

    def _announce_end(self, job: Job) -> None:
        """A job the hub ended without ComfyUI's word: tell the owner's page the way ComfyUI
        would (terminal event, then `executing null`), so no progress bar hangs."""
        if job.state == JobState.FAILED:
            kind, data = "execution_error", json.loads(job.error or "{}")
        else:
            kind, data = "execution_interrupted", {"prompt_id": job.id, "node_id": None,
                                                   "node_type": None, "executed": []}
        for type_, payload in ((kind, {**data, "timestamp": int(time.time() * 1000)}),
                               ("executing", {"node": None, "prompt_id": job.id})):
            self.bus.publish(job.user_id, {"job_id": job.id, "client_id": job.client_id,
                                           "type": type_, "data": payload})

    def on_start(self) -> None:
        """After a (re)start, held leases get one lease period for their workers to return."""
        with transaction(self.factory) as s:
            store.extend_all_leases(s, time.time() + self.settings.lease_seconds)

    async def reaper(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_seconds)
            try:
                self.reap()
            except Exception:  # keep the loop alive; the next pass retries
                log.exception("lease reaper failed", extra={"action": "reap"})

    def store_output(self, job_id: str, lease_id: str, key: str, node_id: str, kind: str,
                     subfolder: str, filename: str, tmp: Path, size: int, sha256: str) -> Output:
        """Move a fully received upload into the owner's folder under a name not yet taken.

        Idempotent per (job, attempt, key): a retried upload returns the first stored name.
        """
        with transaction(self.factory) as s:
            job = store.held_job(s, job_id, lease_id)
            existing = store.find_output(s, job_id, job.attempts, key)
            if existing is not None:
                tmp.unlink(missing_ok=True)
                return existing
            owner = s.get(User, job.user_id)
            assert owner is not None
            folder = resolve(self.data_dir, owner.name, kind, subfolder, "")
            folder.mkdir(parents=True, exist_ok=True)
            name = free_name(folder, filename)
            target = resolve(self.data_dir, owner.name, kind, subfolder, name)
            tmp.replace(target)
            out = Output(job_id=job_id, user_id=owner.id, attempt=job.attempts, key=key,
                         node_id=node_id, type=kind, subfolder=subfolder, filename=name,
                         size=size, sha256=sha256, created_at=time.time())
            s.add(out)
        return out

    def get(self, job_id: str) -> Job:
        with transaction(self.factory) as s:
            job = s.scalar(select(Job).where(Job.id == job_id))
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    def commands(self, worker_id: str) -> dict[str, Any]:
        """What this worker must do now: jobs to cancel, whether to drain."""
        with transaction(self.factory) as s:
            worker = s.get(Worker, worker_id)
            cancel = list(s.scalars(select(Job.id).where(
                Job.worker_id == worker_id, Job.cancel_requested.is_(True),
                Job.state.not_in([str(t) for t in TERMINAL]))))
        return {"cancel": sorted(cancel), "drain": bool(worker and worker.draining)}


def hub_error(job_id: str, message: str) -> dict[str, Any]:
    """A failure decided by the hub, in the shape of ComfyUI's execution_error."""
    return {"prompt_id": job_id, "node_id": None, "node_type": None, "executed": [],
            "exception_message": message, "exception_type": "ComfyMultiError",
            "traceback": [], "current_inputs": {}, "current_outputs": []}


def _merge_output(outputs: dict[str, Any], executed: dict[str, Any]) -> None:
    node = str(executed.get("node"))
    output = executed.get("output") or {}
    if executed.get("merge") and node in outputs:
        for kind, items in output.items():
            outputs[node].setdefault(kind, []).extend(items)
    else:
        outputs[node] = output


class CatalogCache:
    """Parsed catalogs by hash (a stored catalog never changes, so caching is safe), and the
    catalog participants see: what the workers online now offer together."""

    def __init__(self, online_window: float, keep: int = 8) -> None:
        self.online_window = online_window
        self._keep = keep
        self._indexes: dict[str, CatalogIndex] = {}
        self._parsed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._current: tuple[tuple[str, ...], dict[str, Any], bytes | None] | None = None

    def index(self, s: Session, catalog_hash: str) -> CatalogIndex | None:
        if not catalog_hash:
            return None
        if catalog_hash not in self._indexes:
            catalog = self.catalog(s, catalog_hash)
            if catalog is None:
                return None
            self._indexes[catalog_hash] = CatalogIndex.build(catalog)
        return self._indexes[catalog_hash]

    def catalog(self, s: Session, catalog_hash: str) -> dict[str, Any] | None:
        if catalog_hash in self._parsed:
            self._parsed.move_to_end(catalog_hash)
            return self._parsed[catalog_hash]
        row = s.get(Catalog, catalog_hash)
        if row is None:
            return None
        self._parsed[catalog_hash] = unpack(row.data)
        while len(self._parsed) > self._keep:
            self._parsed.popitem(last=False)
        return self._parsed[catalog_hash]

    def _current_hashes(self, s: Session) -> tuple[str, ...]:
        since = time.time() - self.online_window
        online = s.scalars(select(Worker.catalog_hash).distinct().where(
            Worker.catalog_hash != "", Worker.last_seen >= since)).all()
        if online:
            return tuple(sorted(online))
        # No GPU up: the last known catalog, so people can prepare workflows anyway.
        last = s.scalar(select(Worker.catalog_hash).where(Worker.catalog_hash != "")
                        .order_by(Worker.last_seen.desc()).limit(1))
        return (last,) if last else ()

    def current(self, s: Session) -> dict[str, Any]:
        """Every node type and model any online worker offers (the scheduler still sends each
        job only to a worker that can run it)."""
        hashes = self._current_hashes(s)
        if self._current is None or self._current[0] != hashes:
            catalogs = [c for h in hashes if (c := self.catalog(s, h)) is not None]
            self._current = (hashes, merge_catalogs(catalogs), None)
        return self._current[1]

    def current_object_info_json(self, s: Session) -> bytes:
        """object_info of `current()` as JSON bytes, serialised once per catalog (≈1.6 MB)."""
        catalog = self.current(s)
        assert self._current is not None
        if self._current[2] is None:
            self._current = (self._current[0], catalog,
                             json.dumps(catalog["object_info"]).encode())
        return self._current[2]  # type: ignore[return-value]
