"""Running the hub under uvicorn, stopping promptly: on SIGTERM/SIGINT every long-poll is
answered at once (workers hold one open all the time), so shutdown never waits for them."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import gc
import signal
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from comfymulti.errors import ConfigError
from comfymulti.hub.context import HubContext

# A client must finish sending a request's headers within this time, or the connection is
# closed: otherwise a few thousand half-open connections (slowloris) hold the hub's sockets.
HEADER_TIMEOUT = 15.0


class _HeaderDeadline(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline for request headers (uvicorn has none)."""

    header_timeout = HEADER_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._clear_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_deadline()
        super().connection_lost(exc)

    def _clear_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


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
            self._loop.call_soon_threadsafe(self._hub.queue.notify.close)
        super().handle_exit(sig, frame)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, taken before anything says the hub is ready: a busy port or a
    wrong address is one line with the fix, not a failure after "ready"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use (another hub still running?); stop "
                f"it, or choose another port: comfymulti serve --port {port + 1}") from None
        if exc.errno == errno.EACCES:
            raise ConfigError(f"port {port} needs root; use a port above 1023 (hub.port) and "
                              "let nginx listen on 80/443 (comfymulti deploy)") from None
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); set hub.host to "
                          "an address of this machine, e.g. 127.0.0.1") from None


# permessage-deflate on hub sockets: off. ComfyUI's messages are small JSON and binary
# images (already compressed); under load, compressing them cost 6.5-8.5 % of the hub's
# loop time (profiled, bench/load.py), time every owner's notification waits behind.
WS_DEFLATE = False

# glibc's mallopt parameter number for the mmap threshold, and the threshold we fix.
_M_MMAP_THRESHOLD, _ONE_MIB = -3, 1 << 20


def _unmap_big_buffers() -> None:
    """Keep big allocations mmapped, so freeing them returns the memory to the system.

    Every password check allocates 19 MiB (argon2). glibc raises its mmap threshold after the
    first such buffer is freed, so later ones come from the checking thread's heap and stay
    resident: measured +19 MiB per thread that ever checked a password, never given back.
    A fixed threshold turns that adaptation off. Not glibc: nothing to do."""
    libc = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(libc), "mallopt", None) if libc else None
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _ONE_MIB)


# The garbage collector's youngest-generation threshold while serving (CPython's default: 700).
GC_YOUNG = 10_000


def _collect_less() -> None:
    """Take what start-up built out of the cyclic garbage collector's sight, and collect
    young objects less often.

    Under load a request lives for seconds, through two young collections, so its objects
    reach the oldest generation and die there: full collections came every ~5 s. In
    bench/load.py that was 29 per run, each walking ~315,000 objects with the whole hub
    stopped (p50 245 ms, max 410 ms: the event loop's lag p99 of ~435 ms), 14 s of collecting
    in a 150 s run. Frozen start-up objects (modules, routes, models) are never walked again,
    and ~14x fewer young collections let far fewer objects age: one full collection per run,
    2.6 s of collecting in all, loop lag p99 234 ms. Start-up garbage is collected first, so
    freezing keeps nothing alive that would otherwise go."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


def serve(app: FastAPI, sock: socket.socket, header_timeout: float = HEADER_TIMEOUT) -> None:
    """Serve on `sock` (from `bind`) until SIGTERM or Ctrl-C, then stop cleanly and exit 0."""
    _unmap_big_buffers()
    _collect_less()
    config = server_config(app, sock, header_timeout)
    # uvicorn re-raises the signal it caught once it has shut down, with the handler that
    # was there before it started: make that a clean exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _Server(config, app.state.hub).run(sockets=[sock])


def server_config(app: FastAPI, sock: socket.socket,
                  header_timeout: float = HEADER_TIMEOUT) -> uvicorn.Config:
    """How uvicorn serves the hub on `sock`."""
    host, port = sock.getsockname()[:2]
    protocol = type("HubHttp", (_HeaderDeadline,), {"header_timeout": header_timeout})
    # Keep idle connections as long as browsers and proxies expect (nginx keeps its own 75 s);
    # uvicorn's 5 s default closes pooled connections clients are about to reuse (read errors).
    # proxy_headers off: uvicorn would believe X-Forwarded-For from 127.0.0.1; the hub
    # decides that itself from hub.trusted_proxies (web/access.py client_address). No access
    # log: the proxy in front keeps one, and a line per poll costs the hub real CPU.
    return uvicorn.Config(app, host=host, port=port, log_config=None,
                          timeout_graceful_shutdown=5, timeout_keep_alive=75,
                          http=protocol, proxy_headers=False, access_log=False,
                          ws_per_message_deflate=WS_DEFLATE)
