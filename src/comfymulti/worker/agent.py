"""The worker's loop: register, lease, run jobs in the local ComfyUI, report, drain.

Concurrency, all on one event loop:
* lease loop: keeps up to 1 + `prefetch` jobs in ComfyUI (running or queued right behind the
  running one), so ComfyUI starts the next prompt the moment the current one ends;
* socket loop: one WebSocket to ComfyUI; messages are routed to jobs by prompt id (= job id);
* heartbeat: renews every held lease each lease_seconds/3; lost leases and cancels come back;
* commands: a long-poll the hub answers at once when a job must be cancelled or we must drain;
* catalog: re-registers when ComfyUI's nodes or models change (checked periodically and after
  ComfyUI reconnects, e.g. after a restart);
* one task per job (worker/job.py).

Drain (SIGTERM, or the admin): no new leases, prefetched jobs ComfyUI has not started are taken
back out of its queue and released to the hub, the running job finishes, then `run` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from comfymulti.catalog.codec import catalog_hash
from comfymulti.errors import ComfyMultiError, ComfyUIError, NotFound
from comfymulti.protocol import LeasedJob
from comfymulti.worker.comfyui import ComfyUIClient, preview_metadata
from comfymulti.worker.hub_client import HubClient
from comfymulti.worker.job import TERMINAL_EVENTS, JobRun

log = logging.getLogger("comfymulti.worker")


class Agent:
    def __init__(self, hub: HubClient, comfy: ComfyUIClient, *, name: str, prefetch: int = 1,
                 preview_fps: float = 4.0, catalog_check_seconds: float = 60.0,
                 comfy_ready_timeout: float | None = None) -> None:
        self.hub = hub
        self.comfy = comfy
        self.name = name
        self.prefetch = prefetch
        self.preview_fps = preview_fps
        self.catalog_check_seconds = catalog_check_seconds
        self.comfy_ready_timeout = comfy_ready_timeout
        self.object_info: dict[str, Any] = {}
        self.connected = asyncio.Event()
        self.on_comfy_event: Callable[[str, dict[str, Any]], None] | None = None
        self.jobs: dict[str, JobRun] = {}
        self.draining = False
        self.serving = False  # registered and taking work (before: still waiting for ComfyUI)
        self._changed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._catalog_due = asyncio.Event()
        self._catalog_hash = ""
        self._running_prompt: str | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None

    # --- the whole life ----------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until drained. Raises Unauthorized (bad token) and other fatal errors."""
        await self.hub.identify()
        stats = await self.comfy.wait_ready(self.comfy_ready_timeout)
        await self._register(stats)
        self.serving = True
        self._lease_task = asyncio.create_task(self._lease_loop(), name="lease")
        loops = [self._lease_task,
                 asyncio.create_task(self._socket_loop(), name="comfy-socket"),
                 asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                 asyncio.create_task(self._commands_loop(), name="commands"),
                 asyncio.create_task(self._catalog_loop(), name="catalog")]
        stopped = asyncio.create_task(self._stopped.wait(), name="stopped")
        pending: set[asyncio.Task[Any]] = {*loops, stopped}
        try:
            while stopped in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is not stopped and not task.cancelled() and task.exception():
                        raise task.exception()  # type: ignore[misc]
            log.info("worker %s drained; stopping", self.name)
        finally:
            tasks = [*loops, stopped, *(j.task for j in self.jobs.values() if j.task)]
            if self._drain_task is not None:
                tasks.append(self._drain_task)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    def drain(self, tell_hub: bool = True) -> None:
        """Stop taking work, give back what has not started, finish the rest, then stop."""
        if self.draining:
            return
        log.info("worker %s: draining", self.name)
        self.draining = True
        self._drain_task = asyncio.create_task(self._drain(tell_hub), name="drain")

    async def _drain(self, tell_hub: bool) -> None:
        self._notify()
        for job in list(self.jobs.values()):
            if not job.started:
                job.request_release()
        if tell_hub:
            try:  # also makes the hub answer our pending lease long-poll now
                await asyncio.wait_for(self.hub.drain(), 10.0)
            except (TimeoutError, ComfyMultiError) as exc:
                log.warning("could not tell the hub we drain: %r", exc)
        lease = self._lease_task
        if lease is not None and not lease.done():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(lease), 3.0)
            lease.cancel()
        while self.jobs:
            self._changed.clear()
            await self._changed.wait()
        self._stopped.set()

    # --- registration and catalog ------------------------------------------------------------

    async def _register(self, stats: dict[str, Any] | None = None,
                        catalog: dict[str, Any] | None = None) -> None:
        stats = stats or await self.comfy.system_stats()
        catalog = catalog or await self.comfy.catalog()
        device = (stats.get("devices") or [{}])[0]
        await self.hub.register(
            self.name, catalog, comfyui_version=str(stats.get("system", {}).get(
                "comfyui_version", "")),
            gpu=str(device.get("name", "")), vram_total=int(device.get("vram_total") or 0))
        self._catalog_hash = catalog_hash(catalog)
        self.object_info = catalog["object_info"]
        log.info("worker %s registered as %s (catalog %s…, %d node types)", self.name,
                 self.hub.worker_id, self._catalog_hash[:12], len(self.object_info))

    async def _catalog_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._catalog_due.wait(), self.catalog_check_seconds)
            self._catalog_due.clear()
            try:
                catalog = await self.comfy.catalog()
            except ComfyUIError as exc:
                log.info("catalog check skipped: %s", exc.message)
                continue
            if catalog_hash(catalog) != self._catalog_hash:
                log.info("ComfyUI's nodes or models changed; registering again")
                await self._register(catalog=catalog)

    # --- leasing -----------------------------------------------------------------------------

    def _busy(self) -> int:
        return sum(1 for job in self.jobs.values() if job.in_comfy_queue)

    def _notify(self) -> None:
        self._changed.set()

    def phase_changed(self, job: JobRun) -> None:
        self._notify()

    async def _lease_loop(self) -> None:
        while not self.draining:
            while self._busy() > self.prefetch and not self.draining:
                self._changed.clear()
                await self._changed.wait()
            if self.draining:
                break
            try:
                leased = await self.hub.lease(wait=self.hub.long_poll_seconds)
            except NotFound:  # the hub does not know us (its database was replaced)
                log.warning("the hub does not know this worker; registering again")
                await self._register()
                continue
            if leased is None:
                continue
            if self.draining:
                await self.hub.release(leased.job_id, leased.lease_id)
                break
            self._start(leased)

    def _start(self, leased: LeasedJob) -> None:
        earlier = self.jobs.get(leased.job_id)
        if earlier is not None:  # its lease expired while we ran it, and it came back to us
            earlier.lose()
        job = JobRun(self, leased, after=earlier.task if earlier is not None else None)
        self.jobs[job.job_id] = job
        job.task = asyncio.create_task(self._run_job(job), name=f"job-{job.job_id}")
        log.info("job %s: leased (attempt %d)", job.job_id, leased.attempt)

    async def _run_job(self, job: JobRun) -> None:
        try:
            await job.run()
        except Exception:  # one job's bug must not stop the worker; its lease will expire
            log.exception("job %s failed in the worker", job.job_id)
        finally:
            if self.jobs.get(job.job_id) is job:
                del self.jobs[job.job_id]
            self._notify()

    # --- hub signals -------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(max(self.hub.lease_seconds / 3, 0.05))
            leases = {j.job_id: j.lease_id for j in self.jobs.values()}
            if not leases:
                continue
            try:
                answer = await self.hub.renew(leases)
            except NotFound:
                continue  # not registered (any more); the lease loop registers again
            for job_id in answer.lost:
                if job := self.jobs.get(job_id):
                    job.lose()
            for job_id in answer.cancel:
                if job := self.jobs.get(job_id):
                    job.request_cancel()

    async def _commands_loop(self) -> None:
        known = ""
        while True:
            try:
                commands = await self.hub.commands(wait=self.hub.long_poll_seconds, known=known)
            except NotFound:  # not registered (any more); the lease loop registers again
                await asyncio.sleep(1.0)
                continue
            known = json.dumps(commands.model_dump(), sort_keys=True)
            for job_id in commands.cancel:
                if job := self.jobs.get(job_id):
                    job.request_cancel()
            if commands.drain and not self.draining:
                self.drain(tell_hub=False)

    # --- ComfyUI's socket --------------------------------------------------------------------

    async def _socket_loop(self) -> None:
        delay, first = 0.1, True
        while True:
            try:
                async with self.comfy.websocket() as ws:
                    self.connected.set()
                    delay = 0.1
                    if not first:
                        log.info("ComfyUI socket back; checking its catalog")
                        self._catalog_due.set()
                    first = False
                    async for message in ws:
                        self._dispatch(message)
            except ComfyUIError as exc:
                if self.connected.is_set():
                    log.warning("ComfyUI socket lost: %s", exc.message)
            finally:
                if self.connected.is_set():
                    self.connected.clear()
                    self._running_prompt = None
                    for job in self.jobs.values():
                        job.socket_dropped()
            await asyncio.sleep(delay)  # reconnect backoff
            delay = min(delay * 2, 2.0)

    def _dispatch(self, message: dict[str, Any] | bytes) -> None:
        """Route one ComfyUI message to its job (by prompt id; previews without one go to the
        prompt that is running)."""
        if isinstance(message, bytes):
            prompt_id = _preview_prompt_id(message) or self._running_prompt
        else:
            data = message.get("data")
            prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
            kind = message.get("type")
            if kind == "execution_start":
                self._running_prompt = prompt_id
            elif kind in TERMINAL_EVENTS and self._running_prompt == prompt_id:
                self._running_prompt = None
        job = self.jobs.get(prompt_id) if isinstance(prompt_id, str) else None
        if job is not None:
            job.deliver(message)


def _preview_prompt_id(frame: bytes) -> str | None:
    """The prompt id of a type-4 preview frame (previews with metadata)."""
    value = preview_metadata(frame).get("prompt_id")
    return value if isinstance(value, str) else None
