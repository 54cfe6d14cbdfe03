"""Group commit: short units of write work that arrive together share one transaction.

SQLite has one writer. Under load the GPU workers' reports (event batches, output files,
completions: about six per job) each took a thread and a transaction of their own, and spent
most of their time queued for the write lock behind each other, then for a thread (load
bench: ~3 s per report, ~18 s from a job's end to its owner hearing of it). Here one thread
writes them: the units that arrive while it commits go together into its next transaction,
each in a savepoint and a session of its own, so a unit that fails undoes only its own writes
and gets its own error. What a unit must do once its writes are committed (tell sockets, wake
workers) it appends to `after`; that runs on the event loop after the commit.

Between groups the writer goes back to the event loop, which hands it the next one: in that
gap the other writers (a login's session, the other group: the queue keeps one for the
workers' reports and one for participants' submits) take their turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from comfymulti.blocking import Offload
from comfymulti.db import write_transaction

log = logging.getLogger("comfymulti.db")

T = TypeVar("T")
After = list[Callable[[], None]]
Unit = Callable[[Session, After], T]

# Units in one transaction at most (the write lock is held for the whole group).
MAX_UNITS = 64


@dataclass
class _Item:
    unit: Unit[Any]
    done: asyncio.Future[Any]
    value: Any = None
    after: After = field(default_factory=list)
    error: Exception | None = None


class GroupCommit:
    """`await group(unit)`: run `unit(session, after)` in the next group transaction."""

    def __init__(self, factory: sessionmaker[Session], most: int = MAX_UNITS) -> None:
        self._factory = factory
        self._most = most
        self._waiting: list[_Item] = []
        self._task: asyncio.Task[None] | None = None
        self._thread = Offload(1)

    async def __call__(self, unit: Unit[T]) -> T:
        item = _Item(unit, asyncio.get_running_loop().create_future())
        self._waiting.append(item)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._commits())
        return await item.done  # type: ignore[no-any-return]

    async def _commits(self) -> None:
        while self._waiting:
            group = self._waiting[:self._most]
            del self._waiting[:self._most]
            try:
                await self._thread(self._run, group)
            except asyncio.CancelledError:  # the hub is stopping
                for item in group + self._waiting:
                    item.done.cancel()
                raise
            except Exception as exc:  # the transaction itself failed (e.g. busy): all of it
                for item in group:
                    item.error, item.after = exc, []
            for item in group:
                _deliver(item)

    def _run(self, group: list[_Item]) -> None:
        """The group's transaction. Units run first without savepoints: the writer waits for
        the GIL at every statement, and SAVEPOINT and RELEASE were two of a report's five. If
        a unit fails, that transaction is rolled back and the group runs again with each
        unit in a savepoint, so only the failing one is undone (units may run twice: they
        only write to the database and note after-commit actions)."""
        try:
            self._attempt(group, savepoints=False)
        except _UnitFailed:
            self._attempt(group, savepoints=True)

    def _attempt(self, group: list[_Item], savepoints: bool) -> None:
        # rollback_only: a unit's session neither commits nor opens a savepoint; its
        # rollback (on an error) rolls back the whole transaction.
        mode = "create_savepoint" if savepoints else "rollback_only"
        with write_transaction(self._factory) as conn:
            for item in group:
                item.value, item.error, item.after = None, None, []
                try:
                    with self._factory(bind=conn, join_transaction_mode=mode) as s, s.begin():
                        item.value = item.unit(s, item.after)
                except Exception as exc:
                    if not savepoints:
                        raise _UnitFailed from exc
                    item.error, item.after = exc, []


class _UnitFailed(Exception):
    """A unit failed in a group run without savepoints: run the group again with them."""


def _deliver(item: _Item) -> None:
    """After-commit actions first, then the caller's answer."""
    for action in item.after:
        try:
            action()
        except Exception:  # a notification lost; the next change sends another
            log.exception("after-commit action failed", extra={"action": "commit"})
    if item.done.done():  # the caller left; its writes stand
        return
    if item.error is None:
        item.done.set_result(item.value)
    else:
        item.done.set_exception(item.error)
