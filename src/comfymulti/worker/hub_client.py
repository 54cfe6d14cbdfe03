"""The worker's client for the hub's /worker/v1 API.

Transport failures and 5xx answers are retried with capped exponential backoff until the hub
answers (a hub restart is a pause, not an error). A 409 becomes LeaseLost: the hub gave the
job to someone else and this worker must drop it. 401 is fatal (token revoked or wrong).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from comfymulti.catalog.codec import catalog_hash, pack
from comfymulti.errors import (
    ComfyMultiError,
    ConfigError,
    InvalidInput,
    LeaseLost,
    NotFound,
    Unauthorized,
)
from comfymulti.protocol import (
    PREFIX,
    WORKER_ID_HEADER,
    Commands,
    EventsResponse,
    LeasedJob,
    RegisterRequest,
    RegisterResponse,
    RenewResponse,
    StoredFile,
)
from comfymulti.worker.notices import Notices, transport_problem

log = logging.getLogger("comfymulti.worker")

_RETRYABLE = (httpx.TransportError,)


class HubClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        client: httpx.AsyncClient | None = None,
        backoff_max: float = 10.0,
        ca_bundle: str | None = None,
        notices: Notices | None = None,
    ) -> None:
        self._client = client or httpx.AsyncClient(
            verify=ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True,
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
        )
        self.url = base_url.rstrip("/")
        self._base = self.url + PREFIX
        self.notices = notices or Notices(log)
        self._headers = {"Authorization": f"Bearer {token}"}
        self.backoff_max = backoff_max
        self.worker_id = ""
        self.lease_seconds = 30.0
        self.long_poll_seconds = 25.0
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True
        await self._client.aclose()

    async def _request(self, method: str, path: str, *, retry: bool = True,
                       body_factory: Callable[[], Any] | None = None,
                       timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers, WORKER_ID_HEADER: self.worker_id}
        delay = 0.1
        while True:
            if body_factory is not None:
                kwargs["content"] = body_factory()
            try:
                resp = await self._client.request(
                    method, self._base + path, headers=headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                    **kwargs)
            except _RETRYABLE as exc:
                problem = transport_problem(exc, "hub", self.url)
                if not retry or self.closed:
                    raise ComfyMultiError(problem) from exc
                self.notices.problem("hub", f"{problem}; retrying")
            else:
                if resp.status_code < 500 or not retry:
                    self.notices.resolved("hub", f"hub at {self.url} answers again")
                    return _check(resp)
                self.notices.problem("hub", f"hub at {self.url} answered {resp.status_code}; "
                                     "retrying")
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, self.backoff_max)

    async def identify(self) -> None:
        """Make sure the URL is a ComfyMulti hub (its /health), waiting while it cannot be
        reached; a URL that answers as something else (ComfyUI, a wrong path) is fatal."""
        delay = 0.1
        while True:
            try:
                resp = await self._client.get(f"{self.url}/health")
                break
            except _RETRYABLE as exc:
                self.notices.problem("hub", f"{transport_problem(exc, 'hub', self.url)}; "
                                     "retrying")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)
        self.notices.resolved("hub", f"hub at {self.url} answers")
        if _json_keys(resp) >= {"status", "db"}:
            return
        stats = await self._client.get(f"{self.url}/system_stats")
        if "system" in _json_keys(stats):
            raise ConfigError(f"the hub URL {self.url} answers like ComfyUI: are --hub and "
                              "--comfyui swapped?")
        raise ConfigError(f"{self.url} does not answer like a ComfyMulti hub (GET /health: "
                          f"{resp.status_code}); give the hub's base URL, e.g. "
                          "https://hub.example.org, without a path")

    # --- registration ----------------------------------------------------------------------

    async def register(self, name: str, catalog: dict[str, Any], *, comfyui_version: str = "",
                       gpu: str = "", vram_total: int = 0) -> RegisterResponse:
        digest = catalog_hash(catalog)
        req = RegisterRequest(name=name, comfyui_version=comfyui_version, gpu=gpu,
                              vram_total=vram_total, catalog_hash=digest)
        resp = await self._request("POST", "/register", json=req.model_dump())
        reg = RegisterResponse.model_validate(resp.json())
        self.worker_id = reg.worker_id
        self.lease_seconds = reg.lease_seconds
        self.long_poll_seconds = reg.long_poll_seconds
        if reg.catalog_needed:
            await self._request("PUT", f"/catalog/{digest}", content=pack(catalog))
        return reg

    # --- work ------------------------------------------------------------------------------

    async def lease(self, wait: float) -> LeasedJob | None:
        resp = await self._request("POST", "/lease", params={"wait": wait},
                                   timeout=wait + 30.0)
        return None if resp.status_code == 204 else LeasedJob.model_validate(resp.json())

    async def renew(self, leases: dict[str, str]) -> RenewResponse:
        resp = await self._request("POST", "/renew", json={"leases": leases})
        return RenewResponse.model_validate(resp.json())

    async def commands(self, wait: float, known: str = "") -> Commands:
        resp = await self._request("GET", "/commands", params={"wait": wait, "known": known},
                                   timeout=wait + 30.0)
        return Commands.model_validate(resp.json())

    async def drain(self) -> None:
        await self._request("POST", "/drain")

    async def events(self, job_id: str, lease_id: str,
                     events: list[dict[str, Any]]) -> EventsResponse:
        resp = await self._request("POST", f"/jobs/{job_id}/events",
                                   json={"lease_id": lease_id, "events": events})
        return EventsResponse.model_validate(resp.json())

    async def preview(self, job_id: str, lease_id: str, frame: bytes, node: str = "") -> None:
        """A live frame of `node`; the hub drops it if ComfyUI has moved on to another node
        by the time it arrives (frames travel apart from the ordered events)."""
        await self._request("POST", f"/jobs/{job_id}/preview",
                            params={"lease_id": lease_id, "node": node},
                            content=frame, retry=False)

    async def download_input(self, job_id: str, lease_id: str, filename: str,
                             subfolder: str = "", type: str = "input") -> bytes:
        resp = await self._request("GET", f"/jobs/{job_id}/inputs", params={
            "lease_id": lease_id, "filename": filename, "subfolder": subfolder, "type": type})
        return resp.content

    async def upload_output(self, job_id: str, lease_id: str, *, key: str, node_id: str,
                            filename: str, subfolder: str, type: str,
                            body: Callable[[], AsyncIterator[bytes] | bytes]) -> StoredFile:
        """Stream one file; `body` makes a fresh stream for each try (so retries work)."""
        resp = await self._request(
            "PUT", f"/jobs/{job_id}/outputs", body_factory=body,
            params={"lease_id": lease_id, "key": key, "node_id": node_id,
                    "filename": filename, "subfolder": subfolder, "type": type},
            timeout=600.0)
        return StoredFile.model_validate(resp.json())

    async def complete(self, job_id: str, lease_id: str, status: str,
                       error: dict[str, Any] | None = None,
                       events: list[dict[str, Any]] | None = None) -> str:
        """End the job; `events` (its last ones) are stored first, in the same transaction."""
        resp = await self._request("POST", f"/jobs/{job_id}/complete",
                                   json={"lease_id": lease_id, "status": status, "error": error,
                                         "events": events or []})
        return str(resp.json()["state"])

    async def release(self, job_id: str, lease_id: str) -> str:
        resp = await self._request("POST", f"/jobs/{job_id}/release",
                                   json={"lease_id": lease_id})
        return str(resp.json()["state"])


def _json_keys(resp: httpx.Response) -> set[str]:
    try:
        body = resp.json()
    except ValueError:
        return set()
    return set(body) if isinstance(body, dict) else set()


def _check(resp: httpx.Response) -> httpx.Response:
    """Turn the hub's error answers into our errors (4xx; 5xx are retried before this)."""
    if resp.status_code < 400:
        return resp
    try:
        message = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = resp.text[:200]
    if resp.status_code == 409:
        raise LeaseLost(message)
    if resp.status_code == 401:
        raise Unauthorized(message)
    if resp.status_code == 404:
        raise NotFound(message)
    if 400 <= resp.status_code < 500:
        raise InvalidInput(f"hub refused: {message}")
    raise ComfyMultiError(f"hub error {resp.status_code}: {message}")
