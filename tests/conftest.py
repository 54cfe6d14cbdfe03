"""Factories for tests: settings, an in-process hub, a live hub on a real port, users, tokens.

Each test builds its own hub on its own SQLite file; nothing mutable is shared.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.testclient import TestClient

from comfymulti.catalog.prompt import Submission
from comfymulti.config import Settings, load_settings
from comfymulti.db import transaction
from comfymulti.hub.app import create_app
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import users, workers
from comfymulti.models import Job, User
from comfymulti.queue.jobs import Role
from comfymulti.queue.service import JobQueue
from tests.fakes.seaweedfs import SeaweedS3


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**sections: dict[str, Any]) -> Settings:
        overrides: dict[str, Any] = {"data_dir": str(tmp_path / "data")}
        overrides.update(sections)
        return load_settings(None, **overrides)

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn serving an app in a thread on a free port (real HTTP and WebSockets)."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", ws_ping_interval=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("live server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class HubHarness:
    """A hub plus helpers to make users, tokens and authenticated clients."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.ctx: HubContext = app.state.hub
        self.passwords: dict[str, str] = {}

    def user(self, name: str, role: Role = Role.PARTICIPANT) -> str:
        with transaction(self.ctx.factory) as s:
            _, pw = users.create_user(s, self.ctx.settings.data_dir, name, role)
        self.passwords[name] = pw
        return name

    def token(self, name: str) -> str:
        with transaction(self.ctx.factory) as s:
            return users.create_api_token(s, name)

    def worker_token(self, name: str = "gpu") -> str:
        with transaction(self.ctx.factory) as s:
            return workers.create_token(s, name)

    def basic(self, name: str) -> dict[str, str]:
        raw = f"{name}:{self.passwords[name]}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def bearer(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(name)}"}


@pytest.fixture
def make_hub(make_settings: Callable[..., Settings]) -> Callable[..., HubHarness]:
    def make(**sections: dict[str, Any]) -> HubHarness:
        return HubHarness(create_app(make_settings(**sections)))

    return make


@pytest.fixture
def hub(make_hub: Callable[..., HubHarness]) -> Iterator[tuple[HubHarness, TestClient]]:
    """An in-process hub and a TestClient for it (lifespan running)."""
    harness = make_hub()
    with TestClient(harness.app) as client:
        yield harness, client


@pytest.fixture
def live_hub(
    make_hub: Callable[..., HubHarness],
) -> Iterator[Callable[..., tuple[HubHarness, str]]]:
    """Factory: a hub served by uvicorn on a free port; returns (harness, base URL)."""
    servers: list[LiveServer] = []

    def start(**sections: dict[str, Any]) -> tuple[HubHarness, str]:
        harness = make_hub(**sections)
        server = LiveServer(harness.app).start()
        servers.append(server)
        return harness, server.url

    yield start
    for server in servers:
        server.stop()


def tiny_catalog(*extra_nodes: str) -> dict[str, Any]:
    """A small catalog with image nodes and one checkpoint, enough for queue tests."""
    nodes = {
        "EmptyImage": {"input": {"required": {"width": ["INT", {"default": 512}]}}},
        "SaveImage": {"input": {"required": {"images": ["IMAGE"]}}},
        "CheckpointLoaderSimple": {
            "input": {"required": {"ckpt_name": [["base.safetensors"], {}]}}
        },
    }
    for name in extra_nodes:
        nodes[name] = {"input": {}}
    return {"object_info": nodes, "models": {"checkpoints": ["base.safetensors"]}}


def simple_prompt(width: int = 64) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }


async def queued(queue: JobQueue, user: User, prompt: dict[str, Any] | None = None) -> Job:
    """Queue a prompt for `user` directly, as the submit route does once it checked it."""
    return await queue.submit(user, Submission(prompt or simple_prompt(), {}))


def submitted(queue: JobQueue, user: User) -> Job:
    """`queued`, from a test that runs outside an event loop."""
    return asyncio.run(queued(queue, user))


def slow_groups(harness: HubHarness, monkeypatch: pytest.MonkeyPatch, pause: float
                ) -> list[str]:
    """Group commits made slow by `pause` after each group, so that units arriving meanwhile
    gather; returns the list the hub's transactions' BEGIN statements are noted in."""
    from sqlalchemy import event

    from comfymulti import group_commit

    begins: list[str] = []
    event.listen(harness.ctx.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, *_a: sql.startswith("BEGIN") and begins.append(sql))
    real_run = group_commit.GroupCommit._run

    def slow_run(self: group_commit.GroupCommit, group: list[Any]) -> None:
        real_run(self, group)
        time.sleep(pause)

    monkeypatch.setattr(group_commit.GroupCommit, "_run", slow_run)
    return begins


def held_back(real: Callable[..., Any], calls: list[int], go: threading.Event
              ) -> Callable[..., Any]:
    """`real`, with each call counted in `calls` and waiting for `go` (up to 10 s) first."""
    def wrapper(*args: Any) -> Any:
        calls.append(1)
        go.wait(10)
        return real(*args)
    return wrapper


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def wait_for_worker(harness: HubHarness, timeout: float = 30.0) -> None:
    """Until a worker has registered with its catalog (it arrives with the registration)."""
    from sqlalchemy import select

    from comfymulti.models import Worker

    def registered() -> bool:
        with transaction(harness.ctx.factory) as s:
            return s.scalar(select(Worker.id).where(Worker.catalog_hash != "")) is not None

    wait_for(registered, timeout=timeout, interval=0.1)


__all__ = ["HubHarness", "LiveServer", "free_port", "httpx", "simple_prompt",
           "tiny_catalog", "wait_for"]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS `weed mini`) on loopback, one per session: here, so the
    backup tests (tests/ops) and the disaster-recovery test (tests/e2e) share it."""
    server = SeaweedS3()
    try:
        yield server
    finally:
        server.stop()
