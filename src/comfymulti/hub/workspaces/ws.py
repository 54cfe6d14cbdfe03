"""/u/<user>/ws: ComfyUI's WebSocket for one workspace.

Protocol as ComfyUI speaks it (reference §b): `status` with the `sid` first, `feature_flags`
answered, per-prompt events only to the socket whose id the prompt carried (prompts without a
client id go to all of the user's sockets), binary frames too (an output's frame joined from
its parts; type 4 becomes type 1 unless the client asked for preview metadata), `status`
whenever this user's queue changes. A
reconnect with the same `clientId` replaces the old socket and gets the running job's state
again, so a page reload mid-job keeps showing progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import struct
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import select

from comfymulti.db import transaction
from comfymulti.events import Message
from comfymulti.hub.context import HubContext
from comfymulti.hub.web.access import own_workspace
from comfymulti.hub.workspaces.env_api import features
from comfymulti.hub.workspaces.sockets import Sockets
from comfymulti.models import Job, JobEvent, User
from comfymulti.queue.jobs import JobState

router = APIRouter()

_SID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REPLAY = ("execution_start", "execution_cached", "executed", "progress_state", "executing")


def _joined(parts: dict[str, list[bytes]], msg: Message) -> bytes | None:
    """The whole binary frame, or None while parts of it are still to come (protocol.py).
    Parts of a frame whose job died midway are held until this socket closes."""
    pending = parts.setdefault(msg["job_id"], [])
    pending.append(msg["data"])
    if msg.get("more"):
        return None
    return b"".join(parts.pop(msg["job_id"]))


def _as_legacy_preview(frame: bytes) -> bytes:
    """Type-4 preview (with metadata) → type-1, for clients that did not ask for metadata."""
    event, = struct.unpack(">I", frame[:4])
    if event != 4:
        return frame
    (meta_len,) = struct.unpack(">I", frame[4:8])
    meta = json.loads(frame[8:8 + meta_len])
    image_type = 2 if meta.get("image_type") == "image/png" else 1
    return struct.pack(">II", 1, image_type) + frame[8 + meta_len:]


@router.websocket("/u/{user}/ws")
async def workspace_socket(websocket: WebSocket, user: str) -> None:
    hub: HubContext = websocket.app.state.hub
    sockets: Sockets = websocket.app.state.sockets
    requested = websocket.query_params.get("clientId", "")
    sid = requested if _SID.match(requested) else uuid.uuid4().hex
    # Refused before the upgrade (HTTP 403): the frontend retries after 300 ms and polls
    # /api/prompt meanwhile, so a refused tab still shows its queue.
    if (entered := await sockets.enter(websocket, hub, sid,
                                       lambda found: own_workspace(found, user))) is None:
        return
    me, replaced = entered
    client_flags: dict[str, Any] = {}
    parts: dict[str, list[bytes]] = {}
    try:
        await websocket.accept()
        if replaced is not None:
            with contextlib.suppress(Exception):
                await replaced.close(code=4000, reason="replaced by a newer connection")
        with hub.bus.subscribe(me.id) as sub:
            remaining = await hub.run(hub.queue.remaining, me.id)
            await websocket.send_json({"type": "status", "data": {
                "status": {"exec_info": {"queue_remaining": remaining}}, "sid": sid}})
            await _replay(websocket, hub, me, sid)
            reader = asyncio.create_task(_read(websocket, hub, client_flags))
            try:
                while not reader.done():
                    getter = asyncio.create_task(sub.get())
                    done, _ = await asyncio.wait({getter, reader},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if getter not in done:
                        getter.cancel()
                        break
                    if sub.overflowed:
                        break  # too far behind: the client reconnects and re-reads state
                    await _deliver(websocket, sid, getter.result(), client_flags, parts)
            finally:
                reader.cancel()
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        await sockets.release(me.id, sid, websocket)


async def _read(websocket: WebSocket, hub: HubContext, client_flags: dict[str, Any]) -> None:
    """Only the first text message counts, and only if it is feature_flags (as ComfyUI)."""
    first = True
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if first and text is not None:
            first = False
            with contextlib.suppress(ValueError, AttributeError, RecursionError):
                parsed = json.loads(text)
                if parsed.get("type") == "feature_flags" and isinstance(parsed.get("data"), dict):
                    client_flags.update(parsed["data"])
                    await websocket.send_json({"type": "feature_flags", "data": features(hub)})


async def _deliver(websocket: WebSocket, sid: str, msg: Message, client_flags: dict[str, Any],
                   parts: dict[str, list[bytes]]) -> None:
    if msg.get("client_id") not in (sid, ""):
        return
    if msg["type"] == "binary":
        frame = _joined(parts, msg)
        if frame is None:
            return
        if not client_flags.get("supports_preview_metadata"):
            frame = _as_legacy_preview(frame)
        await websocket.send_bytes(frame)
        return
    await websocket.send_json({"type": msg["type"], "data": msg["data"]})


async def _replay(websocket: WebSocket, hub: HubContext, me: User, sid: str) -> None:
    """A socket (re)connecting with the id of a running job gets that job's state so far."""
    for type_, data in await hub.run(_replayed, hub, me, sid):
        await websocket.send_json({"type": type_, "data": data})


def _replayed(hub: HubContext, me: User, sid: str) -> list[tuple[str, Any]]:
    """The events to replay, in order, read in one transaction (in a thread)."""
    found: list[tuple[str, Any]] = []
    with transaction(hub.factory) as s:
        jobs = s.scalars(select(Job).where(Job.user_id == me.id, Job.client_id == sid,
                                           Job.state == str(JobState.RUNNING))).all()
        for job in jobs:
            events = s.scalars(select(JobEvent).where(
                JobEvent.job_id == job.id, JobEvent.attempt == job.attempts,
                JobEvent.seq.is_not(None), JobEvent.type.in_(_REPLAY))
                .order_by(JobEvent.seq)).all()
            last: dict[str, JobEvent] = {}
            executed = []
            for ev in events:
                if ev.type == "executed":
                    executed.append(ev)
                else:
                    last[ev.type] = ev
            ordered = [last[t] for t in ("execution_start", "execution_cached")
                       if t in last] + executed + [last[t] for t in ("progress_state",
                                                                      "executing") if t in last]
            found += [(ev.type, json.loads(ev.data)) for ev in ordered]
    return found
