"""Blocking work kept off the event loop.

The hub's one event loop serves every socket and long-poll; a database call that waits on a
lock, or a password hash, must never run on it. `Offload` runs such work in a bounded thread
pool; `on_loop` brings a notification back to the loop from whichever thread made it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread

P = ParamSpec("P")
T = TypeVar("T")


class Offload:
    """Run a blocking function in a thread, at most `threads` at a time."""

    def __init__(self, threads: int) -> None:
        self.limiter = anyio.CapacityLimiter(threads)

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs),
                                              limiter=self.limiter)


def on_loop(loop: asyncio.AbstractEventLoop | None, fn: Callable[..., Any], *args: Any) -> None:
    """Call `fn(*args)` on `loop`: directly when already there (or when no loop is bound,
    as in the CLI), else scheduled thread-safely. Calls from one thread keep their order."""
    if loop is None or loop.is_closed():
        fn(*args)
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn(*args)
    else:
        loop.call_soon_threadsafe(fn, *args)
