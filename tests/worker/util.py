"""Helpers for worker tests: in-process agents, prompts, waiting, a socket-cutting proxy."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from comfymulti.worker.agent import Agent
from comfymulti.worker.comfyui import ComfyUIClient
from comfymulti.worker.hub_client import HubClient


async def until(predicate: Callable[[], Any], timeout: float = 10.0,
                interval: float = 0.02) -> Any:
    """Poll a condition that no event announces (hub or ComfyUI state seen over HTTP)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def image_prompt(width: int = 64, color: int = 0, prefix: str = "t/img",
                 extra_node: str | None = None) -> dict[str, Any]:
    """EmptyImage → [extra_node] → SaveImage."""
    prompt: dict[str, Any] = {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": width, "height": 64, "batch_size": 1, "color": color}},
        "2": {"class_type": "SaveImage",
              "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }
    if extra_node:
        prompt["3"] = {"class_type": extra_node, "inputs": {"image": ["1", 0]}}
        prompt["2"]["inputs"]["images"] = ["3", 0]
    return prompt


def sharpen_prompt(width: int = 64, prefix: str = "t/sharp") -> dict[str, Any]:
    """EmptyImage → ImageSharpen → SaveImage (tests give ImageSharpen a duration or a hang)."""
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": width, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageSharpen",
              "inputs": {"image": ["1", 0], "sharpen_radius": 1, "sigma": 1.0, "alpha": 1.0}},
        "3": {"class_type": "SaveImage",
              "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


class RunningAgent:
    """An Agent running as a task of the test's loop, with its own clients."""

    def __init__(self, hub_url: str, token: str, comfy_url: str, name: str, *,
                 hub_class: type[HubClient] = HubClient, **options: Any) -> None:
        self.hub = hub_class(hub_url, token, backoff_max=0.5)
        self.comfy = ComfyUIClient(comfy_url)
        self.agent = Agent(self.hub, self.comfy, name=name, **options)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningAgent:
        self.task = asyncio.create_task(self.agent.run())
        await until(lambda: self.agent.serving or self.task.done(), timeout=20)  # type: ignore[union-attr]
        if self.task.done():
            self.task.result()
        return self

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        await self.hub.aclose()
        await self.comfy.aclose()


def new_id() -> str:
    return str(uuid.uuid4())


class CuttableProxy:
    """A TCP proxy in front of ComfyUI whose WebSocket can be cut (and kept from coming back)
    while plain HTTP keeps working: a flaky socket without a ComfyUI restart."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.block_ws = False
        self._server: asyncio.Server | None = None
        self._ws: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()

    def cut_ws(self) -> None:
        self.block_ws = True
        for writer in list(self._ws):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            head = await reader.read(65536)
            is_ws = head.startswith(b"GET /ws")
            if is_ws and self.block_ws:
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            up_writer.write(head)
            if is_ws:
                self._ws.add(writer)
                self._ws.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            for w in (writer, up_writer):
                if w is not None:
                    self._ws.discard(w)
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


class UserApi:
    """One user's view of the hub's /api/v1 (their Bearer token)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.http = httpx.AsyncClient(base_url=url, headers=headers, timeout=30)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def submit(self, prompt: dict[str, Any], **extra: Any) -> str:
        r = await self.http.post("/api/v1/jobs", json={"prompt": prompt, **extra})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def job(self, job_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"/api/v1/jobs/{job_id}/events")
        assert r.status_code == 200, r.text
        return list(r.json()["events"])

    async def cancel(self, job_id: str) -> str:
        r = await self.http.post(f"/api/v1/jobs/{job_id}/cancel")
        assert r.status_code == 200, r.text
        return str(r.json()["outcome"])

    async def state_is(self, job_id: str, *states: str) -> dict[str, Any] | None:
        job = await self.job(job_id)
        return job if job["state"] in states else None

    async def finished(self, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
        return dict(await until(lambda: self.state_is(job_id, "succeeded", "failed",
                                                      "cancelled"), timeout=timeout))
