"""JobQueue: submit, cancel, run next, lease, renew, complete. The entry point for the hub's
routes and the CLI alike; nothing else decides what happens to a job.

Its methods are blocking (short transactions; the hub calls them in threads), except the
hot writes: a submit, and the GPU workers' reports (renewals, events, outputs, completions),
each go to a writer thread of their own that commits many of them per transaction
(group_commit); the workers' lease long-poll waits on the event loop and hands dispatch to
one thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from comfymulti.blocking import Offload
from comfymulti.catalog.prompt import Submission
from comfymulti.config import QueueSettings
from comfymulti.db import transaction
from comfymulti.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from comfymulti.events import EventBus
from comfymulti.group_commit import After, GroupCommit
from comfymulti.metrics import Metrics
from comfymulti.models import Job, Output, User, Worker
from comfymulti.protocol import BINARY_EVENT, FramePart
from comfymulti.queue import fleet, scheduler, store
from comfymulti.queue.catalogs import CatalogCache
from comfymulti.queue.eta import Estimator, queue_etas
from comfymulti.queue.jobs import (
    HELD,
    ROLE_PRIORITY,
    TERMINAL,
    CancelOutcome,
    JobState,
    Policy,
    Role,
)
from comfymulti.queue.notify import Notifier
from comfymulti.userfiles import place_under_free_name, resolve

log = logging.getLogger("comfymulti.queue")

# Longest a cached queue order with ETAs is served (changes made by other processes, such as
# a policy set from the CLI, and the passing of time show up within this).
ETA_TTL = 2.0
# While the queue keeps changing (a burst), recomputed at most this often.
ETA_MIN_AGE = 1.0

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
        offload: Offload,
        workers: Offload,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.data_dir = data_dir
        self.bus = bus
        self.metrics = metrics
        self.catalogs = catalogs
        self._offload = offload
        self._workers = workers  # the GPU workers' own threads (their long-poll's checks)
        self.notify = Notifier(bus, offload, self.remaining_of)
        # Workers asking for a job, served together by the next dispatch pass (_try_lease).
        self._asking: list[tuple[str, asyncio.Future[Job | None]]] = []
        self._passes: asyncio.Task[None] | None = None
        self._dispatcher = Offload(1)
        self._writes = GroupCommit(factory)  # the workers' reports
        # Participants' submits, in groups of their own: in a burst each took a thread and a
        # transaction, and waited for the write lock in turn with every other (load bench:
        # submit p50 2 s, and the drain could go no faster than the heavy users' submits).
        self._submits = GroupCommit(factory)
        self._executing: dict[str, str | None] = {}  # job id -> node ComfyUI runs now
        self._view: tuple[int, float, list[scheduler.Candidate],
                          dict[str, tuple[int, float]]] | None = None
        self._computing = threading.Lock()  # one queue view computed at a time

    def remaining(self, user_id: int) -> int:
        """The user's jobs not finished yet."""
        return self.remaining_of([user_id])[user_id]

    def remaining_of(self, user_ids: list[int]) -> dict[int, int]:
        with transaction(self.factory) as s:
            return store.count_unfinished(s, user_ids)

    # --- policy ----------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        with transaction(self.factory) as s:
            return self._policy(s)

    def _policy(self, s: Session) -> Policy:
        return store.get_policy(s, self.settings.policy)

    def set_policy(self, policy: str) -> Policy:
        """Switch the policy while the hub runs (the CLI writes the same through the store;
        the hub reads it at every dispatch)."""
        with transaction(self.factory) as s:
            chosen = store.set_policy(s, policy)
        self.notify.wake_workers()
        return chosen

    def set_paused(self, paused: bool) -> bool:
        """Pause or resume handing out jobs (the hub reads it at every dispatch)."""
        with transaction(self.factory) as s:
            store.set_dispatch_paused(s, paused)
        self.notify.wake_workers()
        return paused

    @property
    def online_window(self) -> float:
        return self.settings.online_window

    # --- users' actions --------------------------------------------------------------------

    async def submit(self, user: User, sub: Submission, *, priority: int | None = None
                     ) -> Job:
        """Queue a checked submission, within the per-user and hub-wide caps."""
        role = Role(user.role)

        def unit(s: Session, after: After) -> Job:
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
            if sub.prompt_id and store.job_exists(s, sub.prompt_id):
                raise Conflict(f"a job with id {sub.prompt_id} exists already")
            job = store.insert_job(
                s, job_id=sub.prompt_id or str(uuid.uuid4()), user=user, prompt=sub.prompt,
                extra_data=sub.extra_data, client_id=sub.client_id,
                priority=ROLE_PRIORITY[role] if priority is None else priority,
                instructor=role == Role.INSTRUCTOR, requirements=sub.requirements,
                now=time.time(),
            )
            after.append(lambda: self._submitted(user.id))
            return job

        return await self._submits(unit)

    def _submitted(self, user_id: int) -> None:
        self.metrics.jobs_submitted.inc()
        self.notify.wake_workers()
        self.notify.user(user_id)

    def cancel(self, job: Job, reason: str) -> CancelOutcome:
        """Cancel a job; for a running one the worker is told and ComfyUI interrupted."""
        with transaction(self.factory) as s:
            current = s.scalars(select(Job).where(Job.id == job.id)).one()
            outcome = store.cancel(s, current, time.time(), reason)
            worker_id = current.worker_id
        if outcome == CancelOutcome.REQUESTED:
            self.notify.signal_worker(worker_id)
        self.notify.user(job.user_id)
        return outcome

    def forget(self, user: User, job_ids: list[str] | None) -> int:
        """Delete finished jobs of `user` from history (all of them with None). Their output
        files stay in the user's folder; the ids may be used again."""
        with transaction(self.factory) as s:
            gone = store.delete_finished(s, user.id, job_ids)
        self.notify.jobs_changed(user.id)
        return gone

    def run_next(self, job: Job) -> None:
        with transaction(self.factory) as s:
            store.set_run_next(s, s.scalars(select(Job).where(Job.id == job.id)).one(),
                               time.time())
        self.notify.wake_workers()

    def order(self) -> list[scheduler.Candidate]:
        """The whole queue in the order it is expected to run."""
        with transaction(self.factory) as s:
            candidates, last = store.queued_candidates(s)
            policy = self._policy(s)
        return scheduler.order(policy, candidates, last)

    def etas(self, user_id: int | None = None, wanted: Collection[str] = ()
             ) -> dict[str, tuple[int, float]]:
        """job id → (queue position, seconds until done) for queued jobs (of one user).

        Computed once for the whole queue and shared by every poll until the queue changes
        (or ETA_TTL passes), and at most every ETA_MIN_AGE while it keeps changing unless a
        `wanted` job is new to it: with hundreds of participants polling a long queue,
        per-poll recomputation would slow the very drain it reports on."""
        order, etas = self._queue_view(wanted)
        if user_id is None:
            return etas
        return {c.job_id: etas[c.job_id] for c in order if c.user_id == user_id}

    def cached_etas(self, wanted: Collection[str]) -> dict[str, tuple[int, float]] | None:
        """Position and ETA of the `wanted` queued jobs from the shared computation while
        `etas` would still use it, else None. No database work: safe on the loop."""
        view = self._fresh_view(wanted)
        return None if view is None else {j: view[3][j] for j in wanted if j in view[3]}

    def _fresh_view(self, wanted: Collection[str]) -> tuple[
            int, float, list[scheduler.Candidate], dict[str, tuple[int, float]]] | None:
        cached = self._view
        if cached is not None:
            age = time.time() - cached[1]
            if (cached[0] == self.notify.changes and age < ETA_TTL) or (
                    age < ETA_MIN_AGE and all(j in cached[3] for j in wanted)):
                return cached
        return None

    def _queue_view(self, wanted: Collection[str] = ()
                    ) -> tuple[list[scheduler.Candidate], dict[str, tuple[int, float]]]:
        if (cached := self._fresh_view(wanted)) is not None:
            return cached[2], cached[3]
        # Polls finding the view stale at once wait for one computation and share it: in a
        # burst each computed its own (a read of the whole queue each), and the database
        # threads they held left other participants' job lists waiting for seconds.
        with self._computing:
            if (cached := self._fresh_view(wanted)) is not None:
                return cached[2], cached[3]
            changes, now = self.notify.changes, time.time()
            order = self.order()
            with transaction(self.factory) as s:
                estimator = Estimator(s)
                online = fleet.online_count(s, self.online_window)
                held = s.execute(select(Job.requirements, Job.started_at)
                                 .where(Job.state.in_([str(x) for x in HELD])))
                busy = sum(max(0.0, estimator.seconds(req) - (now - (started or now)))
                           for req, started in held)
            etas = queue_etas(order, estimator, online, busy)
            self._view = (changes, now, order, etas)
            return order, etas

    # --- workers ---------------------------------------------------------------------------

    async def _try_lease(self, worker_id: str) -> Job | None:
        """Pick and lease one job. Workers asking while a dispatch pass runs are all served
        by the next one: one read of the queue and one transaction for all of them (a pass
        per worker, each reading the whole queue, set the drain's pace in a burst). One pass
        at a time, so two workers never get the same job; the askers wait on the loop, the
        pass runs on a thread of its own (never queued behind other database work)."""
        answer: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()
        self._asking.append((worker_id, answer))
        if self._passes is None or self._passes.done():
            self._passes = asyncio.create_task(self._dispatch_passes())
        return await answer

    async def _dispatch_passes(self) -> None:
        while self._asking:
            asking, self._asking = self._asking, []
            try:
                jobs = await self._dispatcher(self._lease_batch, [w for w, _ in asking])
            except asyncio.CancelledError:  # the hub is stopping
                for _, answer in asking + self._asking:
                    answer.cancel()
                raise
            except Exception as exc:  # e.g. the database is busy: each asker gets the 503
                for _, answer in asking:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for (worker_id, answer), job in zip(asking, jobs, strict=True):
                if not answer.done():
                    answer.set_result(job)
                elif job is not None:  # the asker left meanwhile: the job goes back at once
                    try:
                        await self.release(job.id, job.lease_id or "", worker_id)
                    except Exception:  # its lease expires instead; the reaper requeues it
                        log.exception("could not give back job %s", job.id,
                                      extra={"action": "release"})

    def _lease_batch(self, worker_ids: list[str]) -> list[Job | None]:
        """One job or None for each asking worker, in the order they asked, from one read of
        the queue, in one transaction. Every job is chosen before the first write and the
        turn counter moves once per pass: the write lock, which the workers' reports and
        the submits wait for, is held only for the leases themselves."""
        now = time.time()
        with transaction(self.factory) as s:
            if store.dispatch_paused(s):
                return [None] * len(worker_ids)
            policy = self._policy(s)
            candidates, last = store.queued_candidates(s)
            tick = store.dispatch_tick(s)
            chosen: list[tuple[str, scheduler.Candidate, int] | None] = []
            for worker_id in worker_ids:
                candidate = self._pick(s, worker_id, policy, candidates, last)
                if candidate is None:
                    chosen.append(None)
                    continue
                tick += 1
                chosen.append((worker_id, candidate, tick))
                last[candidate.user_id] = tick
                candidates.remove(candidate)
            leased = [None if pick is None else self._lease_one(s, *pick, now) for pick in chosen]
            if any(leased):
                store.set_dispatch_tick(s, tick)
        for job in leased:
            if job is None:
                continue
            self.metrics.dispatched.labels(policy=str(policy)).inc()
            if job.attempts == 1:
                self.metrics.wait_seconds.observe(now - job.created_at)
            self.notify.user(job.user_id)
        return leased

    def _lease_one(self, s: Session, worker_id: str, candidate: scheduler.Candidate,
                   tick: int, now: float) -> Job | None:
        """Lease the chosen job; None if it left the queue since it was read (cancelled):
        that worker asks again, the others keep theirs."""
        try:
            return store.lease(s, candidate, worker_id=worker_id, lease_id=str(uuid.uuid4()),
                               expires_at=now + self.settings.lease_seconds, now=now,
                               tick=tick)
        except (Conflict, NotFound):
            return None

    def _pick(self, s: Session, worker_id: str, policy: Policy,
              candidates: list[scheduler.Candidate], last: dict[int, int]
              ) -> scheduler.Candidate | None:
        """The job this worker should run next, if it takes work and can run one."""
        if not candidates:
            return None
        worker = s.get(Worker, worker_id)
        if worker is None or worker.draining:
            return None
        index = self.catalogs.index(s, worker.catalog_hash)
        if index is None:
            return None
        return scheduler.pick(policy, candidates, last,
                              lambda req: index.can_run(json.loads(req)))

    async def lease(self, worker_id: str, wait: float) -> Job | None:
        """A job for this worker, waiting up to `wait` seconds for one to arrive."""
        deadline = time.monotonic() + wait
        while True:
            work = self.notify.work
            if self.notify.closing:
                return None
            job = await self._try_lease(worker_id)
            if job is not None or (remaining := deadline - time.monotonic()) <= 0:
                return job
            if await self._workers(self._draining, worker_id):
                return None  # answer a draining worker's long-poll at once
            try:
                await asyncio.wait_for(work.wait(), remaining)
            except TimeoutError:
                return await self._try_lease(worker_id)

    def _draining(self, worker_id: str) -> bool:
        with transaction(self.factory) as s:
            worker = s.get(Worker, worker_id)
            return worker is None or worker.draining

    async def renew(self, worker_id: str, leases: dict[str, str]
                    ) -> tuple[list[str], list[str]]:
        """Extend this worker's leases: (jobs whose lease is lost, jobs to cancel)."""
        until = time.time() + self.settings.lease_seconds

        def unit(s: Session, _after: After) -> tuple[list[str], list[str]]:
            lost, cancel = [], []
            for job_id, lease_id in leases.items():
                try:
                    job = store.renew(s, job_id, lease_id, until)
                except (Conflict, NotFound):  # gone or taken over: lost either way
                    lost.append(job_id)
                    continue
                if job.worker_id != worker_id:
                    lost.append(job_id)
                elif job.cancel_requested:
                    cancel.append(job_id)
            return lost, cancel

        return await self._writes(unit)

    def executing(self, job_id: str) -> str | None:
        """The node ComfyUI last said it runs for this job (None before the first)."""
        return self._executing.get(job_id)

    def held(self, job_id: str, lease_id: str, worker_id: str | None = None) -> Job:
        with transaction(self.factory) as s:
            return store.held_job(s, job_id, lease_id, worker_id)

    async def record_events(self, job_id: str, lease_id: str, events: list[dict[str, Any]],
                            worker_id: str | None = None) -> Job:
        """Store relayed ComfyUI events in order (duplicates by seq are ignored), renew the
        lease, and pass them on to the job owner's sockets. Binary frame parts go to the
        sockets as bytes; only their size is stored."""
        frames = await self._frames(events)
        return await self._writes(
            lambda s, after: self._record_events(s, after, job_id, lease_id, events, frames,
                                                 worker_id))

    async def _frames(self, events: list[dict[str, Any]]) -> dict[int, tuple[bytes, bool]]:
        """The binary frame parts among `events`, decoded (on the workers' threads: a part
        is up to 4 MiB of base64)."""
        return (await self._workers(_frame_parts, events)
                if any(ev["type"] == BINARY_EVENT for ev in events) else {})

    def _record_events(self, s: Session, after: After, job_id: str, lease_id: str,
                       events: list[dict[str, Any]], frames: dict[int, tuple[bytes, bool]],
                       worker_id: str | None) -> Job:
        now = time.time()
        job = store.renew(s, job_id, lease_id, now + self.settings.lease_seconds, worker_id)
        batch = sorted({ev["seq"]: ev for ev in reversed(events)}.values(),
                       key=lambda e: e["seq"])  # each seq once, the first sent of it
        listed = False  # whether the job list shows anything new (state, start, outputs)
        if batch and job.state == JobState.LEASED:  # its first events: nothing stored yet
            job = store.mark_running(s, job_id, lease_id, now)
            listed = True
        stored = store.add_worker_events(s, job, [
            (ev["seq"], ev["type"], _stored_data(ev, frames)) for ev in batch], now)
        fresh = [ev for ev in batch if ev["seq"] in stored]
        executed = [ev["data"] for ev in fresh if ev["type"] == "executed"]
        if executed:
            outputs = json.loads(job.outputs)
            for data in executed:
                _merge_output(outputs, data)
            store.set_outputs(s, job, outputs)
            listed = True
        user_id, client_id = job.user_id, job.client_id
        after.append(lambda: self._relay(job_id, user_id, client_id, fresh, frames, listed))
        return job

    def _relay(self, job_id: str, user_id: int, client_id: str | None,
               fresh: list[dict[str, Any]], frames: dict[int, tuple[bytes, bool]],
               listed: bool) -> None:
        """Pass newly stored events on to the owner's sockets."""
        if listed:  # not for progress: cached job lists stay good (every poll would miss)
            self.notify.jobs_changed(user_id)
        for ev in fresh:
            if ev["type"] == "executing":
                if ev["data"].get("node") is None:
                    continue  # sent by complete(), once the hub's history is final
                self._executing[job_id] = str(ev["data"]["node"])
            message = {"job_id": job_id, "client_id": client_id, "type": ev["type"],
                       "data": ev["data"]}
            if (frame := frames.get(ev["seq"])) is not None:
                message.update(data=frame[0], more=frame[1])
            self.bus.publish(user_id, message)

    async def complete(self, job_id: str, lease_id: str, status: str,
                       error: dict[str, Any] | None = None, worker_id: str | None = None,
                       events: list[dict[str, Any]] | None = None) -> Job:
        """End a held job (or give it back for a retry). Its last `events` are stored first,
        in the same unit, as `record_events` would: the worker sends them with the end
        rather than one request before it."""
        if status != "retry" and status not in _FINISH:
            raise InvalidInput(f"unknown status {status!r}")
        frames = await self._frames(events or [])

        def unit(s: Session, after: After) -> Job:
            if events:
                self._record_events(s, after, job_id, lease_id, events, frames, worker_id)
            if status == "retry":
                return self._retry(s, after, job_id, lease_id, error, worker_id)
            return self._finish(s, after, job_id, lease_id, status, error, worker_id)

        return await self._writes(unit)

    def _finish(self, s: Session, after: After, job_id: str, lease_id: str, status: str,
                error: dict[str, Any] | None, worker_id: str | None) -> Job:
        now = time.time()
        self._executing.pop(job_id, None)
        job = store.finish(s, job_id, lease_id, _FINISH[status], now=now,
                           reason=f"worker reported {status}", error=error,
                           worker_id=worker_id)

        def announce() -> None:
            if job.started_at:
                self.metrics.run_seconds.observe(now - job.started_at)
            self.notify.wake_workers()
            self.notify.user(job.user_id)
            # ComfyUI's last word for a prompt; the job's history is final by now.
            self.bus.publish(job.user_id, {"job_id": job.id, "client_id": job.client_id,
                                           "type": "executing",
                                           "data": {"node": None, "prompt_id": job.id}})

        after.append(announce)
        return job

    def _retry(self, s: Session, after: After, job_id: str, lease_id: str,
               error: dict[str, Any] | None, worker_id: str | None) -> Job:
        now = time.time()
        self._executing.pop(job_id, None)
        job = store.held_job(s, job_id, lease_id, worker_id)
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
        after.append(lambda: self._requeued(job))
        return job

    async def release(self, job_id: str, lease_id: str, worker_id: str | None = None) -> Job:
        """Give a job back unstarted (drain, prefetch not needed): no attempt is counted."""
        def unit(s: Session, after: After) -> Job:
            self._executing.pop(job_id, None)
            job = store.held_job(s, job_id, lease_id, worker_id)
            self._drop_outputs(s, job)
            job = store.requeue(s, job_id, now=time.time(), lease_id=lease_id,
                                reason="released by worker", count_attempt=False)
            after.append(lambda: self._requeued(job))
            return job

        return await self._writes(unit)

    def _requeued(self, job: Job) -> None:
        """A held job went back to the queue (or failed for good): tell workers and owner."""
        self.notify.wake_workers()
        self.notify.user(job.user_id)
        if job.state == JobState.FAILED:
            self._announce_end(job)

    def _drop_outputs(self, s: Session, job: Job) -> None:
        """Forget what an abandoned attempt delivered, files included."""
        for out in store.remove_outputs(s, job.id, job.attempts):
            owner = s.get(User, out.user_id)
            if owner is not None:
                path = resolve(self.data_dir, owner.name, out.type, out.subfolder, out.filename)
                path.unlink(missing_ok=True)

    def reap(self) -> int:
        """Requeue (or fail, or cancel) every job whose lease expired. Returns how many."""
        now = time.time()
        changed = 0
        touched: set[int] = set()
        ended: list[Job] = []
        with transaction(self.factory) as s:
            for job in store.expired(s, now):
                self._executing.pop(job.id, None)
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
            self.notify.wake_workers()
            for user_id in touched:
                self.notify.user(user_id)
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
                await self._offload(self.reap)
            except Exception:  # keep the loop alive; the next pass retries
                log.exception("lease reaper failed", extra={"action": "reap"})

    def prepare_output(self, job_id: str, lease_id: str, worker_id: str, key: str, kind: str,
                       subfolder: str, filename: str) -> tuple[OutputTarget, Output | None]:
        """Before a byte of an upload is received, in one transaction: the lease holds, where
        the file would go (checked), and the output stored already under `key` if this is a
        retry (then the body need not be read at all)."""
        if kind not in ("output", "temp"):
            raise InvalidInput("type must be output or temp")
        if not filename.strip(" ."):
            raise InvalidInput("an output needs a file name")
        with transaction(self.factory) as s:
            job = store.held_job(s, job_id, lease_id, worker_id)
            owner = s.get(User, job.user_id)
            if owner is None:
                raise NotFound(f"job {job.id} has no owner any more")
            path = resolve(self.data_dir, owner.name, kind, subfolder, filename)
            done = store.find_output(s, job_id, job.attempts, key)
        return OutputTarget(user_id=owner.id, kind=kind, subfolder=subfolder, path=path), done

    async def store_output(self, job_id: str, lease_id: str, key: str, node_id: str,
                           target: OutputTarget, tmp: Path, size: int, sha256: str) -> Output:
        """Move a fully received upload into the owner's folder under a name not yet taken.

        Idempotent per (job, attempt, key): a retried upload returns the first stored name.
        """
        def unit(s: Session, _after: After) -> Output:
            job = store.held_job(s, job_id, lease_id)
            existing = store.find_output(s, job_id, job.attempts, key)
            if existing is not None:
                tmp.unlink(missing_ok=True)
                return existing
            folder = target.path.parent
            folder.mkdir(parents=True, exist_ok=True)
            name = place_under_free_name(tmp, folder, target.path.name)
            return store.add_output(s, job, Output(
                job_id=job_id, user_id=target.user_id, attempt=job.attempts, key=key,
                node_id=node_id, type=target.kind, subfolder=target.subfolder, filename=name,
                size=size, sha256=sha256, created_at=time.time()))

        return await self._writes(unit)

    def get(self, job_id: str) -> Job:
        with transaction(self.factory) as s:
            job = s.scalar(select(Job).where(Job.id == job_id))
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    def drain(self, worker_id: str) -> None:
        """Take no new work to this worker: its lease long-poll answers "no work" at once and
        its commands long-poll answers with drain=true (worker route and admin alike)."""
        with transaction(self.factory) as s:
            worker = s.get(Worker, worker_id)
            if worker is None:
                raise NotFound(f"no worker {worker_id}")
            worker.draining = True
        log.info("worker %s draining", worker_id, extra={"action": "drain"})
        self.notify.wake_workers()
        self.notify.signal_worker(worker_id)

    def commands(self, worker_id: str) -> dict[str, Any]:
        """What this worker must do now: jobs to cancel, whether to drain."""
        with transaction(self.factory) as s:
            worker = s.get(Worker, worker_id)
            cancel = list(s.scalars(select(Job.id).where(
                Job.worker_id == worker_id, Job.cancel_requested.is_(True),
                Job.state.not_in([str(t) for t in TERMINAL]))))
        return {"cancel": sorted(cancel), "drain": bool(worker and worker.draining)}


@dataclass(frozen=True)
class OutputTarget:
    """A checked place for one output file of a job (the name may still get a counter)."""

    user_id: int
    kind: str
    subfolder: str
    path: Path


def hub_error(job_id: str, message: str) -> dict[str, Any]:
    """A failure decided by the hub, in the shape of ComfyUI's execution_error."""
    return {"prompt_id": job_id, "node_id": None, "node_type": None, "executed": [],
            "exception_message": message, "exception_type": "ComfyMultiError",
            "traceback": [], "current_inputs": {}, "current_outputs": []}


def _frame_parts(events: list[dict[str, Any]]) -> dict[int, tuple[bytes, bool]]:
    """(bytes, more) of each binary event by seq; the whole batch is refused if one is bad."""
    parts: dict[int, tuple[bytes, bool]] = {}
    for ev in events:
        if ev["type"] != BINARY_EVENT:
            continue
        try:
            part = FramePart.model_validate(ev["data"])
            parts[ev["seq"]] = (base64.b64decode(part.frame, validate=True), part.more)
        except (ValidationError, binascii.Error) as exc:
            raise InvalidInput(f"event {ev['seq']}: not a binary frame part") from exc
    return parts


def _stored_data(event: dict[str, Any], frames: dict[int, tuple[bytes, bool]]
                 ) -> dict[str, Any]:
    """What is kept of an event: a binary frame part only by its size."""
    frame = frames.get(event["seq"])
    return event["data"] if frame is None else {"bytes": len(frame[0]), "more": frame[1]}


def _merge_output(outputs: dict[str, Any], executed: dict[str, Any]) -> None:
    node = str(executed.get("node"))
    output = executed.get("output") or {}
    if executed.get("merge") and node in outputs:
        for kind, items in output.items():
            outputs[node].setdefault(kind, []).extend(items)
    else:
        outputs[node] = output
