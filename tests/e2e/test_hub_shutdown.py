"""The hub stops within 2 s of SIGTERM while workers hold their long-polls open and a
participant's socket is connected, and says nothing alarming in its log while doing so."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

from comfymulti.worker.hub_client import HubClient
from tests.conftest import free_port, tiny_catalog
from tests.e2e.test_hub_queue import _wait_up

pytestmark = pytest.mark.anyio
IDLE = json.dumps({"cancel": [], "drain": False}, sort_keys=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_sigterm_with_workers_connected_stops_within_2_s(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "comfymulti.toml"
    config.write_text(f'data_dir = "data"\n[hub]\nport = {port}\n')
    run = [sys.executable, "-m", "comfymulti", "--config", str(config)]
    subprocess.run([*run, "users", "add", "carol", "--password", "pw-carol-123"], check=True,
                   capture_output=True)
    token = subprocess.run([*run, "workers", "token", "--name", "gpu"], check=True,
                           capture_output=True, text=True).stdout.strip()
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        hub = subprocess.Popen([*run, "serve"], stdout=out, stderr=subprocess.STDOUT)
    workers = [HubClient(url, token) for _ in range(3)]
    polls: list[asyncio.Task[object]] = []
    try:
        async with httpx.AsyncClient(base_url=url) as c:
            await _wait_up(c)
        for i, worker in enumerate(workers):
            await worker.register(f"gpu-{i}", tiny_catalog())
            polls.append(asyncio.create_task(worker.lease(wait=25)))
            polls.append(asyncio.create_task(worker.commands(wait=25, known=IDLE)))
        socket = await websockets.connect(
            f"ws://127.0.0.1:{port}/u/carol/ws?clientId=abc",
            additional_headers={"Authorization": "Basic Y2Fyb2w6cHctY2Fyb2wtMTIz"})
        await socket.recv()
        await asyncio.sleep(0.5)  # every long-poll is now waiting inside the hub
        start = time.monotonic()
        hub.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(hub.wait, 10)
        took = time.monotonic() - start
        await socket.close()
    finally:
        if hub.poll() is None:
            hub.kill()
        for poll in polls:
            poll.cancel()
        for worker in workers:
            await worker.aclose()
    assert code == 0
    assert took < 2.0, f"hub took {took:.1f} s to stop"
    text = log.read_text()
    for bad in ("Traceback", "CancelledError", "ERROR", "Exception"):
        assert bad not in text, text[-2000:]


async def test_half_sent_headers_are_cut_off(tmp_path: Path) -> None:
    """Slowloris: a connection that never finishes its headers is closed after the deadline,
    while the hub keeps answering everyone else."""
    port = free_port()
    config = tmp_path / "comfymulti.toml"
    config.write_text(f'data_dir = "data"\n[hub]\nport = {port}\nheader_timeout = 1.0\n')
    hub = subprocess.Popen([sys.executable, "-m", "comfymulti", "--config", str(config),
                            "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            await _wait_up(c)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await writer.drain()
            start = time.monotonic()
            assert (await c.get("/health")).status_code == 200
            closed = await asyncio.wait_for(reader.read(), 5)
            assert closed == b"" and 0.8 < time.monotonic() - start < 3
            writer.close()
    finally:
        hub.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(hub.wait, 10) == 0
