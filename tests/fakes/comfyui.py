"""A protocol-faithful fake of a stock ComfyUI 0.33.0 server, over real HTTP and
WebSocket (uvicorn + Starlette in a background thread, pure asyncio inside).

Test-only: production code never imports this. It imitates what the recordings in
``tests/data/comfyui/recordings`` and the measured protocol reference show:
every API route at ``/x`` and ``/api/x``; WebSocket ``status``/``feature_flags``
negotiation; per-prompt events in the recorded order (``progress_state`` →
``executing`` → progress / previews / text → ``executed`` → ``progress_state``);
prompt validation against the real 887-class catalog; the output cache (an identical
prompt is answered from cache, no new file); history and ``/api/jobs`` shapes; upload
and view rules. Outputs are real files (PNG, animated WebP, H.264 MP4, WAV bytes under
the real ``.flac`` names) in a per-instance temp directory.

Usage::

    with FakeComfyUI(models={"checkpoints": ["sd15.safetensors"]}, node_seconds=0.05) as comfy:
        httpx.post(comfy.url + "/prompt", json={"prompt": graph, "client_id": sid})

Knobs (constructor keywords, also plain attributes that tests may change at any time):

* ``models`` — folder key → file names; fills loader combos (see
  :data:`~tests.fakes.comfyui_catalog.MODEL_INPUTS`) and ``GET /models/{folder}``.
* ``node_seconds`` — simulated run time of every executed (non-cached) node;
  ``node_seconds_by_type`` adds per class type.
* ``duration_for(prompt) -> float`` — extra seconds for a prompt, spent in its first
  executed node.
* ``progress_steps`` — sampler nodes (KSampler…) report that many steps, each with a
  JPEG latent preview (binary type 4 when the client advertised
  ``supports_preview_metadata``, else type 1) unless ``previews`` is False.
  ``ColorTransfer`` always reports one (throttled) step per frame, like the real node.
  ``SaveImageWebsocket`` sends each image of its batch as a PNG frame through the same
  hook (value 0…batch-1), is never served from cache and reports no ``executed``.
* ``fail_node_types`` — class types that fail at run time with the recorded
  ``PIL.UnidentifiedImageError`` shape (a ``dict`` maps a type to
  ``(exception_type, message)`` instead).
* ``hang`` / ``hang_node_types`` — the first executed node (or nodes of those types)
  never finish until interrupted.
* ``version``, ``device_name``, ``vram_total``, ``vram_free``, ``ram_total``,
  ``ram_free`` — what ``/system_stats`` reports.

Inspection: ``executions`` (:class:`~tests.fakes.comfyui_engine.ExecutionRecord` per
prompt: ids, ``started``/``ended`` monotonic times, status, executed and cached nodes),
``uploads`` (dicts: name, subfolder, type, size, written), ``dirs`` (input/output/temp).
Both lists survive :meth:`restart` (they describe the fake's whole life).

Lifecycle: :meth:`start` binds 127.0.0.1 (port 0 → a free one, kept across
:meth:`restart`); :meth:`stop` shuts the server down; :meth:`close` (and ``__exit__``)
also deletes the temp root. :meth:`restart` drops every socket (close code 1012),
forgets queue, history, output cache and the prompt counter, wipes ``temp`` (ComfyUI
does at start) and keeps input/output files, so file counters continue.

Layout: catalog + validation in :mod:`tests.fakes.comfyui_catalog`, node behaviour in
:mod:`tests.fakes.comfyui_nodes`, queue/executor/jobs in :mod:`tests.fakes.comfyui_engine`.

Deliberately reproduced quirks: a reconnect with a known ``clientId`` takes the id
over and the old socket stops receiving anything (even broadcasts), and when the old
socket then closes, the id is dropped from the registry (the newer socket too);
deleting the last pending prompt reports ``status`` twice; ``number`` from the client
is echoed as a float; the ``GetImageSize`` text frame is broadcast to every socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fakes import media
from tests.fakes.comfyui_catalog import (
    FOLDER_ALIASES,
    MODEL_FOLDERS,
    effective_catalog,
    validate_prompt,
)
from tests.fakes.comfyui_engine import (
    SENSITIVE_KEYS,
    SERVER_FEATURES,
    Engine,
    ExecutionRecord,
    history_job,
    queue_job,
)

__all__ = ["FakeComfyUI"]

JOB_STATUSES = ["pending", "in_progress", "completed", "failed", "cancelled"]
DANGEROUS_TYPES = {
    "text/html",
    "text/javascript",
    "application/javascript",
    "text/css",
    "image/svg+xml",
    "application/xhtml+xml",
    "text/xml",
    "application/xml",
}


def _canonical_uuid(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _json(data: Any, status: int = 200) -> Response:
    return JSONResponse(data, status_code=status)


class FakeComfyUI:
    def __init__(
        self,
        *,
        models: dict[str, list[str]] | None = None,
        node_seconds: float = 0.0,
        node_seconds_by_type: dict[str, float] | None = None,
        duration_for: Callable[[dict[str, Any]], float] | None = None,
        progress_steps: int = 0,
        previews: bool = True,
        fail_node_types: set[str] | frozenset[str] | dict[str, tuple[str, str]] = frozenset(),
        hang: bool = False,
        hang_node_types: set[str] | frozenset[str] = frozenset(),
        version: str = "0.33.0",
        device_name: str = "cuda:0 NVIDIA L40S : cudaMallocAsync",
        vram_total: int = 47_697_362_944,
        vram_free: int = 46_912_028_672,
        ram_total: int = 270_000_000_000,
        ram_free: int = 250_000_000_000,
        root: str | os.PathLike[str] | None = None,
        port: int = 0,
        subgraphs: dict[str, dict[str, Any]] | None = None,
    ):
        self.models: dict[str, list[str]] = {}
        # Global subgraph blueprints, id -> {source, name, info, data} (data: a JSON string).
        self.subgraphs = dict(subgraphs or {})
        self.set_models(models or {})
        self.node_seconds = node_seconds
        self.node_seconds_by_type = dict(node_seconds_by_type or {})
        self.duration_for = duration_for
        self.progress_steps = progress_steps
        self.previews = previews
        self.fail_node_types = fail_node_types
        self.hang = hang
        self.hang_node_types = set(hang_node_types)
        self.version = version
        self.device_name = device_name
        self.vram_total, self.vram_free = vram_total, vram_free
        self.ram_total, self.ram_free = ram_total, ram_free
        self.executions: list[ExecutionRecord] = []
        self.uploads: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []  # internal failures of the fake itself
        self._own_root = root is None
        self.root = (
            Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="fake-comfyui-"))
        )
        self.dirs = {k: self.root / k for k in ("input", "output", "temp")}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        example = self.dirs["input"] / "example.png"
        if not example.exists():  # ComfyUI ships input/example.png
            example.write_bytes(media.make_png(768, 768, 0x6A8CAF))
        self._port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._engine: Engine | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/ws"

    def start(self) -> FakeComfyUI:
        if self._thread is not None:
            raise RuntimeError("already running")
        shutil.rmtree(self.dirs["temp"], ignore_errors=True)  # ComfyUI wipes temp at start
        self.dirs["temp"].mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this: like aiohttp under the real ComfyUI, no Nagle delay
        # (without it, a burst of WS frames waits ~40 ms for the client's delayed ACK).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", self._port))
        sock.listen(128)
        self._port = sock.getsockname()[1]
        self._sock = sock
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._run, name=f"fake-comfyui-{self._port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("fake ComfyUI did not start")
        if self._error is not None:
            raise RuntimeError("fake ComfyUI failed to start") from self._error
        return self

    def stop(self) -> None:
        thread, server, loop = self._thread, self._server, self._loop
        if thread is None:
            return
        if server is not None and loop is not None and not loop.is_closed():

            def _exit() -> None:
                server.should_exit = True

            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_exit)
        thread.join(15)
        self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Stop and remove the temp directory (when the fake created it)."""
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, downtime: float = 0.0) -> None:
        """Crash + restart: sockets dropped, queue/history/cache forgotten, files kept,
        same port. ``downtime`` seconds pass with the port closed."""
        self.stop()
        if downtime:
            time.sleep(downtime)
        self.start()

    def __enter__(self) -> FakeComfyUI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as ex:  # surfaced by start()
            self._error = ex
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        engine = self._engine = Engine(self)
        engine.start()
        config = uvicorn.Config(
            self._app(),
            lifespan="off",
            ws="websockets-sansio",
            http="h11",
            log_level="critical",
            access_log=False,
            timeout_graceful_shutdown=2,
            ws_ping_interval=None,
        )
        server = self._server = uvicorn.Server(config)
        assert self._sock is not None
        watcher = asyncio.create_task(self._signal_ready(server))
        try:
            await server.serve(sockets=[self._sock])
        finally:
            watcher.cancel()
            await engine.close()

    async def _signal_ready(self, server: uvicorn.Server) -> None:
        while not server.started:
            await asyncio.sleep(0.005)
        self._ready.set()

    # --------------------------------------------------------------- knobs

    def set_models(self, models: dict[str, list[str]]) -> None:
        """Replace the model lists (``object_info`` combos change accordingly)."""
        self.models = {FOLDER_ALIASES.get(k, k): sorted(v) for k, v in models.items()}

    def catalog(self) -> dict[str, Any]:
        return effective_catalog(self.models, self.dirs["input"])

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server loop (for thread-safe inspection from tests)."""
        assert self._loop is not None

        async def wrap() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(10)

    def history_ids(self) -> list[str]:
        return self._call(lambda: list(self._engine.history)) if self._engine else []

    # ----------------------------------------------------------------- app

    def _app(self) -> Starlette:
        api = [
            Route("/prompt", self._get_prompt, methods=["GET"]),
            Route("/prompt", self._post_prompt, methods=["POST"]),
            Route("/queue", self._get_queue, methods=["GET"]),
            Route("/queue", self._post_queue, methods=["POST"]),
            Route("/interrupt", self._post_interrupt, methods=["POST"]),
            Route("/free", self._post_free, methods=["POST"]),
            Route("/history", self._get_history, methods=["GET"]),
            Route("/history/{prompt_id}", self._get_history_item, methods=["GET"]),
            Route("/history", self._post_history, methods=["POST"]),
            Route("/view", self._view, methods=["GET"]),
            Route("/upload/image", self._upload, methods=["POST"]),
            Route("/object_info", self._object_info, methods=["GET"]),
            Route("/object_info/{node_class}", self._object_info_node, methods=["GET"]),
            Route("/system_stats", self._system_stats, methods=["GET"]),
            Route("/models", self._models, methods=["GET"]),
            Route("/models/{folder}", self._models_folder, methods=["GET"]),
            Route("/features", self._features, methods=["GET"]),
            Route("/global_subgraphs", self._global_subgraphs, methods=["GET"]),
            Route("/global_subgraphs/{id}", self._global_subgraph, methods=["GET"]),
            Route("/embeddings", self._embeddings, methods=["GET"]),
            Route("/extensions", self._extensions, methods=["GET"]),
        ]
        routes: list[Any] = [WebSocketRoute("/ws", self._ws)]
        routes += api + [
            Route("/api" + r.path, r.endpoint, methods=list(r.methods or [])) for r in api
        ]
        # registered as /api/jobs upstream (so there is no /jobs)
        routes += [
            Route("/api/jobs", self._jobs, methods=["GET"]),
            Route("/api/jobs/cancel", self._jobs_cancel_batch, methods=["POST"]),
            Route("/api/jobs/{job_id}", self._job, methods=["GET"]),
            Route("/api/jobs/{job_id}/cancel", self._job_cancel, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    @property
    def engine(self) -> Engine:
        assert self._engine is not None
        return self._engine

    # ---------------------------------------------------------- websocket

    async def _ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        e = self.engine
        sid = websocket.query_params.get("clientId", "")
        if sid:
            e.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        e.sockets[sid] = websocket
        e.socket_flags[sid] = {}
        try:
            e.send("status", {"status": e.queue_info(), "sid": sid}, sid)
            if e.client_id == sid and e.last_node_id is not None:
                e.send("executing", {"node": e.last_node_id}, sid)
            first = True
            while True:
                msg = await websocket.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                text = msg.get("text")
                if text is None:
                    continue
                try:
                    data = json.loads(text)
                except ValueError:
                    continue
                if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                    e.socket_flags[sid] = data.get("data", {}) or {}
                    e.send("feature_flags", dict(SERVER_FEATURES), sid)
                first = False
        except WebSocketDisconnect:
            pass
        finally:
            # Like the real server: the entry is dropped even if a newer socket took the id.
            e.sockets.pop(sid, None)
            e.socket_flags.pop(sid, None)

    # ---------------------------------------------------------- prompt/queue

    async def _get_prompt(self, request: Request) -> Response:
        return _json(self.engine.queue_info())

    async def _post_prompt(self, request: Request) -> Response:
        e = self.engine
        data = await request.json()
        if "number" in data:
            number: float = float(data["number"])
        else:
            number = e.number
            if data.get("front"):
                number = -number
            e.number += 1
        if "prompt" not in data:
            return _json(
                {
                    "error": {
                        "type": "no_prompt",
                        "message": "No prompt provided",
                        "details": "No prompt provided",
                        "extra_info": {},
                    },
                    "node_errors": {},
                },
                400,
            )
        prompt = data["prompt"]
        prompt_id = data.get("prompt_id")
        if prompt_id is None:
            prompt_id = str(uuid.uuid4())
        elif not _canonical_uuid(prompt_id):
            return _json(
                {
                    "error": {
                        "type": "invalid_prompt_id",
                        "message": "prompt_id must be a valid UUID",
                        "details": "prompt_id must be a UUID string in canonical lowercase "
                        "hyphenated form; omit it to let the server generate one",
                        "extra_info": {},
                    },
                    "node_errors": {},
                },
                400,
            )
        valid, error, outputs, node_errors = validate_prompt(
            prompt, self.catalog(), self._input_exists, data.get("partial_execution_targets")
        )
        extra = data.get("extra_data", {})
        if "client_id" in data:
            extra["client_id"] = data["client_id"]
        if "comfy_usage_source" not in extra and request.headers.get("Comfy-Usage-Source"):
            extra["comfy_usage_source"] = request.headers["Comfy-Usage-Source"]
        if not valid:
            return _json({"error": error, "node_errors": node_errors}, 400)
        sensitive = {k: extra.pop(k) for k in SENSITIVE_KEYS if k in extra}
        extra["create_time"] = int(time.time() * 1000)
        e.put((number, prompt_id, prompt, extra, outputs, sensitive))
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def _input_exists(self, name: str) -> bool:
        base = self.dirs["input"]
        for tag in ("output", "input", "temp"):
            if name.endswith(f" [{tag}]"):
                base, name = self.dirs[tag], name[: -len(tag) - 3]
        path = (base / name).resolve()
        return str(path).startswith(str(base.resolve())) and path.exists()

    async def _get_queue(self, request: Request) -> Response:
        e = self.engine
        return _json(
            {
                "queue_running": [list(i[:5]) for i in e.running.values()],
                "queue_pending": [list(i[:5]) for i in e.queue],
            }
        )

    async def _post_queue(self, request: Request) -> Response:
        e = self.engine
        data = await request.json()
        if data.get("clear"):
            e.wipe_queue()
        for pid in data.get("delete", []) if "delete" in data else []:
            e.delete_queue_item(pid)
        return Response(status_code=200)

    async def _post_interrupt(self, request: Request) -> Response:
        try:
            data = await request.json()
        except ValueError:
            data = {}
        pid = data.get("prompt_id") if isinstance(data, dict) else None
        self.engine.interrupt_if_running(pid or None)
        return Response(status_code=200)

    async def _post_free(self, request: Request) -> Response:
        data = await request.json()
        e = self.engine
        for key in ("unload_models", "free_memory"):
            if data.get(key):
                e.flags[key] = True
        if not e.running and e.flags.pop("free_memory", False):
            e.cache.clear()
        return Response(status_code=200)

    # ---------------------------------------------------------- history/jobs

    async def _get_history(self, request: Request) -> Response:
        hist = self.engine.history
        max_items = request.query_params.get("max_items")
        offset = int(request.query_params.get("offset", -1))
        limit = int(max_items) if max_items is not None else None
        if offset < 0 and limit is not None:
            offset = len(hist) - limit
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(hist.items()):
            if i >= offset:
                out[k] = v
                if limit is not None and len(out) >= limit:
                    break
        return _json(out)

    async def _get_history_item(self, request: Request) -> Response:
        pid = request.path_params["prompt_id"]
        hist = self.engine.history
        return _json({pid: hist[pid]} if pid in hist else {})

    async def _post_history(self, request: Request) -> Response:
        data = await request.json()
        e = self.engine
        if data.get("clear"):
            e.history = {}
        for pid in data.get("delete", []):
            e.history.pop(pid, None)
        return Response(status_code=200)

    async def _jobs(self, request: Request) -> Response:
        q = request.query_params
        e = self.engine
        statuses = JOB_STATUSES
        if q.get("status"):
            statuses = [s.strip().lower() for s in q["status"].split(",") if s.strip()]
            bad = [s for s in statuses if s not in JOB_STATUSES]
            if bad:
                return _json(
                    {
                        "error": f"Invalid status value(s): {', '.join(bad)}. "
                        f"Valid values: {', '.join(JOB_STATUSES)}"
                    },
                    400,
                )
        sort_by = q.get("sort_by", "created_at").lower()
        sort_order = q.get("sort_order", "desc").lower()
        if sort_by not in ("created_at", "execution_duration"):
            return _json({"error": "sort_by must be 'created_at' or 'execution_duration'"}, 400)
        if sort_order not in ("asc", "desc"):
            return _json({"error": "sort_order must be 'asc' or 'desc'"}, 400)
        limit = None
        if "limit" in q:
            try:
                limit = int(q["limit"])
            except ValueError:
                return _json({"error": "limit must be an integer"}, 400)
            if limit <= 0:
                return _json({"error": "limit must be a positive integer"}, 400)
        offset = 0
        if "offset" in q:
            try:
                offset = max(0, int(q["offset"]))
            except ValueError:
                return _json({"error": "offset must be an integer"}, 400)
        jobs: list[dict[str, Any]] = []
        if "in_progress" in statuses:
            jobs += [queue_job(i, "in_progress") for i in e.running.values()]
        if "pending" in statuses:
            jobs += [queue_job(i, "pending") for i in e.queue]
        wanted = {"completed", "failed", "cancelled"} & set(statuses)
        if wanted:
            jobs += [
                j for pid, h in e.history.items() if (j := history_job(pid, h))["status"] in wanted
            ]
        if q.get("workflow_id"):
            jobs = [j for j in jobs if j.get("workflow_id") == q["workflow_id"]]
        if sort_by == "execution_duration":

            def key(j: dict[str, Any]) -> Any:
                s, t = j.get("execution_start_time", 0), j.get("execution_end_time", 0)
                return t - s if s and t else 0
        else:

            def key(j: dict[str, Any]) -> Any:
                return j.get("create_time", 0)

        jobs.sort(key=key, reverse=sort_order == "desc")
        total = len(jobs)
        page = jobs[offset:] if offset > 0 else jobs
        if limit is not None:
            page = page[:limit]
        return _json(
            {
                "jobs": page,
                "pagination": {
                    "offset": offset,
                    "limit": limit,
                    "total": total,
                    "has_more": offset + len(page) < total,
                },
            }
        )

    async def _job(self, request: Request) -> Response:
        pid = request.path_params["job_id"]
        e = self.engine
        if pid in e.history:
            return _json(history_job(pid, e.history[pid], include_outputs=True))
        for item in e.running.values():
            if item[1] == pid:
                return _json(queue_job(item, "in_progress"))
        for item in e.queue:
            if item[1] == pid:
                return _json(queue_job(item, "pending"))
        return _json({"error": "Job not found"}, 404)

    def _cancel(self, pid: str) -> bool:
        e = self.engine
        if any(i[1] == pid for i in e.running.values()):
            return e.interrupt_if_running(pid)
        if any(i[1] == pid for i in e.queue):
            return e.delete_queue_item(pid) or e.interrupt_if_running(pid)
        return False

    async def _job_cancel(self, request: Request) -> Response:
        return _json({"cancelled": self._cancel(request.path_params["job_id"])})

    async def _jobs_cancel_batch(self, request: Request) -> Response:
        try:
            data = await request.json()
        except ValueError:
            return _json({"error": "Request body must be valid JSON"}, 400)
        ids = data.get("job_ids") if isinstance(data, dict) else None
        if not isinstance(ids, list):
            return _json({"error": "job_ids must be a list"}, 400)
        bad = [i if isinstance(i, str) else repr(i) for i in ids if not _canonical_uuid(i)]
        if bad:
            return _json({"error": "job_ids contains invalid id(s)", "invalid_ids": bad}, 400)
        results = [self._cancel(i) for i in ids]
        return _json({"cancelled": any(results)})

    # ------------------------------------------------------------- files

    async def _view(self, request: Request) -> Response:
        q = request.query_params
        if "filename" not in q:
            return Response(status_code=404)
        filename = q["filename"]
        base: Path | None = None
        for tag in ("output", "input", "temp"):
            if filename.endswith(f"[{tag}]"):
                base, filename = self.dirs[tag], filename[: -len(tag) - 3]
        if not filename:
            return Response(status_code=400)
        if filename[0] == "/" or ".." in filename:
            return Response(status_code=400)
        if base is None:
            base = self.dirs.get(q.get("type", "output"))
            if base is None:
                return Response(status_code=400)
        if "subfolder" in q:
            full = os.path.abspath(os.path.join(base, q["subfolder"]))
            if os.path.commonpath((full, str(base))) != str(base):
                return Response(status_code=403)
            base = Path(full)
        name = os.path.basename(filename)
        path = base / name
        if not path.is_file():
            return Response(status_code=404)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        safe = name.replace("\\", "\\\\").replace('"', '\\"')
        headers = {"X-Content-Type-Options": "nosniff", "Content-Disposition": f'filename="{safe}"'}
        if ctype in DANGEROUS_TYPES or ctype.endswith(("+xml", "/xml")):
            headers.update({"Vary": "Sec-Fetch-Dest", "Cache-Control": "no-store"})
            if not (ctype == "image/svg+xml" and request.headers.get("Sec-Fetch-Dest") == "image"):
                ctype = "application/octet-stream"
                headers["Content-Disposition"] = f'attachment; filename="{safe}"'
        return Response(path.read_bytes(), media_type=ctype, headers=headers)

    async def _upload(self, request: Request) -> Response:
        async with request.form() as form:
            image = form.get("image")
            if image is None or isinstance(image, str):
                return Response(status_code=400)
            data = await image.read()
            return self._store_upload(
                image.filename or "",
                data,
                str(form.get("subfolder", "")),
                str(form.get("type") or "input"),
                form.get("overwrite"),
            )

    def _store_upload(
        self, filename: str, data: bytes, subfolder: str, kind: str, overwrite: Any
    ) -> Response:
        base = self.dirs.get(kind, self.dirs["input"])
        if not filename:
            return Response(status_code=400)
        folder = os.path.join(base, os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((str(base), filepath)) != str(base):
            return Response(status_code=400)
        os.makedirs(folder, exist_ok=True)
        stem, ext = os.path.splitext(filename)
        duplicate = False
        if overwrite not in ("true", "1"):
            i = 1
            while os.path.exists(filepath):
                if Path(filepath).read_bytes() == data:
                    duplicate = True
                    break
                filename = f"{stem} ({i}){ext}"
                filepath = os.path.join(folder, filename)
                i += 1
        if not duplicate:
            Path(filepath).write_bytes(data)
        self.uploads.append(
            {
                "name": filename,
                "subfolder": subfolder,
                "type": kind,
                "size": len(data),
                "written": not duplicate,
            }
        )
        return _json({"name": filename, "subfolder": subfolder, "type": kind})

    # ------------------------------------------------------------- info

    async def _object_info(self, request: Request) -> Response:
        return _json(self.catalog())

    async def _object_info_node(self, request: Request) -> Response:
        cls = request.path_params["node_class"]
        cat = self.catalog()
        return _json({cls: cat[cls]} if cls in cat else {})

    async def _system_stats(self, request: Request) -> Response:
        return _json(
            {
                "system": {
                    "os": sys.platform,
                    "ram_total": self.ram_total,
                    "ram_free": self.ram_free,
                    "comfyui_version": self.version,
                    "required_frontend_version": "1.49.6",
                    "installed_templates_version": "0.11.44",
                    "required_templates_version": "0.11.44",
                    "comfy_package_versions": [
                        {
                            "name": "comfyui-frontend-package",
                            "installed": "1.49.6",
                            "required": "1.49.6",
                        },
                        {
                            "name": "comfyui-workflow-templates",
                            "installed": "0.11.44",
                            "required": "0.11.44",
                        },
                        {
                            "name": "comfyui-embedded-docs",
                            "installed": "0.5.10",
                            "required": "0.5.10",
                        },
                        {"name": "comfy-kitchen", "installed": "0.2.31", "required": "0.2.31"},
                        {"name": "comfy-aimdo", "installed": "0.4.13", "required": "0.4.13"},
                    ],
                    "python_version": sys.version,
                    "pytorch_version": "2.14.1+cu128",
                    "embedded_python": False,
                    "deploy_environment": "local-git",
                    "argv": ["main.py", "--listen", "127.0.0.1"],
                },
                "devices": [
                    {
                        "name": self.device_name,
                        "type": "cuda",
                        "index": 0,
                        "vram_total": self.vram_total,
                        "vram_free": self.vram_free,
                        "torch_vram_total": self.vram_total,
                        "torch_vram_free": self.vram_free,
                    }
                ],
            }
        )

    async def _models(self, request: Request) -> Response:
        return _json(MODEL_FOLDERS)

    async def _models_folder(self, request: Request) -> Response:
        folder = request.path_params["folder"]
        if folder not in MODEL_FOLDERS:
            return Response(status_code=404)
        return _json(list(self.models.get(folder, [])))

    async def _global_subgraphs(self, request: Request) -> Response:
        """Every blueprint without its `data`, as 0.33.0 lists them."""
        return _json({sid: {k: v for k, v in entry.items() if k != "data"}
                      for sid, entry in self.subgraphs.items()})

    async def _global_subgraph(self, request: Request) -> Response:
        entry = self.subgraphs.get(request.path_params["id"])
        return _json(entry) if entry is not None else Response(status_code=404)

    async def _features(self, request: Request) -> Response:
        return _json(dict(SERVER_FEATURES))

    async def _embeddings(self, request: Request) -> Response:
        return _json([os.path.splitext(n)[0] for n in self.models.get("embeddings", [])])

    async def _extensions(self, request: Request) -> Response:
        return _json([])
