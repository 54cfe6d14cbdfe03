"""Queue, executor, history and jobs of :mod:`tests.fakes.comfyui`.

One :class:`Engine` is one "ComfyUI process": its queue, history, output cache and
WebSocket registry live in memory and are dropped on :meth:`FakeComfyUI.restart`.
Everything runs on the server's asyncio loop. Messages go through one outbox queue
drained by a single publisher task, so their order is the order they were produced
in, as with the real server's ``send_sync``/``publish_loop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import heapq
import json
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes import media
from tests.fakes.comfyui_catalog import FILE_INPUTS
from tests.fakes.comfyui_nodes import (
    WEBSOCKET_SAVERS,
    FImage,
    NodeContext,
    NodeError,
    pil_error,
    progress_plan,
    read_input_file,
    run_node,
    websocket_pngs,
)

if TYPE_CHECKING:
    from tests.fakes.comfyui import FakeComfyUI

MAX_HISTORY = 10000
SERVER_FEATURES = {
    "supports_preview_metadata": True,
    "supports_model_type_tags": True,
    "max_upload_size": 104857600,
    "extension": {"manager": {"supports_v4": True}},
    "node_replacements": True,
    "assets": False,
}
SENSITIVE_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
THROTTLE_SECONDS = 0.1
THROTTLE_PERCENT = 0.5
Preview = tuple[str, bytes]  # ("JPEG" | "PNG", encoded image), as ComfyUI's preview tuple


class Interrupted(Exception):
    pass


@dataclass
class ExecutionRecord:
    """What the fake executed (for tests and benchmarks)."""

    prompt_id: str
    client_id: str | None
    number: float
    started: float  # time.monotonic()
    ended: float | None = None
    status: str = "running"  # running | success | error | interrupted | crashed
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


@dataclass
class CacheEntry:
    ui: dict[str, Any] | None
    outputs: tuple[Any, ...]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_link(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def _fmt(x: Any) -> Any:
    return x if x is None or isinstance(x, int | float | bool | str) else str(x)


class Engine:
    def __init__(self, fake: FakeComfyUI):
        self.fake = fake
        self.queue: list[tuple] = []
        self.running: dict[int, tuple] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.number = 0
        self.task_counter = 0
        self.sockets: dict[str, Any] = {}
        self.socket_flags: dict[str, dict[str, Any]] = {}
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.cache: dict[Any, CacheEntry] = {}
        self.flags: dict[str, bool] = {}
        self.interrupt = asyncio.Event()
        self.wake = asyncio.Event()
        self.outbox: asyncio.Queue[tuple[Any, Any, str | None]] = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------- messaging

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._publish()), asyncio.create_task(self._worker())]

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(BaseException):
                await t
        for record in self.fake.executions:
            if record.status == "running":  # the "process" died mid-prompt
                record.status, record.ended = "crashed", time.monotonic()

    def send(self, event: Any, data: Any, sid: str | None = None) -> None:
        self.outbox.put_nowait((event, data, sid))

    async def _publish(self) -> None:
        while True:
            event, data, sid = await self.outbox.get()
            if isinstance(event, int):
                message: Any = struct.pack(">I", event) + data
            else:
                message = json.dumps({"type": event, "data": data})
            targets = (
                list(self.sockets.values())
                if sid is None
                else [self.sockets[sid]]
                if sid in self.sockets
                else []
            )
            for ws in targets:
                try:
                    if isinstance(message, bytes):
                        await ws.send_bytes(message)
                    else:
                        await ws.send_text(message)
                except Exception:  # a dead socket must not stop the publisher
                    pass

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self.queue) + len(self.running)}}

    def queue_updated(self) -> None:
        self.send("status", {"status": self.queue_info()})

    # ----------------------------------------------------------------- queue

    def put(self, item: tuple) -> None:
        heapq.heappush(self.queue, item)
        self.queue_updated()
        self.wake.set()

    def wipe_queue(self) -> None:
        self.queue = []
        self.queue_updated()

    def delete_queue_item(self, prompt_id: str) -> bool:
        for i, item in enumerate(self.queue):
            if item[1] == prompt_id:
                if len(self.queue) == 1:
                    self.wipe_queue()  # the real server then reports twice
                else:
                    self.queue.pop(i)
                    heapq.heapify(self.queue)
                self.queue_updated()
                return True
        return False

    def interrupt_if_running(self, prompt_id: str | None) -> bool:
        if prompt_id is None:
            self.interrupt.set()
            return True
        if any(item[1] == prompt_id for item in self.running.values()):
            self.interrupt.set()
            return True
        return False

    async def _worker(self) -> None:
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            item = heapq.heappop(self.queue)
            item_id = self.task_counter
            self.running[item_id] = copy.deepcopy(item)
            self.task_counter += 1
            self.queue_updated()
            number, prompt_id, prompt, extra, outputs, sensitive = item
            run = _PromptRun(self, number, prompt_id, prompt, {**extra, **sensitive}, outputs)
            try:
                await run.execute()
            except Exception as ex:  # a bug in the fake must not wedge its queue
                self.fake.errors.append(ex)
                run.success = False
            self.running.pop(item_id)
            if len(self.history) > MAX_HISTORY:
                self.history.pop(next(iter(self.history)))
            self.history[prompt_id] = {
                "prompt": [number, prompt_id, prompt, extra, outputs],
                "outputs": run.ui_outputs_plain(),
                "status": {
                    "status_str": "success" if run.success else "error",
                    "completed": run.success,
                    "messages": [[e, d] for e, d in run.messages],
                },
                "meta": run.meta(),
            }
            self.queue_updated()
            if run.client_id is not None:
                self.send("executing", {"node": None, "prompt_id": prompt_id}, run.client_id)
            if self.flags.pop("free_memory", False):
                self.cache.clear()
            self.flags.clear()


class _ProgressBar:
    def __init__(self) -> None:
        self.last_value = -1
        self.last_time = 0.0


class _PromptRun:
    """One execution of one prompt (ComfyUI's ``PromptExecutor.execute_async``)."""

    def __init__(
        self,
        engine: Engine,
        number: float,
        prompt_id: str,
        prompt: dict[str, Any],
        extra_data: dict[str, Any],
        outputs: list[str],
    ):
        self.e = engine
        self.fake = engine.fake
        self.number = number
        self.prompt_id = prompt_id
        self.prompt = prompt
        self.extra = extra_data
        self.outputs = outputs
        self.client_id: str | None = extra_data.get("client_id")
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.success = True
        self.progress: dict[str, dict[str, Any]] = {}
        self.ui_outputs: dict[str, dict[str, Any]] = {}
        self.values: dict[str, tuple[Any, ...]] = {}
        self.executed: list[str] = []
        self.catalog = self.fake.catalog()
        self._sigs: dict[str, Any] = {}
        self.extra_seconds = 0.0

    # --------------------------------------------------------------- helpers

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool = False) -> None:
        data = {**data, "timestamp": _now_ms()}
        self.messages.append((event, data))
        if self.client_id is not None or broadcast:
            self.e.send(event, data, self.client_id)

    def _send_progress_state(self) -> None:
        nodes = {
            nid: {
                "value": st["value"],
                "max": st["max"],
                "state": st["state"],
                "node_id": nid,
                "prompt_id": self.prompt_id,
                "display_node_id": nid,
                "parent_node_id": None,
                "real_node_id": nid,
            }
            for nid, st in self.progress.items()
            if st["state"] != "pending"
        }
        self.e.send("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, self.client_id)

    def _entry(self, nid: str) -> dict[str, Any]:
        return self.progress.setdefault(nid, {"state": "pending", "value": 0, "max": 1})

    def start_progress(self, nid: str) -> None:
        self._entry(nid).update(state="running", value=0.0, max=1.0)
        self._send_progress_state()

    def finish_progress(self, nid: str) -> None:
        st = self._entry(nid)
        st.update(state="finished", value=st["max"])
        self._send_progress_state()

    def _supports_metadata(self) -> bool:
        return bool(
            self.e.socket_flags.get(self.client_id or "", {}).get("supports_preview_metadata")
        )

    def _hook(self, nid: str, value: int, total: int, preview: Preview | None) -> None:
        """ComfyUI's progress hook: ``progress_state`` → [type 4] → ``progress`` → [type 1]."""
        if self.e.interrupt.is_set():
            raise Interrupted
        st = self._entry(nid)
        st.update(state="running", value=value, max=total)
        self._send_progress_state()
        if preview is not None and self._supports_metadata():
            meta = json.dumps(
                {
                    "node_id": nid,
                    "prompt_id": self.prompt_id,
                    "display_node_id": nid,
                    "parent_node_id": None,
                    "real_node_id": nid,
                    "image_type": f"image/{preview[0].lower()}",
                }
            ).encode()
            self.e.send(4, struct.pack(">I", len(meta)) + meta + preview[1], self.client_id)
        self.e.send(
            "progress",
            {"value": value, "max": total, "prompt_id": self.prompt_id, "node": nid},
            self.client_id,
        )
        if preview is not None and not self._supports_metadata():
            image_type = 2 if preview[0] == "PNG" else 1
            self.e.send(1, struct.pack(">I", image_type) + preview[1], self.client_id)

    def _update(
        self, bar: _ProgressBar, nid: str, value: int, total: int, preview: Preview | None
    ) -> None:
        """ComfyUI's throttled ``ProgressBar.update_absolute``."""
        now = time.perf_counter()
        if (
            preview is not None
            or bar.last_value < 0
            or value >= total
            or (
                now - bar.last_time >= THROTTLE_SECONDS
                and (value - max(0, bar.last_value)) / total * 100 >= THROTTLE_PERCENT
            )
        ):
            self._hook(nid, value, total, preview)
            bar.last_value, bar.last_time = value, now

    async def _send_websocket_images(self, nid: str, images: FImage, seconds: float) -> None:
        """``SaveImageWebsocket``: each image of the batch as a PNG through the progress hook
        (``update_absolute(i, batch, ("PNG", image, None))`` for i = 0…batch-1)."""
        bar = _ProgressBar()
        for i, png in enumerate(websocket_pngs(images)):
            await self._sleep(seconds / images.batch)
            self._update(bar, nid, i, images.batch, ("PNG", png))

    async def _sleep(self, seconds: float) -> None:
        if self.e.interrupt.is_set():
            raise Interrupted
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.e.interrupt.wait(), seconds)
            raise Interrupted

    # ------------------------------------------------------------- signatures

    def signature(self, nid: str) -> Any:
        if nid in self._sigs:
            return self._sigs[nid]
        node = self.prompt[nid]
        cls = node["class_type"]
        node_def = self.catalog.get(cls, {})
        parts: list[Any] = [cls]
        hidden = node_def.get("input", {}).get("hidden", {})
        if any(v == "UNIQUE_ID" or v == ["UNIQUE_ID"] for v in hidden.values()):
            parts.append(("id", nid))
        if cls in WEBSOCKET_SAVERS:  # IS_CHANGED returns time.time(): never from cache
            parts.append(("changed", uuid.uuid4().hex))
        if cls in FILE_INPUTS:
            name = node["inputs"].get(FILE_INPUTS[cls][0])
            path = read_input_file(self._ctx(nid), str(name)) if isinstance(name, str) else None
            parts.append(
                hashlib.sha256(path.read_bytes()).hexdigest() if path and path.is_file() else None
            )
        for key in sorted(node["inputs"]):
            v = node["inputs"][key]
            if _is_link(v) and v[0] in self.prompt:
                parts.append((key, "link", self.signature(v[0]), v[1]))
            else:
                parts.append((key, json.dumps(v, sort_keys=True, default=str)))
        self._sigs[nid] = sig = tuple(parts)
        return sig

    def _ctx(self, nid: str) -> NodeContext:
        cls = self.prompt[nid]["class_type"]
        return NodeContext(
            nid, cls, self.catalog.get(cls, {}), self.prompt, self.extra, self.fake.dirs
        )

    # -------------------------------------------------------------- execution

    async def execute(self) -> None:
        e, fake = self.e, self.fake
        e.interrupt.clear()
        e.client_id = self.client_id
        record = ExecutionRecord(self.prompt_id, self.client_id, self.number, time.monotonic())
        fake.executions.append(record)
        if fake.duration_for is not None:
            self.extra_seconds = float(fake.duration_for(self.prompt) or 0.0)
        self.add_message("execution_start", {"prompt_id": self.prompt_id})
        cached = [nid for nid in self.prompt if self.signature(nid) in e.cache]
        record.cached = list(cached)
        self.add_message("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id})
        plan = _ExecutionList(self, cached_ids=set(cached))
        for nid in self.outputs:
            plan.add_node(nid)
        outcome = "success"
        while plan.pending:
            nid = plan.pick()
            error = await self._execute_node(nid)
            if error is not None:
                outcome = "interrupted" if error.get("interrupted") else "error"
                self.success = False
                node_id = error["node_id"]
                mes: dict[str, Any] = {
                    "prompt_id": self.prompt_id,
                    "node_id": node_id,
                    "node_type": self.prompt[node_id]["class_type"],
                    "executed": list(self.executed),
                }
                if outcome == "interrupted":
                    self.add_message("execution_interrupted", mes, broadcast=True)
                else:
                    mes.update(
                        exception_message=error["exception_message"],
                        exception_type=error["exception_type"],
                        traceback=error["traceback"],
                        current_inputs=error["current_inputs"],
                        current_outputs=list(reversed(list(self.prompt))),
                    )
                    self.add_message("execution_error", mes)
                break
            plan.complete(nid)
        else:
            for nid in self.prompt:
                if nid in self.executed or not self.catalog.get(
                    self.prompt[nid]["class_type"], {}
                ).get("has_intermediate_output"):
                    continue
                entry = e.cache.get(self.signature(nid))
                if entry is not None:
                    self._send_cached_ui(nid, entry)
            self.add_message("execution_success", {"prompt_id": self.prompt_id})
        e.last_node_id = None
        record.executed = list(self.executed)
        record.status = outcome
        record.ended = time.monotonic()

    def _send_cached_ui(self, nid: str, entry: CacheEntry) -> None:
        if entry.ui is not None:
            self.ui_outputs[nid] = entry.ui
        if self.client_id is None:
            return
        self.e.send(
            "executed",
            {
                "node": nid,
                "display_node": nid,
                "output": (entry.ui or {}).get("output"),
                "prompt_id": self.prompt_id,
            },
            self.client_id,
        )

    def _resolve(self, nid: str) -> dict[str, Any]:
        node = self.prompt[nid]
        resolved: dict[str, Any] = {}
        for k, v in node["inputs"].items():
            outs = self._outputs_of(v[0]) if _is_link(v) else None
            if outs is not None:
                resolved[k] = outs[v[1]] if v[1] < len(outs) else None
            else:
                resolved[k] = v
        return resolved

    def _outputs_of(self, nid: str) -> tuple[Any, ...] | None:
        """What a linked node produced; one served from cache never ran, so from the cache."""
        if nid in self.values:
            return self.values[nid]
        entry = self.e.cache.get(self.signature(nid)) if nid in self.prompt else None
        return entry.outputs if entry is not None else None

    def _current_inputs(self, nid: str, resolved: dict[str, Any]) -> dict[str, list[Any]]:
        node_def = self.catalog.get(self.prompt[nid]["class_type"], {})
        out = {k: [_fmt(v)] for k, v in resolved.items()}
        if "price_badge" not in node_def:  # V1 nodes also receive their hidden inputs
            for k, kind in node_def.get("input", {}).get("hidden", {}).items():
                kind = kind[0] if isinstance(kind, list) else kind
                value = {
                    "PROMPT": self.prompt,
                    "EXTRA_PNGINFO": self.extra.get("extra_pnginfo"),
                    "UNIQUE_ID": nid,
                }.get(kind)
                out[k] = [_fmt(value)]
        return out

    async def _execute_node(self, nid: str) -> dict[str, Any] | None:
        e, fake = self.e, self.fake
        cls = self.prompt[nid]["class_type"]
        entry = e.cache.get(self.signature(nid))
        if entry is not None:
            self._send_cached_ui(nid, entry)
            self.finish_progress(nid)
            self.values[nid] = entry.outputs
            return None
        self.start_progress(nid)
        resolved = self._resolve(nid)
        if self.client_id is not None:
            e.last_node_id = nid
            e.send(
                "executing",
                {"node": nid, "display_node": nid, "prompt_id": self.prompt_id},
                self.client_id,
            )
        ctx = self._ctx(nid)
        seconds = fake.node_seconds + fake.node_seconds_by_type.get(cls, 0.0) + self.extra_seconds
        self.extra_seconds = 0.0
        try:
            if fake.hang or cls in fake.hang_node_types:
                await self._sleep(0)
                await e.interrupt.wait()
                raise Interrupted
            if cls in fake.fail_node_types:
                await self._sleep(seconds)
                spec = fake.fail_node_types
                if isinstance(spec, dict) and spec.get(cls):
                    exc_type, message = spec[cls]
                    raise NodeError(exc_type, message, [])
                target = next(
                    (v for v in resolved.values() if isinstance(v, str)), f"{cls}_{nid}.png"
                )
                raise pil_error(str(read_input_file(ctx, target)))
            steps, preview_size = progress_plan(ctx, resolved, fake.progress_steps)
            preview: Preview | None = None
            if preview_size is not None and fake.previews:
                preview = ("JPEG", media.make_jpeg(*preview_size, 0x808080))
            if cls in WEBSOCKET_SAVERS:
                await self._send_websocket_images(nid, resolved["images"], seconds)
            elif steps:
                bar = _ProgressBar()
                for i in range(steps):
                    await self._sleep(seconds / steps)
                    self._update(bar, nid, i + 1, steps, preview)
            else:
                await self._sleep(seconds)
            outputs, ui = run_node(ctx, resolved)
            if cls == "GetImageSize":
                img = resolved["image"]
                if isinstance(img, FImage):
                    text = f"width: {img.width}, height: {img.height}\n batch size: {img.batch}"
                    text = text.encode()
                    e.send(3, struct.pack(">I", len(nid.encode())) + nid.encode() + text, None)
                    # (sid None: the real GetImageSize text frame goes to every socket)
        except Interrupted:
            return {"node_id": nid, "interrupted": True}
        except NodeError as ex:
            return {
                "node_id": nid,
                "exception_message": ex.message,
                "exception_type": ex.exception_type,
                "traceback": ex.traceback,
                "current_inputs": self._current_inputs(nid, resolved),
            }
        except (KeyError, TypeError, ValueError, OSError) as ex:
            return {
                "node_id": nid,
                "exception_message": f"{ex}\n",
                "exception_type": type(ex).__name__,
                "traceback": [],
                "current_inputs": self._current_inputs(nid, resolved),
            }
        if ui:
            self.ui_outputs[nid] = {
                "meta": {
                    "node_id": nid,
                    "display_node": nid,
                    "parent_node": None,
                    "real_node_id": nid,
                },
                "output": ui,
            }
            if self.client_id is not None:
                e.send(
                    "executed",
                    {"node": nid, "display_node": nid, "output": ui, "prompt_id": self.prompt_id},
                    self.client_id,
                )
        self.values[nid] = outputs
        e.cache[self.signature(nid)] = CacheEntry(self.ui_outputs.get(nid), outputs)
        self.finish_progress(nid)
        self.executed.append(nid)
        return None

    def ui_outputs_plain(self) -> dict[str, Any]:
        return {nid: ui["output"] for nid, ui in self.ui_outputs.items()}

    def meta(self) -> dict[str, Any]:
        return {nid: ui["meta"] for nid, ui in self.ui_outputs.items()}


class _ExecutionList:
    """Dependency-ordered staging with ComfyUI's "UX friendly" pick (outputs first)."""

    def __init__(self, run: _PromptRun, cached_ids: set[str]):
        self.run = run
        self.cached = cached_ids
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, bool]] = {}

    def _is_output(self, nid: str) -> bool:
        return bool(self.run.catalog.get(self.run.prompt[nid]["class_type"], {}).get("output_node"))

    def add_node(self, root: str) -> None:
        stack, links = [root], []
        while stack:
            uid = stack.pop()
            if uid in self.pending:
                continue
            self.pending[uid] = True
            self.block_count[uid] = 0
            self.blocking[uid] = {}
            for value in self.run.prompt[uid]["inputs"].values():
                if _is_link(value) and value[0] in self.run.prompt:
                    if value[0] not in self.cached:
                        stack.append(value[0])
                    links.append((value[0], uid))
        for src, dst in links:
            if src in self.cached:
                continue
            self.add_node(src)
            if dst not in self.blocking[src]:
                self.blocking[src][dst] = True
                self.block_count[dst] += 1

    def pick(self) -> str:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        for n in ready:
            if self._is_output(n):
                return n
        for n in ready:
            if any(self._is_output(b) for b in self.blocking[n]):
                return n
        for n in ready:
            if any(self._is_output(b2) for b in self.blocking[n] for b2 in self.blocking[b]):
                return n
        return ready[0]

    def complete(self, nid: str) -> None:
        del self.pending[nid]
        for dst in self.blocking.pop(nid):
            self.block_count[dst] -= 1


# --------------------------------------------------------------------- jobs


def _prune(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _meta(extra: dict[str, Any]) -> tuple[Any, Any]:
    return extra.get("create_time"), (extra.get("extra_pnginfo") or {}).get("workflow", {}).get(
        "id"
    )


def queue_job(item: tuple, status: str) -> dict[str, Any]:
    create_time, workflow_id = _meta(item[3])
    return _prune(
        {
            "id": item[1],
            "status": status,
            "priority": item[0],
            "create_time": create_time,
            "outputs_count": 0,
            "previewable_outputs_count": 0,
            "workflow_id": workflow_id,
        }
    )


_TEXT_EXT = (".txt", ".md", ".json")
_3D_EXT = (".obj", ".fbx", ".gltf", ".glb", ".usdz")
_PREVIEWABLE = {"images", "video", "audio", "3d", "text"}


def _previewable(media_type: str, item: dict[str, Any]) -> bool:
    fmt = item.get("format", "") or ""
    name = str(item.get("filename", "")).lower()
    return (
        media_type in _PREVIEWABLE
        or fmt.startswith(("video/", "audio/"))
        or name.endswith(_3D_EXT)
        or name.endswith(_TEXT_EXT)
    )


def _summary(outputs: dict[str, Any]) -> tuple[int, int, dict[str, Any] | None]:
    count = previewable = 0
    preview = fallback = text_file = text = None
    for node_id, node_out in outputs.items():
        if not isinstance(node_out, dict):
            continue
        for media_type, items in node_out.items():
            if media_type == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, str) and item.lower().endswith(_3D_EXT):
                    item = {"filename": item, "type": "output", "subfolder": "", "mediaType": "3d"}
                if not isinstance(item, dict):
                    if media_type == "text" and preview is None and text is None:
                        value = str(item)
                        t = {"content": value[:1024]} | (
                            {"truncated": True} if len(value) > 1024 else {}
                        )
                        text = {**t, "nodeId": node_id, "mediaType": media_type}
                    continue
                count += 1
                if _previewable(media_type, item):
                    previewable += 1
                if preview is not None or not _previewable(media_type, item):
                    continue
                enriched = {**item, "nodeId": node_id}
                enriched.setdefault("mediaType", media_type)
                if media_type == "text" or str(item.get("filename", "")).lower().endswith(
                    _TEXT_EXT
                ):
                    text_file = text_file or enriched
                elif item.get("type") == "output":
                    preview = enriched
                elif fallback is None:
                    fallback = enriched
    return count, previewable, preview or fallback or text_file or text


def history_job(
    prompt_id: str, entry: dict[str, Any], include_outputs: bool = False
) -> dict[str, Any]:
    number, _, prompt, extra, _ = entry["prompt"]
    create_time, workflow_id = _meta(extra)
    status = entry.get("status") or {}
    start = end = error = None
    interrupted = False
    for name, data in status.get("messages", []):
        if name == "execution_start":
            start = data.get("timestamp")
        elif name in ("execution_success", "execution_error", "execution_interrupted"):
            end = data.get("timestamp")
            error = data if name == "execution_error" else error
            interrupted = interrupted or name == "execution_interrupted"
    state = {"success": "completed", "error": "cancelled" if interrupted else "failed"}.get(
        status.get("status_str"), "completed"
    )
    count, previewable, preview = _summary(entry.get("outputs", {}))
    job = _prune(
        {
            "id": prompt_id,
            "status": state,
            "priority": number,
            "create_time": create_time,
            "execution_start_time": start,
            "execution_end_time": end,
            "execution_error": error,
            "outputs_count": count,
            "previewable_outputs_count": previewable,
            "preview_output": preview,
            "workflow_id": workflow_id,
        }
    )
    if include_outputs:
        job["outputs"] = copy.deepcopy(entry.get("outputs", {}))
        job["execution_status"] = status
        job["workflow"] = {"prompt": prompt, "extra_data": extra}
    return job


def new_prompt_id() -> str:
    return str(uuid.uuid4())
