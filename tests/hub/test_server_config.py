"""How `comfymulti serve` runs uvicorn, checked on a real server with a real socket."""

from __future__ import annotations

import asyncio
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
