"""Who a session cookie, API token or worker token stands for, remembered between requests.

Every participant's workspace polls the hub every few seconds, and each poll used to cost an
ORM session, a join and fresh objects just to learn that the cookie still belongs to the same
user. Now each request asks the database one cheap question — has any login ended since? —
through `hub_state.auth_epoch`, which database triggers bump on every change that can end a
login (logout, disable, password reset, removal, token revocation), whichever process made it
(migration 0004). When the counter moved, everything remembered is forgotten; so an ended
login is refused by the very next request, exactly as without the cache.

That question is asked on the event loop itself, on a connection of its own that never waits
(SQLite: one indexed read of a one-row table; in WAL mode readers never wait for writers, and
a busy timeout of 0 turns any other lock into an immediate fallback to a thread) and keeps the
GIL while it asks (`comfymulti.loopread`). Under 300
participants' polls the thread hop per request, not the read, was the cost: requests queued
for the few lookup threads for 0.6 s (median) to 5 s (p99), workers' requests among them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from comfymulti.blocking import Offload
from comfymulti.db import database_file, read_value, transaction
from comfymulti.loopread import ValueReader, open_reader

# How long a lookup is reused even when nothing ended: it also bounds how stale a user's
# role can be.
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
        self._here = _EpochReader(engine)

    async def find(self, kind: str, digest: str,
                   load: Callable[[Session], tuple[T, float] | None]) -> T | None:
        """What `lookup` answers: from memory when the epoch can be read here at once and the
        credential is remembered, else `lookup` in one of this cache's own threads."""
        epoch = self._here.read()
        if epoch is not None and (hit := self._remembered(epoch, kind, digest)) is not None:
            return hit  # type: ignore[no-any-return]
        return await self._offload(self.lookup, kind, digest, load)

    def lookup(self, kind: str, digest: str,
               load: Callable[[Session], tuple[T, float] | None]) -> T | None:
        """What credential (`kind`, `digest`) stands for — `load` gives it and until when it
        is valid, or None — remembered until a login ends anywhere. Blocking: call it in a
        worker thread."""
        epoch = self._read_epoch()  # before loading: a change after it shows up next time
        if (hit := self._remembered(epoch, kind, digest)) is not None:
            return hit  # type: ignore[no-any-return]
        now = time.time()
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

    def close(self) -> None:
        self._here.close()

    def _remembered(self, epoch: str, kind: str, digest: str) -> Any | None:
        """The remembered value if still valid at `epoch` (a newer epoch forgets all)."""
        with self._lock:
            if epoch != self._epoch:
                self._known.clear()
                self._epoch = epoch
            hit = self._known.get((kind, digest))
            return hit[0] if hit is not None and hit[1] > time.time() else None

    def _read_epoch(self) -> str:
        return str(read_value(self._engine, _EPOCH_SQL))


class _EpochReader:
    """Reads the auth epoch on the calling thread without ever waiting, nor letting go of the
    GIL (`comfymulti.loopread`): None whenever it cannot answer at once (not SQLite, the file
    locked by another process, in use by another thread, any error), and the caller asks in a
    thread instead."""

    def __init__(self, engine: Engine) -> None:
        self._path = database_file(str(engine.url)) if engine.dialect.name == "sqlite" else None
        self._reader: ValueReader | None = None
        self._lock = threading.Lock()

    def read(self) -> str | None:
        if self._path is None or not self._lock.acquire(blocking=False):
            return None
        try:
            if self._reader is None:
                self._reader = open_reader(self._path, _EPOCH_SQL)
            return self._reader.value()
        except sqlite3.Error:
            return None
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
