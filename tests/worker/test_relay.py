"""Relay: ComfyUI's order, increasing seq, batching, executed waits for its files, the last
events left for the completion to carry, output frames in parts within the batch budget;
previews rate-limited."""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

import pytest

from comfymulti.errors import ComfyMultiError, InvalidInput, LeaseLost
from comfymulti.protocol import EventsResponse
from comfymulti.worker import relay as relay_module
from comfymulti.worker.relay import PreviewThrottle, Relay

pytestmark = pytest.mark.anyio


class EventsHub:
    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.cancel = False
        self.fail: Exception | None = None
        self.previews: list[tuple[float, bytes]] = []

    async def events(self, job_id: str, lease_id: str,
                     events: list[dict[str, Any]]) -> EventsResponse:
        self.entered.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.batches.append(events)
        return EventsResponse(cancel=self.cancel)

    async def preview(self, job_id: str, lease_id: str, frame: bytes, node: str = "") -> None:
        if self.fail is not None:
            raise self.fail
        self.previews.append((asyncio.get_running_loop().time(), frame))


def _relay(hub: EventsHub, uploads: dict[str, asyncio.Event] | None = None,
           seen: list[Any] | None = None) -> Relay:
    async def deliver(data: dict[str, Any]) -> dict[str, Any]:
        if uploads is not None:
            await uploads[data["node"]].wait()
        return {**data, "output": {"images": [{"filename": "stored.png"}]}}

    record = seen if seen is not None else []
    return Relay(hub, "job", "lease", deliver_executed=deliver,
                 on_cancel=lambda: record.append("cancel"),
                 on_failed=lambda exc: record.append(exc))


def _sent(hub: EventsHub, rest: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every event the hub got, then those the job's completion carries."""
    return [e for b in hub.batches for e in b] + (rest or [])


async def _until(condition: Any) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


async def test_order_seq_and_executed_waits_for_its_files() -> None:
    hub = EventsHub()
    uploads = {"2": asyncio.Event()}
    relay = _relay(hub, uploads)
    relay.add("execution_start", {"n": 0})
    relay.add("executing", {"node": "2"})
    relay.add_executed({"node": "2", "output": {"images": [{"filename": "a.png"}]}})
    relay.add("execution_success", {})
    await asyncio.sleep(0.05)  # let the pump run as far as it can
    sent = [e for b in hub.batches for e in b]
    assert [e["type"] for e in sent] == ["execution_start", "executing"]
    uploads["2"].set()
    rest = await relay.rest()  # the job ended: its completion carries what is left
    assert [e["type"] for e in rest] == ["executed", "execution_success"]
    sent = _sent(hub, rest)
    assert [e["seq"] for e in sent] == [0, 1, 2, 3]
    assert [e["type"] for e in sent] == ["execution_start", "executing", "executed",
                                         "execution_success"]
    assert sent[2]["data"]["output"]["images"][0]["filename"] == "stored.png"
    assert relay.executed_nodes == {"2"}
    await relay.aclose()


async def test_events_queue_up_while_the_hub_is_busy_then_go_in_one_batch() -> None:
    hub = EventsHub()
    relay = _relay(hub)
    hub.gate.clear()  # the hub does not answer (down, or slow)
    relay.add("progress", {"value": 0})
    await hub.entered.wait()
    for i in range(1, 50):
        relay.add("progress", {"value": i})
    hub.gate.set()
    await _until(lambda: len(hub.batches) == 2)
    assert [len(b) for b in hub.batches] == [1, 49]
    assert [e["data"]["value"] for b in hub.batches for e in b] == list(range(50))
    await relay.aclose()


async def test_hub_cancel_and_lease_lost_are_reported() -> None:
    hub, seen = EventsHub(), []
    relay = _relay(hub, seen=seen)
    hub.cancel = True
    relay.add("progress", {})
    await _until(lambda: seen == ["cancel"])
    hub.fail = LeaseLost("gone")
    relay.add("progress", {})
    await _until(lambda: len(seen) == 2)
    with pytest.raises(LeaseLost):
        await relay.rest()
    assert isinstance(seen[-1], LeaseLost)
    await relay.aclose()


async def test_a_refused_batch_does_not_stop_the_relay() -> None:
    hub, seen = EventsHub(), []
    relay = _relay(hub, seen=seen)
    hub.fail = InvalidInput("bad event")
    relay.add("weird", {})
    await hub.entered.wait()
    hub.fail = None
    relay.add("progress", {})
    await _until(lambda: hub.batches)
    relay.add("progress", {})
    assert [e["seq"] for e in _sent(hub, await relay.rest())] == [1, 2]
    assert seen == []
    await relay.aclose()


async def test_output_frames_go_in_order_in_parts_within_the_batch_budget(monkeypatch) -> None:
    monkeypatch.setattr(relay_module, "FRAME_PART_BYTES", 6)  # 8 base64 characters a part
    monkeypatch.setattr(relay_module, "MAX_BATCH_FRAME_CHARS", 16)
    hub = EventsHub()
    relay = _relay(hub)
    hub.gate.clear()
    relay.add("executing", {"node": "ws"})
    await hub.entered.wait()
    big, small = bytes(range(24)), b"\x00\x00\x00\x01ab"
    relay.add_frame(big)  # 4 parts
    relay.add("progress", {"value": 0})
    relay.add_frame(small)
    relay.add("progress", {"value": 1})
    hub.gate.set()
    rest = await relay.rest()
    sent = _sent(hub, rest)
    assert [e["seq"] for e in sent] == list(range(8))
    assert [e["type"] for e in sent] == ["executing"] + ["binary"] * 4 + [
        "progress", "binary", "progress"]
    frames, pending = [], b""
    for e in sent:
        if e["type"] == "binary":
            pending += base64.b64decode(e["data"]["frame"])
            if not e["data"]["more"]:
                frames.append(pending)
                pending = b""
    assert frames == [big, small]
    budget = [sum(len(e["data"].get("frame", "")) for e in b) for b in [*hub.batches, rest]]
    assert budget == [0, 16, 16, 8]  # never more than two 8-character parts in a batch
    await relay.aclose()


async def test_previews_are_throttled_newest_wins() -> None:
    hub, lost = EventsHub(), []
    throttle = PreviewThrottle(hub, "job", "lease", fps=10, on_lost=lost.append)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(30):  # 30 frames in ~0.3 s
        throttle.offer(bytes([0, 0, 0, 4, i]))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.15)
    frames = [f for _t, f in hub.previews]
    assert 3 <= len(frames) <= 5
    assert frames[-1][-1] == 29  # the newest one is never lost
    times = [t - start for t, _f in hub.previews]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.09
    throttle.send_now(b"\x00\x00\x00\x03text")
    await asyncio.sleep(0.01)
    assert hub.previews[-1][1].endswith(b"text")
    hub.fail = ComfyMultiError("hub down")
    throttle.offer(b"x")  # dropped quietly
    await throttle.aclose()
    assert lost == []
