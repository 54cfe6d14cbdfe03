"""Group read: lookups by key that arrive together share one query.

When 300 people log in at once, each login's read of its account took a thread hop and a query
of its own, and those queued for the threads for over a second (load bench); in a burst of
prompts, so did every user's queue count for their `status`. Here the keys asked for while one
read runs are read together by the next one, in one thread hop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from comfymulti.blocking import Offload

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Keys in one read at most (one query's IN list).
MAX_KEYS = 500


class GroupRead(Generic[K, V]):
    """`await group(key)`: the value `read(keys)` gives for `key`, or None if it gives none.
    `read` runs in a thread of `threads`, one group at a time; if it raises, every caller
    in its group gets that error and the next group is read afresh."""

    def __init__(self, read: Callable[[list[K]], dict[K, V]], threads: Offload,
                 most: int = MAX_KEYS) -> None:
        self._read = read
        self._threads = threads
        self._most = most
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, key: K) -> V | None:
        done: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(done)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._reads())
        return await done

    async def _reads(self) -> None:
        while self._waiting:
            keys = list(self._waiting)[:self._most]
            group = {key: self._waiting.pop(key) for key in keys}
            try:
                values = await self._threads(self._read, keys)
            except asyncio.CancelledError:  # the hub is stopping
                for futures in (*group.values(), *self._waiting.values()):
                    for done in futures:
                        done.cancel()
                raise
            except Exception as exc:
                for futures in group.values():
                    for done in futures:
                        if not done.done():
                            done.set_exception(exc)
                continue
            for key, futures in group.items():
                for done in futures:
                    if not done.done():  # the caller may have left
                        done.set_result(values.get(key))
