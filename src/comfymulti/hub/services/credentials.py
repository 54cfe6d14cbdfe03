"""Who a session cookie, API token or worker token stands for, remembered between requests.

Every participant's workspace polls the hub every few seconds, and each poll used to cost an
ORM session, a join and fresh objects just to learn that the cookie still belongs to the same
user. Now each request asks the database one cheap question — has any login ended since? —
through `hub_state.auth_epoch`, which database triggers bump on every change that can end a
login (logout, disable, password reset, removal, token revocation), whichever process made it
(migration 0004). When the counter moved, everything remembered is forgotten; so an ended
login is refused by the very next request, exactly as without the cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from comfymulti.blocking import Offload
from comfymulti.db import read_value, transaction

# How long a lookup is reused even when nothing ended: it also bounds how stale a session's
# last_used_at (written by the lookup, at most once a minute) and a user's role can be.
REUSE_SECONDS = 60.0
MAX_ENTRIES = 20_000
_EPOCH_SQL = "SELECT value FROM hub_state WHERE key = 'auth_epoch'"

T = TypeVar("T")


class Credentials:
    """Thread-safe: request handlers look credentials up from several threads at once."""

    def __init__(self, engine: Engine, factory: sessionmaker[Session], threads: int) -> None:
        self._engine, self._factory = engine, factory
        # Its own threads: every request passes here first, and must not wait behind the
        # queue's database work (a worker's lease or upload) for a free thread, nor that
        # work behind hundreds of participants' polls.
        self._offload = Offload(threads)
        self._lock = threading.Lock()
        self._epoch: str | None = None
        self._known: dict[tuple[str, str], tuple[Any, float]] = {}

    async def find(self, kind: str, digest: str,
                   load: Callable[[Session], tuple[T, float] | None]) -> T | None:
        """`lookup`, in one of this cache's own threads."""
        return await self._offload(self.lookup, kind, digest, load)

    def lookup(self, kind: str, digest: str,
               load: Callable[[Session], tuple[T, float] | None]) -> T | None:
        """What credential (`kind`, `digest`) stands for — `load` gives it and until when it
        is valid, or None — remembered until a login ends anywhere. Blocking: call it in a
        worker thread."""
        epoch = self._read_epoch()  # before loading: a change after it shows up next time
        now = time.time()
        with self._lock:
            if epoch != self._epoch:
                self._known.clear()
                self._epoch = epoch
            hit = self._known.get((kind, digest))
            if hit is not None and hit[1] > now:
                return hit[0]  # type: ignore[no-any-return]
        with transaction(self._factory) as s:
            found = load(s)
        if found is None:
            return None
        value, valid_until = found
        with self._lock:
            if epoch == self._epoch:
                if len(self._known) >= MAX_ENTRIES:
                    self._known.clear()
                self._known[(kind, digest)] = (value, min(valid_until, now + REUSE_SECONDS))
        return value

    def _read_epoch(self) -> str:
        return str(read_value(self._engine, _EPOCH_SQL))
