"""Running the hub under uvicorn, stopping promptly: on SIGTERM/SIGINT every long-poll is
answered at once (workers hold one open all the time), so shutdown never waits for them."""

from __future__ import annotations

import asyncio
import signal
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from comfymulti.hub.context import HubContext


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, hub: HubContext) -> None:
        super().__init__(config)
        self._hub = hub
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None:  # from a signal handler: hand over to the loop safely
            self._loop.call_soon_threadsafe(self._hub.queue.close)
        super().handle_exit(sig, frame)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve until SIGTERM or Ctrl-C, then stop cleanly and exit 0."""
    # proxy_headers off: uvicorn would believe X-Forwarded-For from 127.0.0.1; the hub
    # decides that itself from hub.trusted_proxies (web/access.py client_address).
    config = uvicorn.Config(app, host=host, port=port, log_config=None,
                            timeout_graceful_shutdown=5, proxy_headers=False)
    # uvicorn re-raises the signal it caught once it has shut down, with the handler that
    # was there before it started: make that a clean exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _Server(config, app.state.hub).run()
