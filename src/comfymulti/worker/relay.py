"""Delivery of one job's ComfyUI events to the hub: in order, batched, never lost.

Each event gets the next `seq` when it arrives; the hub ignores a seq it has already stored, so a
batch re-sent after a network error is harmless. An `executed` event starts uploading its files
at once but is relayed only when they are stored (it must name the hub's copies), and the events
behind it wait for it, so the user sees ComfyUI's order. While the hub is unreachable events
queue here and the job keeps running. Those still here when the job ends travel with its
completion (`rest`).

Binary frames an output node sends are results and go the same way, in parts (see protocol.py);
a batch carries at most MAX_BATCH_FRAME_CHARS of them. Previews are live-only: at most `fps` per
second per job, the newest frame wins, a frame the hub cannot take right now is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from comfymulti.errors import ComfyMultiError, InvalidInput, LeaseLost
from comfymulti.protocol import BINARY_EVENT, FRAME_PART_BYTES, EventsResponse, FramePart

log = logging.getLogger("comfymulti.worker.relay")

MAX_BATCH = 500
MAX_BATCH_FRAME_CHARS = 8 * 1024 * 1024  # base64 frame data per batch; the hub takes 16 MiB


class _Hub(Protocol):
    async def events(self, job_id: str, lease_id: str,
                     events: list[dict[str, Any]]) -> EventsResponse: ...

    async def preview(self, job_id: str, lease_id: str, frame: bytes, node: str = "") -> None:
        ...


@dataclass
class _Item:
    seq: int
    type: str
    data: dict[str, Any] | None
    upload: asyncio.Task[dict[str, Any]] | None = None
    size: int = 0  # characters of frame data


class Relay:
    def __init__(self, hub: _Hub, job_id: str, lease_id: str, *,
                 deliver_executed: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
                 on_cancel: Callable[[], None], on_failed: Callable[[BaseException], None]):
        self._hub = hub
        self._job_id = job_id
        self._lease_id = lease_id
        self._deliver_executed = deliver_executed
        self._on_cancel = on_cancel
        self._on_failed = on_failed
        self._items: deque[_Item] = deque()
        self._seq = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._unsent: list[dict[str, Any]] = []  # a batch put together as the job ended
        self._task: asyncio.Task[None] | None = None
        self.failed: BaseException | None = None
        self.types: set[str] = set()  # every type relayed (or queued), for reconciliation
        self.executed_nodes: set[str] = set()

    def add(self, type_: str, data: dict[str, Any]) -> None:
        self._push(_Item(self._seq, type_, data))

    def add_executed(self, data: dict[str, Any]) -> None:
        """Start storing the event's files now; relay it (renamed) in its turn."""
        self.executed_nodes.add(str(data.get("node")))
        upload = asyncio.create_task(self._deliver_executed(data),
                                     name=f"outputs-{self._job_id}")
        self._push(_Item(self._seq, "executed", None, upload))

    def add_frame(self, frame: bytes) -> None:
        """A binary frame that is an output: relayed in its turn, in parts, never dropped."""
        for start in range(0, len(frame), FRAME_PART_BYTES):
            part = base64.b64encode(frame[start:start + FRAME_PART_BYTES]).decode("ascii")
            more = start + FRAME_PART_BYTES < len(frame)
            self._push(_Item(self._seq, BINARY_EVENT, FramePart(frame=part, more=more)
                             .model_dump(), size=len(part)))

    def _push(self, item: _Item) -> None:
        self._seq += 1
        self.types.add(item.type)
        self._items.append(item)
        self._wake.set()
        if self._task is None and self.failed is None:
            self._task = asyncio.create_task(self._pump(), name=f"relay-{self._job_id}")

    async def rest(self) -> list[dict[str, Any]]:
        """Stop relaying and return the events not sent yet, for the job's completion to
        carry: its owner hears of the end one request sooner, and the hub has one report
        less to write per job. A batch already on its way is waited for; raises what stopped
        the relay."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self.failed is not None:
            raise self.failed
        batch, self._unsent = self._unsent, []
        while self._items:
            if batch:  # more than one request's worth: all but the last go now
                await self._send(batch)
            batch = await self._next_batch()
        return batch

    async def aclose(self) -> None:
        tasks = [t for t in [self._task, *(i.upload for i in self._items)] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _pump(self) -> None:
        try:
            while not self._closing:
                if not self._items:
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                batch = await self._next_batch()
                if self._closing:  # the job ended meanwhile: its completion carries these
                    self._unsent = batch
                elif batch:
                    await self._send(batch)
        except Exception as exc:  # LeaseLost, Unauthorized, or a bug: the job cannot go on
            self.failed = exc
            self._on_failed(exc)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        try:
            answer = await self._hub.events(self._job_id, self._lease_id, batch)
        except InvalidInput as exc:  # a malformed event must not stop the job
            log.warning("job %s: hub refused events %d-%d: %s", self._job_id,
                        batch[0]["seq"], batch[-1]["seq"], exc.message)
            return
        if answer.cancel:
            self._on_cancel()

    async def _next_batch(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        size = 0
        while self._items and len(batch) < MAX_BATCH:
            item = self._items[0]
            if batch and size + item.size > MAX_BATCH_FRAME_CHARS:
                break
            size += item.size
            if item.upload is not None:
                if not item.upload.done() and batch:
                    break  # send what is ready before waiting for the files
                item.data = await item.upload
                item.upload = None
            batch.append({"seq": item.seq, "type": item.type, "data": item.data})
            self._items.popleft()
        return batch


class PreviewThrottle:
    """Live preview frames for one job, at most `fps` a second, newest first."""

    def __init__(self, hub: _Hub, job_id: str, lease_id: str, fps: float,
                 on_lost: Callable[[BaseException], None]):
        self._hub = hub
        self._job_id = job_id
        self._lease_id = lease_id
        self._interval = 1.0 / fps
        self._on_lost = on_lost
        self._latest: tuple[bytes, str] | None = None
        self._next_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._text: set[asyncio.Task[None]] = set()
        self.closed = False

    def offer(self, frame: bytes, node: str = "") -> None:
        """A preview image of `node`: kept if it is the newest when the next send is due."""
        if self.closed:
            return
        self._latest = (frame, node)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"preview-{self._job_id}")

    def moved_on(self, node: str) -> None:
        """ComfyUI now runs `node`: a preview still waiting from another node is stale."""
        if self._latest is not None and self._latest[1] != node:
            self._latest = None

    def send_now(self, frame: bytes, node: str = "") -> None:
        """A frame that must not be dropped by throttling (progress text)."""
        if not self.closed:
            task = asyncio.create_task(self._send(frame, node))
            self._text.add(task)
            task.add_done_callback(self._text.discard)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._latest is not None:
            wait = self._next_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # the rate limit itself
            latest, self._latest = self._latest, None
            if latest is None:
                break
            self._next_at = loop.time() + self._interval
            await self._send(*latest)

    async def _send(self, frame: bytes, node: str) -> None:
        try:
            await self._hub.preview(self._job_id, self._lease_id, frame, node)
        except LeaseLost as exc:
            self._on_lost(exc)
        except ComfyMultiError as exc:  # previews are best effort
            log.debug("job %s: preview dropped: %s", self._job_id, exc.message)

    async def aclose(self) -> None:
        self.closed = True
        self._latest = None
        tasks = [t for t in [self._task, *self._text] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
