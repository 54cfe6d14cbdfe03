"""When things were last used, noted in memory on each request and written for all of them
at once every so often. A write per request made the requests wait for the write lock under
load (load bench: cookie checks and GPU workers' requests queued behind participants'
submits for seconds); these times only inform (sessions list, "online"), so a few seconds
late is fine."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from sqlalchemy.orm import Session

log = logging.getLogger("comfymulti.hub")

K = TypeVar("K", bound=Hashable)
Run = Callable[[Callable[[Session], None]], Awaitable[None]]


class Activity(Generic[K]):
    """Keys used since the last write; `touch(session, keys, now)` writes their time."""

    def __init__(self, what: str, touch: Callable[[Session, set[K], float], None],
                 every: float) -> None:
        self.what, self.every = what, every
        self._touch = touch
        self._used: set[K] = set()

    def note(self, key: K) -> None:
        self._used.add(key)

    async def write(self, run: Run) -> None:
        """Write the time of the keys used since the last write, in one transaction (`run`
        runs it off the loop); a failed write is tried again next time."""
        used, self._used = self._used, set()
        if not used:
            return
        now = time.time()
        try:
            await run(lambda s: self._touch(s, used, now))
        except Exception:
            self._used |= used
            raise

    async def keep_writing(self, run: Run) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.write(run)
            except Exception:  # the database is busy: next time
                log.exception("could not write when %s were used", self.what,
                              extra={"action": "activity"})
