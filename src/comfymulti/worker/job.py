"""One leased job on this worker, from staging its inputs to reporting how it ended.

The job's own task does everything that changes its state; the agent only routes ComfyUI's
messages into its inbox and raises flags (cancel, release, lease lost, socket dropped), each of
which wakes the task. ComfyUI's WebSocket is the fast path; `/api/jobs/{id}` and
`/history/{id}` are the truth: every job is confirmed against them, and when the socket dropped
they are polled and whatever the socket missed is relayed from history.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from comfymulti.errors import ComfyUIError, LeaseLost
from comfymulti.protocol import LeasedJob
from comfymulti.worker.comfyui import (
    TERMINAL_STATUSES,
    ComfyUIClient,
    Submitted,
    history_status,
    preview_metadata,
)
from comfymulti.worker.hub_client import HubClient
from comfymulti.worker.outputs import deliver_executed
from comfymulti.worker.relay import PreviewThrottle, Relay
from comfymulti.worker.staging import stage_inputs, unstage

log = logging.getLogger("comfymulti.worker.job")

TERMINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")
_STATUS_OF_EVENT = {"execution_success": "success", "execution_error": "error",
                    "execution_interrupted": "interrupted"}
_STATUS_OF_JOB = {"completed": "success", "failed": "error", "cancelled": "interrupted"}
_NOT_RELAYED = frozenset({"status", "feature_flags", "logs", "crystools.monitor"})
_WAKE = object()


class Phase(enum.Enum):
    STAGING = "staging"    # inputs going into ComfyUI
    QUEUED = "queued"      # posted, not started
    RUNNING = "running"    # ComfyUI executes it
    ENDED = "ended"        # ComfyUI is done with it; events/outputs may still be in flight
    DONE = "done"          # reported to the hub (or dropped)


class Env(Protocol):
    """What a job needs from its agent."""

    hub: HubClient
    comfy: ComfyUIClient
    object_info: dict[str, Any]
    preview_fps: float
    connected: asyncio.Event
    on_comfy_event: Callable[[str, dict[str, Any]], None] | None

    def phase_changed(self, job: JobRun) -> None: ...


@dataclass
class Outcome:
    status: str  # success | error | interrupted | retry | released
    error: dict[str, Any] | None = None


@dataclass
class _Flags:
    cancel: bool = False
    cancel_sent: bool = False
    release: bool = False
    release_tried: bool = False
    lost: bool = False
    unsure: bool = False  # the socket dropped since posting: events may be missing
    posted: bool = False
    post_tried: bool = False
    started: bool = False


class JobRun:
    def __init__(self, env: Env, leased: LeasedJob,
                 after: asyncio.Task[None] | None = None) -> None:
        self.env = env
        self.leased = leased
        self._after = after  # an earlier run of the same job on this worker, being dropped
        self.job_id = leased.job_id
        self.lease_id = leased.lease_id
        self.phase = Phase.STAGING
        self.flags = _Flags()
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._wakeup = asyncio.Event()
        self.relay = Relay(env.hub, self.job_id, self.lease_id,
                           deliver_executed=self._deliver_executed,
                           on_cancel=self.request_cancel, on_failed=self._relay_failed)
        self.previews = PreviewThrottle(env.hub, self.job_id, self.lease_id, env.preview_fps,
                                        on_lost=lambda _exc: self.lose())
        self._output_nodes = _output_nodes(leased.prompt, env.object_info)
        self._node: str | None = None  # the node ComfyUI said it is executing
        self.outcome: Outcome | None = None
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<JobRun {self.job_id} {self.phase.value}>"

    # --- signals from the agent --------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.flags.started

    @property
    def in_comfy_queue(self) -> bool:
        """Holds one of the worker's ComfyUI slots (running or prefetched)."""
        return self.phase in (Phase.STAGING, Phase.QUEUED, Phase.RUNNING)

    def deliver(self, message: dict[str, Any] | bytes) -> None:
        self.inbox.put_nowait(message)

    def request_cancel(self) -> None:
        if not self.flags.cancel:
            log.info("job %s: cancel requested", self.job_id)
            self.flags.cancel = True
            self._wake()

    def request_release(self) -> None:
        """Give the job back if ComfyUI has not started it (drain)."""
        self.flags.release = True
        self._wake()

    def lose(self) -> None:
        if not self.flags.lost:
            log.warning("job %s: lease lost; dropping it", self.job_id)
            self.flags.lost = True
            self._wake()

    def socket_dropped(self) -> None:
        self.flags.unsure = True
        self._wake()

    def _wake(self) -> None:
        self._wakeup.set()
        self.inbox.put_nowait(_WAKE)

    def _relay_failed(self, exc: BaseException) -> None:
        if isinstance(exc, LeaseLost):
            self.lose()
        else:
            log.error("job %s: relaying events failed: %r", self.job_id, exc)
            self._wake()

    def _set_phase(self, phase: Phase) -> None:
        if self.phase != phase:
            self.phase = phase
            self.env.phase_changed(self)

    # --- the job's task ----------------------------------------------------------------------

    async def run(self) -> None:
        env = self.env
        try:
            outcome = self.outcome = await self._execute()
            self._set_phase(Phase.ENDED)
            await self.previews.aclose()
            if outcome.status == "released":
                await env.hub.release(self.job_id, self.lease_id)
                log.info("job %s: released to the hub", self.job_id)
            else:
                state = await env.hub.complete(self.job_id, self.lease_id, outcome.status,
                                               outcome.error, await self.relay.rest())
                log.info("job %s: %s (hub: %s)", self.job_id, outcome.status, state)
        except LeaseLost:
            self.flags.lost = True
            log.warning("job %s: lease lost; dropped", self.job_id)
            await self._stop_in_comfy()
        finally:
            await self.previews.aclose()
            await self.relay.aclose()
            self._set_phase(Phase.DONE)

    async def _execute(self) -> Outcome:
        if self._after is not None:
            await asyncio.wait({self._after})
        try:
            prompt = await self._stage()
        except ComfyUIError as exc:
            return Outcome("error", {"message": f"could not stage the job's inputs in ComfyUI: "
                                                f"{unstage(exc.message, self.job_id)}"})
        if prompt is None:
            return self._unposted_outcome()
        submitted = await self._post(prompt)
        if submitted is None:
            return self._unposted_outcome()
        if not submitted.accepted:
            log.info("job %s: ComfyUI refused the prompt", self.job_id)
            return Outcome("error", unstage(submitted.body, self.job_id))
        self.flags.posted = True
        self._set_phase(Phase.QUEUED)
        return await self._follow()

    async def _stage(self) -> dict[str, Any] | None:
        """The prompt with its inputs staged; retried while ComfyUI is unreachable, None if
        told to stop meanwhile. ComfyUI refusing a file (HTTP 4xx) raises."""
        env, delay = self.env, 0.2
        while not self._stop_before_posting():
            try:
                return await stage_inputs(self.leased.prompt, env.object_info,
                                          job_id=self.job_id, lease_id=self.lease_id,
                                          hub=env.hub, comfy=env.comfy)
            except ComfyUIError as exc:
                if _refused(exc):
                    raise
                log.warning("job %s: staging inputs failed (%s); retrying", self.job_id,
                            exc.message)
            await self._wait_signal(None, delay)
            delay = min(delay * 2, 2.0)
        return None

    def _unposted_outcome(self) -> Outcome:
        if self.flags.lost:
            raise LeaseLost(f"job {self.job_id}: lease lost")
        if self.flags.release:
            return Outcome("released")
        return Outcome("interrupted")

    def _stop_before_posting(self) -> bool:
        return self.flags.lost or self.flags.release or self.flags.cancel

    async def _post(self, prompt: dict[str, Any]) -> Submitted | None:
        """Post once ComfyUI's socket is up (so no event is missed); None if told to stop."""
        env, delay = self.env, 0.2
        while not self._stop_before_posting():
            if not env.connected.is_set():
                await self._wait_signal(env.connected, 1.0)
                continue
            try:
                if self.flags.post_tried and await env.comfy.job(self.job_id) is not None:
                    return Submitted(True, {"prompt_id": self.job_id})  # the first POST landed
                if self.leased.attempt > 1 and not self.flags.post_tried:
                    await self._clear_earlier_attempt()
                self.flags.post_tried = True
                return await env.comfy.post_prompt(prompt, self.job_id, self.leased.extra_data)
            except ComfyUIError as exc:
                if _refused(exc):  # e.g. 413: the prompt is too large for ComfyUI
                    return Submitted(False, {"error": {"type": "comfyui_refused",
                                                       "message": exc.message}})
                log.warning("job %s: posting to ComfyUI failed (%s); retrying", self.job_id,
                            exc.message)
                await self._wait_signal(None, delay)
                delay = min(delay * 2, 2.0)
        return None

    async def _clear_earlier_attempt(self) -> None:
        """An earlier attempt may still be in ComfyUI under the same prompt id (its lease was
        lost, maybe on this worker): stop it, wait until it is over, forget its history."""
        comfy = self.env.comfy
        for _ in range(50):
            job = await comfy.job(self.job_id)
            if job is None or job.get("status") in TERMINAL_STATUSES:
                break
            await comfy.cancel(self.job_id)
            await self._wait_signal(None, 0.2)
        await comfy.forget(self.job_id)

    async def _wait_signal(self, event: asyncio.Event | None, timeout: float) -> None:
        """Wait for `event` (or, with None, just the timeout), waking early on any flag."""
        self._wakeup.clear()
        waiters = [asyncio.ensure_future(self._wakeup.wait())]
        if event is not None:
            waiters.append(asyncio.ensure_future(event.wait()))
        _done, pending = await asyncio.wait(waiters, timeout=timeout,
                                            return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()

    # --- following the prompt in ComfyUI -----------------------------------------------------

    async def _follow(self) -> Outcome:
        ws_outcome: Outcome | None = None
        grace_until: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            if self.flags.lost:
                raise LeaseLost(f"job {self.job_id}: lease lost")
            if self.flags.cancel and not self.flags.cancel_sent:
                await self._cancel_in_comfy()
            if self.flags.release and not self.flags.started and not self.flags.release_tried:
                self.flags.release_tried = True
                if await self._withdraw():
                    return Outcome("released")
            fast = self.flags.unsure or self.flags.cancel_sent or grace_until is not None
            try:
                msg = await asyncio.wait_for(self.inbox.get(), 0.25 if fast else 5.0)
            except TimeoutError:
                done = await self._poll(grace_until is not None and loop.time() > grace_until)
                if done is True:
                    if grace_until is None:  # the socket's last messages may still come
                        grace_until = loop.time() + 2.0
                elif done is not None:
                    return done
                continue
            if msg is _WAKE:
                continue
            if isinstance(msg, bytes):
                self._binary(msg)
                continue
            if not self.flags.started and msg.get("type") != "execution_start":
                continue  # the tail of an earlier attempt under the same prompt id
            end = self._message(msg)
            if end is not None:
                ws_outcome = end
            if msg.get("type") == "executing" and (msg.get("data") or {}).get("node") is None:
                # ComfyUI's last word: history is final now. Confirm and fill gaps from it.
                return await self._confirm(ws_outcome)

    def _message(self, msg: dict[str, Any]) -> Outcome | None:
        """Relay one ComfyUI message; the outcome if it ends the job."""
        kind, data = str(msg.get("type")), msg.get("data") or {}
        if self.env.on_comfy_event is not None:
            self.env.on_comfy_event(self.job_id, msg)
        if kind == "executing":
            node = data.get("node")
            self._node = str(node) if node is not None else None
            self.previews.moved_on(self._node or "")
        if kind == "execution_start":
            self.flags.started = True
            self._set_phase(Phase.RUNNING)
        if kind in _NOT_RELAYED or (kind == "executing" and data.get("node") is None):
            return None
        if kind == "executed":
            self.relay.add_executed(data)
        else:
            self.relay.add(kind, unstage(data, self.job_id))
        if kind in TERMINAL_EVENTS:
            self._set_phase(Phase.ENDED)
            error = unstage(data, self.job_id) if kind == "execution_error" else None
            return Outcome(_STATUS_OF_EVENT[kind], error)
        return None

    def _binary(self, frame: bytes) -> None:
        """Image frames from an output node (SaveImageWebsocket) are results, relayed in
        order; those from other nodes are sampler previews, throttled."""
        if self.phase != Phase.RUNNING or len(frame) < 4:
            return
        kind = int.from_bytes(frame[:4], "big")
        if kind in (1, 4):
            node = preview_metadata(frame).get("node_id", self._node)
            node = node if isinstance(node, str) else ""
            if node in self._output_nodes:
                self.relay.add_frame(frame)
            else:
                self.previews.offer(frame, node)
        elif kind == 3:
            self.previews.send_now(frame, self._node if isinstance(self._node, str) else "")

    async def _poll(self, grace_over: bool) -> Outcome | bool | None:
        """Ask ComfyUI how the job stands: an Outcome if over, True if over but the socket
        may still bring its last messages, None to keep waiting."""
        try:
            job = await self.env.comfy.job(self.job_id)
        except ComfyUIError:
            return None  # ComfyUI is down or restarting; ask again soon
        if job is None:
            return self._vanished()
        status = job.get("status")
        if status == "in_progress" and not self.flags.started:
            self.flags.started = True
            self._set_phase(Phase.RUNNING)
        if status not in TERMINAL_STATUSES:
            return None
        if not self.flags.unsure and not grace_over and not self.flags.cancel_sent:
            return True
        return await self._confirm(None)

    def _vanished(self) -> Outcome:
        """ComfyUI does not know the job: dequeued by our cancel, or ComfyUI restarted."""
        if self.flags.cancel_sent:
            return Outcome("interrupted")
        if not self.flags.started:
            log.warning("job %s: ComfyUI forgot it before it started; releasing", self.job_id)
            return Outcome("released")
        log.warning("job %s: ComfyUI lost it mid-run (restarted?); asking for a retry",
                    self.job_id)
        return Outcome("retry", {"message": "ComfyUI restarted while running the job"})

    async def _confirm(self, ws_outcome: Outcome | None) -> Outcome:
        """The outcome per ComfyUI's history; relays whatever the socket did not bring."""
        entry: dict[str, Any] | None = None
        for delay in (0.0, 0.1, 0.3, 1.0):
            await asyncio.sleep(delay)
            try:
                entry = await self.env.comfy.history(self.job_id)
                break
            except ComfyUIError:
                continue
        self._set_phase(Phase.ENDED)
        if entry is None:
            if ws_outcome is not None:
                return ws_outcome
            return self._vanished()
        messages = [m for m in (entry.get("status") or {}).get("messages", [])
                    if isinstance(m, list) and len(m) == 2 and isinstance(m[1], dict)]
        for name, data in messages:
            if name in ("execution_start", "execution_cached") and name not in self.relay.types:
                self.relay.add(name, unstage(data, self.job_id))
        for node, output in (entry.get("outputs") or {}).items():
            if str(node) not in self.relay.executed_nodes:
                self.relay.add_executed({"node": node, "display_node": node, "output": output,
                                         "prompt_id": self.job_id})
        error = None
        for name, data in messages:
            if name in TERMINAL_EVENTS:
                if name not in self.relay.types:
                    self.relay.add(name, unstage(data, self.job_id))
                if name == "execution_error":
                    error = unstage(data, self.job_id)
        status = _STATUS_OF_JOB[history_status(entry)]
        if ws_outcome is not None and ws_outcome.status == status and ws_outcome.error:
            error = ws_outcome.error
        return Outcome(status, error if status == "error" else None)

    # --- talking to ComfyUI ------------------------------------------------------------------

    async def _cancel_in_comfy(self) -> None:
        try:
            await self.env.comfy.cancel(self.job_id)
            self.flags.cancel_sent = True
            log.info("job %s: cancelled in ComfyUI", self.job_id)
        except ComfyUIError as exc:
            log.warning("job %s: cancel did not reach ComfyUI (%s); retrying", self.job_id,
                        exc.message)
            await asyncio.sleep(0.2)

    async def _withdraw(self) -> bool:
        """Take a prefetched prompt back out of ComfyUI's queue; True if it never ran."""
        try:
            await self.env.comfy.remove_pending(self.job_id)
            return await self.env.comfy.job(self.job_id) is None
        except ComfyUIError:
            return False

    async def _stop_in_comfy(self) -> None:
        if not self.flags.posted:
            return
        try:
            await self.env.comfy.cancel(self.job_id)
        except ComfyUIError as exc:
            log.warning("job %s: could not stop it in ComfyUI: %s", self.job_id, exc.message)

    async def _deliver_executed(self, data: dict[str, Any]) -> dict[str, Any]:
        return await deliver_executed(data, job_id=self.job_id, lease_id=self.lease_id,
                                      hub=self.env.hub, comfy=self.env.comfy)


def _output_nodes(prompt: dict[str, Any], object_info: dict[str, Any]) -> frozenset[str]:
    """Ids of the prompt's nodes whose class is an output node in the catalog."""
    return frozenset(
        str(node_id) for node_id, node in prompt.items()
        if isinstance(node, dict)
        and (object_info.get(str(node.get("class_type"))) or {}).get("output_node"))


def _refused(exc: ComfyUIError) -> bool:
    """ComfyUI answered 4xx: asking again will not help."""
    status = exc.details.get("status")
    return isinstance(status, int) and 400 <= status < 500
