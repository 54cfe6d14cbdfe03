"""Group commit: units of write work that arrive together share one transaction, a failing
one undoing only its own writes, with their after-commit actions run only once the group is
committed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from comfymulti.db import make_engine, session_factory, transaction
from comfymulti.errors import Unavailable
from comfymulti.group_commit import After, GroupCommit


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Engine, sessionmaker[Session], Path]]:
    path = tmp_path / "db.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    factory = session_factory(engine)
    with transaction(factory) as s:
        s.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
    yield engine, factory, path
    engine.dispose()


def _outside(path: Path) -> list[int]:
    """The rows another process would see (committed ones only)."""
    with sqlite3.connect(path) as conn:
        return [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")]


def _insert(n: int, log: list[str], check: Callable[[], None] | None = None
            ) -> Callable[[Session, After], int]:
    def unit(s: Session, after: After) -> int:
        s.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
        if check is not None:
            check()
        after.append(lambda: log.append(f"after {n}"))
        return n
    return unit


def _count_begins(engine: Engine, first_word: str = "BEGIN") -> list[str]:
    begins: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if statement.startswith(first_word):
            begins.append(statement)
    return begins


class _Gate:
    """A first unit, alone in its group, that holds the writer until the test has queued the
    others behind it, so they are all waiting when the next group starts."""

    def __init__(self) -> None:
        self.running, self.open = threading.Event(), threading.Event()

    def __call__(self, s: Session, after: After) -> str:
        self.running.set()
        self.open.wait(5)
        return "gate"

    async def queue(self, group: GroupCommit, units: list[Callable[[Session, After], object]]
                    ) -> list[object]:
        first = asyncio.ensure_future(group(self))
        while not self.running.is_set():
            await asyncio.sleep(0.005)
        rest = [asyncio.ensure_future(group(u)) for u in units]
        await asyncio.sleep(0.05)  # every call has handed its unit over
        self.open.set()
        assert await first == "gate"
        return await asyncio.gather(*rest, return_exceptions=True)


def test_units_arriving_together_share_one_transaction_and_a_failure_undoes_only_its_own(
        db: tuple[Engine, sessionmaker[Session], Path]) -> None:
    engine, factory, path = db
    begins = _count_begins(engine)
    log: list[str] = []
    group = GroupCommit(factory)

    def unseen_yet() -> None:  # unit 3 runs in the transaction that holds units 0 and 1
        assert _outside(path) == []

    def failing(s: Session, after: After) -> int:
        s.execute(text("INSERT INTO t VALUES (2)"))
        after.append(lambda: log.append("after 2"))
        raise ValueError("unit 2 refuses")

    units = [_insert(0, log), _insert(1, log), failing, _insert(3, log, unseen_yet),
             _insert(4, log)]
    answers = asyncio.run(_Gate().queue(group, units))
    assert answers[:2] == [0, 1] and answers[3:] == [3, 4]
    assert isinstance(answers[2], ValueError)
    assert _outside(path) == [0, 1, 3, 4]  # unit 2's own write undone, the rest committed
    assert log == ["after 0", "after 1", "after 3", "after 4"]  # in order, not the failed one
    # The gate's; the five without savepoints, rolled back when unit 2 fails; the five
    # again, each in a savepoint.
    assert begins == ["BEGIN IMMEDIATE"] * 3


def test_groups_are_capped_and_the_rest_go_in_the_next_in_order(
        db: tuple[Engine, sessionmaker[Session], Path]) -> None:
    engine, factory, path = db
    begins, savepoints = _count_begins(engine), _count_begins(engine, "SAVEPOINT")
    log: list[str] = []
    group = GroupCommit(factory, most=2)
    assert asyncio.run(_Gate().queue(group, [_insert(n, log) for n in range(5)])) == [
        0, 1, 2, 3, 4]
    assert _outside(path) == [0, 1, 2, 3, 4] and log == [f"after {n}" for n in range(5)]
    assert len(begins) == 1 + 3  # the gate, then 2 + 2 + 1
    assert savepoints == []  # while no unit fails, none (each statement costs the writer)


def test_a_transaction_that_cannot_start_fails_its_whole_group_and_the_next_one_works(
        db: tuple[Engine, sessionmaker[Session], Path]) -> None:
    """Another process holds the write lock: every unit of the group gets the 503 error
    (nothing half done), and once the lock is free the next group commits."""
    engine, factory, path = db

    @event.listens_for(engine, "connect")
    def _no_busy_wait(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.execute("PRAGMA busy_timeout=0")

    engine.dispose()  # reconnect with the pragma above
    log: list[str] = []
    group = GroupCommit(factory)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    async def main() -> list[object]:
        return await asyncio.gather(*(group(_insert(n, log)) for n in range(3)),
                                    return_exceptions=True)

    try:
        answers = asyncio.run(main())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert all(isinstance(a, Unavailable) for a in answers)
    assert log == [] and _outside(path) == []

    async def again() -> int:
        return await group(_insert(7, log))

    assert asyncio.run(again()) == 7
    assert _outside(path) == [7] and log == ["after 7"]
