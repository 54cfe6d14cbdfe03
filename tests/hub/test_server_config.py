"""How `comfymulti serve` runs uvicorn, checked on a real server with a real socket."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import uvicorn
import websockets

from comfymulti.hub import server
from tests.conftest import HubHarness


def test_sockets_open_without_permessage_deflate(make_hub: Callable[..., HubHarness]) -> None:
    """A client offering compression gets none: compressing every message cost the hub's loop
    6.5-8.5 % under load, for small JSON and images that are compressed already."""
    harness = make_hub()
    harness.user("alice")
    sock = server.bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    uv = uvicorn.Server(server.server_config(harness.app, sock))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    async def handshake() -> str | None:
        async with websockets.connect(f"ws://127.0.0.1:{port}/u/alice/ws",
                                      additional_headers=harness.basic("alice"),
                                      compression="deflate") as ws:
            assert ws.response is not None
            return ws.response.headers.get("Sec-WebSocket-Extensions")

    try:
        deadline = time.monotonic() + 10
        while not uv.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert asyncio.run(handshake()) is None
    finally:
        uv.should_exit = True
        thread.join(10)


def test_serving_freezes_start_up_objects_and_collects_young_ones_less_often() -> None:
    """Full garbage collections walking every start-up object paused the whole hub for
    ~250 ms every few seconds under load. Checked in a process of its own: freezing is for
    the life of the process."""
    code = """
import gc, socket
from fastapi import FastAPI
from comfymulti.hub import server
server._Server.run = lambda self, sockets: print(gc.get_freeze_count(), *gc.get_threshold())
app = FastAPI()
app.state.hub = None
server.serve(app, socket.create_server(("127.0.0.1", 0)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    frozen, young, *older = map(int, out)
    assert frozen > 10_000  # the modules, FastAPI and SQLAlchemy
    assert young == server.GC_YOUNG and older == [10, 10]  # the older ones as CPython has them
