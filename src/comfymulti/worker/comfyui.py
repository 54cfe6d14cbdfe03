"""Client for one stock ComfyUI (HTTP + WebSocket), as the worker drives it.

The worker has its own WebSocket `clientId` and posts every prompt with it and with the hub's
job id as `prompt_id`, so events can be routed to jobs before the POST even returns. Transport
and protocol failures become ComfyUIError here, so the agent catches one family.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from comfymulti.errors import ComfyUIError, ConfigError
from comfymulti.worker.notices import Notices, transport_problem

log = logging.getLogger("comfymulti.worker.comfyui")

# What the worker tells ComfyUI it understands: previews carry their prompt id (type 4).
CLIENT_FLAGS = {"supports_preview_metadata": True}
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
_WS_MAX_MESSAGE = 64 * 1024 * 1024


def preview_metadata(frame: bytes) -> dict[str, Any]:
    """The metadata of a type-4 binary frame (node_id, prompt_id, …); {} for other frames."""
    if len(frame) < 8 or int.from_bytes(frame[:4], "big") != 4:
        return {}
    size = int.from_bytes(frame[4:8], "big")
    try:
        meta = json.loads(frame[8:8 + size])
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


@dataclass
class Submitted:
    """The answer to POST /prompt: accepted (queued) or refused with ComfyUI's error body."""

    accepted: bool
    body: dict[str, Any]


class ComfySocket:
    """One open WebSocket to ComfyUI; `recv` gives text messages parsed, binary ones raw."""

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn

    async def recv(self) -> dict[str, Any] | bytes:
        while True:
            try:
                raw = await self._conn.recv()
            except (WebSocketException, OSError) as exc:
                raise ComfyUIError(f"ComfyUI socket closed: {exc!r}") from exc
            if isinstance(raw, bytes):
                return raw
            try:
                msg = json.loads(raw)
            except ValueError:
                log.warning("ComfyUI sent a text frame that is not JSON; ignored")
                continue
            if isinstance(msg, dict):
                return msg

    def __aiter__(self) -> ComfySocket:
        return self

    async def __anext__(self) -> dict[str, Any] | bytes:
        return await self.recv()


class ComfyUIClient:
    def __init__(self, base_url: str, *, client: httpx.AsyncClient | None = None,
                 client_id: str | None = None, notices: Notices | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.notices = notices or Notices(log)
        self.client_id = client_id or uuid.uuid4().hex
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            trust_env=False,  # ComfyUI is local: never through a proxy from the environment
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- plumbing --------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, self.base_url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise ComfyUIError(transport_problem(exc, "ComfyUI", self.base_url)) from exc

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = await self._request(method, path, **kwargs)
        _check(resp, path)
        try:
            return resp.json()
        except ValueError as exc:
            raise ComfyUIError(f"ComfyUI {path}: answer is not JSON") from exc

    # --- environment -----------------------------------------------------------------------

    async def system_stats(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/system_stats"))

    async def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until ComfyUI answers (it takes 10-60 s to start); its system_stats."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = 0.1
        while True:
            try:
                stats = await self.system_stats()
                self.notices.resolved("comfyui", f"ComfyUI at {self.base_url} answers")
                return stats
            except ComfyUIError as exc:
                await self._refuse_the_hub()
                if deadline is not None and loop.time() + delay > deadline:
                    raise ComfyUIError(f"ComfyUI at {self.base_url} did not answer in time: "
                                       f"{exc.message}") from exc
                self.notices.problem("comfyui", f"{exc.message}; waiting for it (start it, "
                                     "or let the worker do it: --launch-comfyui DIR)")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _refuse_the_hub(self) -> None:
        """The ComfyUI URL answering like the ComfyMulti hub is a mistake no wait will fix."""
        with contextlib.suppress(httpx.HTTPError, ValueError):
            body = (await self._client.get(f"{self.base_url}/health")).json()
            if isinstance(body, dict) and {"status", "db"} <= set(body):
                raise ConfigError(f"the ComfyUI URL {self.base_url} answers like the ComfyMulti "
                                  "hub: are --hub and --comfyui swapped?")

    async def object_info(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/object_info"))

    async def models(self) -> dict[str, list[str]]:
        """Model file names by folder key (checkpoints, loras, …)."""
        folders = await self._json("GET", "/models")

        async def one(folder: str) -> tuple[str, list[str]] | None:
            resp = await self._request("GET", f"/models/{folder}")
            if resp.status_code == 404:  # a folder key ComfyUI lists but does not serve
                return None
            _check(resp, f"/models/{folder}")
            return folder, sorted(str(name) for name in resp.json())

        found = await asyncio.gather(*(one(str(f)) for f in folders))
        return dict(sorted(item for item in found if item is not None))

    async def global_subgraphs(self) -> dict[str, Any]:
        """The subgraph blueprints ComfyUI offers every user, id → entry with its `data`
        (0.33.0 has 88, 4.25 MB); none from a ComfyUI without the route."""
        resp = await self._request("GET", "/global_subgraphs")
        if resp.status_code == 404:
            return {}
        _check(resp, "/global_subgraphs")

        async def one(subgraph_id: str) -> tuple[str, Any]:
            path = f"/global_subgraphs/{quote(subgraph_id, safe='')}"
            entry = await self._request("GET", path)
            _check(entry, path)
            return subgraph_id, entry.json()

        return dict(await asyncio.gather(*(one(str(i)) for i in resp.json())))

    async def catalog(self) -> dict[str, Any]:
        """What the hub matches jobs against (node definitions and model files), and the
        blueprints it passes on to participants, when there are any."""
        info, models, subgraphs = await asyncio.gather(
            self.object_info(), self.models(), self.global_subgraphs())
        catalog = {"object_info": info, "models": models}
        if subgraphs:
            catalog["subgraphs"] = subgraphs
        return catalog

    # --- prompts ---------------------------------------------------------------------------

    async def post_prompt(self, prompt: dict[str, Any], prompt_id: str,
                          extra_data: dict[str, Any] | None = None) -> Submitted:
        body = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id,
                "extra_data": {k: v for k, v in (extra_data or {}).items() if k != "client_id"}}
        resp = await self._request("POST", "/prompt", json=body)
        if resp.status_code == 400:
            try:
                refused = resp.json()
            except ValueError:
                refused = {"error": {"type": "invalid_prompt", "message": resp.text[:500]}}
            return Submitted(False, refused if isinstance(refused, dict) else {"error": refused})
        _check(resp, "/prompt")
        return Submitted(True, resp.json())

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished prompt's history entry, or None (unknown or not finished)."""
        data = await self._json("GET", f"/history/{prompt_id}")
        entry = data.get(prompt_id) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) else None

    async def job(self, prompt_id: str) -> dict[str, Any] | None:
        """The job as /api/jobs/{id} shows it, or None when ComfyUI does not know it.

        Servers older than the jobs API answer from /history and /queue instead.
        """
        resp = await self._request("GET", f"/api/jobs/{prompt_id}")
        if resp.status_code == 200:
            return dict(resp.json())
        if resp.status_code != 404:
            _check(resp, "/api/jobs")
        try:
            resp.json()  # ComfyUI's own "Job not found" JSON: the route exists
            return None
        except ValueError:
            return await self._job_from_history(prompt_id)

    async def _job_from_history(self, prompt_id: str) -> dict[str, Any] | None:
        entry = await self.history(prompt_id)
        if entry is not None:
            return {"id": prompt_id, "status": history_status(entry)}
        queue = await self._json("GET", "/queue")
        for key, status in (("queue_running", "in_progress"), ("queue_pending", "pending")):
            if any(len(item) > 1 and item[1] == prompt_id for item in queue.get(key, [])):
                return {"id": prompt_id, "status": status}
        return None

    async def forget(self, prompt_id: str) -> None:
        """Drop a prompt from ComfyUI's history (before reposting the same id)."""
        await self._json_or_empty("POST", "/history", json={"delete": [prompt_id]})

    async def remove_pending(self, prompt_id: str) -> None:
        """Take a prompt out of ComfyUI's queue if it has not started (no-op otherwise)."""
        await self._json_or_empty("POST", "/queue", json={"delete": [prompt_id]})

    async def cancel(self, prompt_id: str) -> bool:
        """Stop a prompt: interrupt it if running, dequeue it if pending."""
        resp = await self._request("POST", f"/api/jobs/{prompt_id}/cancel")
        if resp.status_code == 200:
            try:
                return bool(resp.json().get("cancelled"))
            except (ValueError, AttributeError):
                return True
        # Older servers: dequeue first, then interrupt only if it is the running one (old
        # servers ignore the prompt id of /interrupt and would stop whatever runs).
        await self.remove_pending(prompt_id)
        queue = await self._json("GET", "/queue")
        if any(len(i) > 1 and i[1] == prompt_id for i in queue.get("queue_running", [])):
            await self._json_or_empty("POST", "/interrupt", json={"prompt_id": prompt_id})
        return True

    async def _json_or_empty(self, method: str, path: str, **kwargs: Any) -> None:
        resp = await self._request(method, path, **kwargs)
        _check(resp, path)

    # --- files -----------------------------------------------------------------------------

    async def upload_input(self, data: bytes, filename: str, subfolder: str) -> dict[str, Any]:
        """Put a file into ComfyUI's input folder (overwriting); {name, subfolder, type}."""
        return dict(await self._json(
            "POST", "/upload/image", files={"image": (filename, data)},
            data={"subfolder": subfolder, "type": "input", "overwrite": "true"}))

    async def view(self, filename: str, subfolder: str = "",
                   type: str = "output") -> AsyncIterator[bytes]:
        """Stream a file from /view (never whole in memory)."""
        params = {"filename": filename, "subfolder": subfolder, "type": type}
        try:
            async with self._client.stream("GET", self.base_url + "/view", params=params,
                                           timeout=httpx.Timeout(300.0, connect=5.0)) as resp:
                if resp.status_code != 200:
                    raise ComfyUIError(f"ComfyUI /view {subfolder}/{filename} ({type}): "
                                       f"HTTP {resp.status_code}", status=resp.status_code)
                async for chunk in resp.aiter_bytes(256 * 1024):
                    yield chunk
        except httpx.HTTPError as exc:
            raise ComfyUIError(f"ComfyUI /view {filename} failed: {exc!r}") from exc

    async def view_bytes(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        return b"".join([chunk async for chunk in self.view(filename, subfolder, type)])

    # --- WebSocket -------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + "/ws",
                           f"clientId={self.client_id}", ""))

    @asynccontextmanager
    async def websocket(self, open_timeout: float = 10.0) -> AsyncIterator[ComfySocket]:
        """Connect with our clientId and send feature_flags first (as the protocol wants)."""
        try:
            conn = await connect(self.ws_url, open_timeout=open_timeout,
                                 max_size=_WS_MAX_MESSAGE, ping_interval=20, ping_timeout=20,
                                 proxy=None)
        except (WebSocketException, OSError, TimeoutError) as exc:
            raise ComfyUIError(f"ComfyUI socket at {self.ws_url} refused: {exc!r}") from exc
        try:
            try:
                await conn.send(json.dumps({"type": "feature_flags", "data": CLIENT_FLAGS}))
            except (WebSocketException, OSError) as exc:
                raise ComfyUIError(f"ComfyUI socket closed: {exc!r}") from exc
            yield ComfySocket(conn)
        finally:
            await conn.close()


def history_status(entry: dict[str, Any]) -> str:
    """A history entry's outcome in /api/jobs terms: completed, failed or cancelled."""
    status = entry.get("status") or {}
    names = [m[0] for m in status.get("messages", []) if isinstance(m, list) and m]
    if "execution_interrupted" in names:
        return "cancelled"
    if status.get("status_str") == "success" or "execution_success" in names:
        return "completed"
    return "failed"


def _check(resp: httpx.Response, path: str) -> None:
    if resp.status_code >= 400:
        raise ComfyUIError(f"ComfyUI {path}: HTTP {resp.status_code}: {resp.text[:200]}",
                           status=resp.status_code)
