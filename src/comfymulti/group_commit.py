"""Group commit: short units of write work that arrive together share one transaction.

SQLite has one writer. Under load the GPU workers' reports (event batches, output files,
completions: about six per job) each took a thread and a transaction of their own, and spent
most of their time queued for the write lock behind each other, then for a thread (load
bench: ~3 s per report, ~18 s from a job's end to its owner hearing of it). Here one thread
writes them: the units that arrive while it commits go together into its next transaction,
and a unit that fails undoes only its own writes and gets its own error (see `_run`). What a
unit must do once its writes are committed (tell sockets, wake workers) it appends to
`after`; that runs on the event loop after the commit.

Between groups the writer goes back to the event loop, which hands it the next one: in that
gap the other writers take their turn (the other groups: the workers' reports, participants'
submits and logins' sessions each have one; a dispatch pass; an admin's change).
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
        """The group's transaction. Units run first in one session without savepoints: the
        writer waits for the GIL at every statement, and SAVEPOINT and RELEASE were two of a
        report's five (and a session per unit a tenth of its CPU). If a unit fails, that
        transaction is rolled back and the group runs again with each unit in a savepoint
        and a session of its own, so only the failing one is undone (units may run twice:
        they only write to the database and note after-commit actions)."""
        try:
            self._attempt(group, savepoints=False)
        except _UnitFailed:
            self._attempt(group, savepoints=True)

    def _attempt(self, group: list[_Item], savepoints: bool) -> None:
        with write_transaction(self._factory) as conn:
            if not savepoints:  # one session for the group: a unit's error fails the run
                with self._factory(bind=conn, join_transaction_mode="rollback_only") as s, \
                        s.begin():
                    for item in group:
                        item.value, item.error, item.after = None, None, []
                        try:
                            item.value = item.unit(s, item.after)
                        except Exception as exc:
                            raise _UnitFailed from exc
                return
            for item in group:
                item.value, item.error, item.after = None, None, []
                try:
                    with self._factory(bind=conn, join_transaction_mode="create_savepoint"
                                       ) as s, s.begin():
                        item.value = item.unit(s, item.after)
                except Exception as exc:
                    item.error, item.after = exc, []


class BatchCommit(GroupCommit):
    """`await batch(item)`: like GroupCommit, but a group's items are data that one function
    writes together, `write(session, items, afters)`, in a few statements for the whole
    group rather than the same few for each item: every statement holds the write lock
    through a wait for the GIL (load bench, submits: ~40 ms of lock per submit at five
    statements each). It returns one result per item, an exception for an item refused on
    its own (whose rows it must not write); raising fails the whole group."""

    def __init__(self, factory: sessionmaker[Session],
                 write: Callable[[Session, list[Any], list[After]], list[Any]],
                 most: int = MAX_UNITS) -> None:
        super().__init__(factory, most)
        self._write = write

    def _run(self, group: list[_Item]) -> None:
        afters: list[After] = [[] for _ in group]
        with write_transaction(self._factory) as conn, \
                self._factory(bind=conn, join_transaction_mode="rollback_only") as s, s.begin():
            results = self._write(s, [item.unit for item in group], afters)
        for item, result, after in zip(group, results, afters, strict=True):
            if isinstance(result, Exception):
                item.error = result
            else:
                item.value, item.after = result, after


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
