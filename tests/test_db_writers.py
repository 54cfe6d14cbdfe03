"""Writers of one SQLite engine take turns in the process instead of racing for the file lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import event, text

from comfymulti.db import make_engine, session_factory, transaction


def test_concurrent_writers_queue_without_sqlite_busy(tmp_path: Path) -> None:
    """With SQLite's own wait turned off, a second writer during a long write fails at once
    (SQLITE_BUSY) unless the engine makes it wait its turn: it must wait, then succeed."""
    _two_writers(tmp_path)


def test_the_next_writer_starts_once_the_commit_is_done(tmp_path: Path, monkeypatch) -> None:
    """SQLAlchemy's commit event comes before the commit: a turn given back there let the
    next writer find the file still locked (a rare SQLITE_BUSY, seen once in CI). A slow
    commit makes that certain."""
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    real = SQLiteDialect_pysqlite.do_commit

    def slow_commit(self, dbapi_connection) -> None:  # type: ignore[no-untyped-def]
        time.sleep(0.2)
        real(self, dbapi_connection)

    monkeypatch.setattr(SQLiteDialect_pysqlite, "do_commit", slow_commit)
    _two_writers(tmp_path)


def _two_writers(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")

    @event.listens_for(engine, "connect")
    def _no_busy_wait(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.execute("PRAGMA busy_timeout=0")

    factory = session_factory(engine)
    with transaction(factory) as s:
        s.execute(text("CREATE TABLE t (n INTEGER)"))
    first_writing, errors, order = threading.Event(), [], []

    def slow_writer() -> None:
        with transaction(factory) as s:
            s.execute(text("INSERT INTO t VALUES (1)"))
            first_writing.set()
            time.sleep(0.3)
            order.append(1)

    def second_writer() -> None:
        first_writing.wait(5)
        try:
            with transaction(factory) as s:
                s.execute(text("SELECT count(*) FROM t")).scalar()  # reads do not wait
                s.execute(text("INSERT INTO t VALUES (2)"))
                order.append(2)
        except Exception as exc:  # the failure this test is about
            errors.append(exc)

    threads = [threading.Thread(target=slow_writer), threading.Thread(target=second_writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == [] and order == [1, 2]
    with transaction(factory) as s:
        assert s.execute(text("SELECT count(*) FROM t")).scalar() == 2
    # A write that ends in a rollback gives the turn back too.
    try:
        with transaction(factory) as s:
            s.execute(text("INSERT INTO t VALUES (3)"))
            raise RuntimeError("abandoned")
    except RuntimeError:
        pass
    with transaction(factory) as s:
        s.execute(text("INSERT INTO t VALUES (4)"))
    engine.dispose()
