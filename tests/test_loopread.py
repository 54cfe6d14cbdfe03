"""The event loop's one-value SQLite reads: right answers, never a wait, and the GIL kept."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from comfymulti import loopread

SQL = "SELECT value FROM hub_state WHERE key = 'auth_epoch'"


def _database(path: Path, journal: str = "wal") -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA journal_mode={journal}")
    db.execute("CREATE TABLE hub_state (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO hub_state VALUES ('auth_epoch', '7')")
    return db


def test_the_library_is_the_one_the_sqlite3_module_uses() -> None:
    """On Linux with a shared libsqlite3 (Debian's Python and pyenv builds alike), the GIL-
    keeping reader is the one in use; a second copy of SQLite would be a corruption risk."""
    lib = loopread._library()
    assert lib is not None
    mapped = {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
              if "/libsqlite3." in line}
    assert mapped == {lib._name}


def test_reads_the_value_and_sees_every_later_change(tmp_path: Path) -> None:
    db = _database(tmp_path / "hub.db")
    reader = loopread.open_reader(tmp_path / "hub.db", SQL)
    assert reader.value() == "7"
    db.execute("UPDATE hub_state SET value = '8'")
    assert reader.value() == "8"
    # No read snapshot is left open: a checkpoint can empty the whole WAL right after a read.
    assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    assert (tmp_path / "hub.db-wal").stat().st_size == 0
    db.execute("DELETE FROM hub_state")
    assert reader.value() is None  # no row
    reader.close()
    reader.close()  # twice is harmless


def test_a_locked_database_answers_none_at_once_and_the_value_after(tmp_path: Path) -> None:
    _database(tmp_path / "hub.db", journal="delete").close()
    reader = loopread.open_reader(tmp_path / "hub.db", SQL)
    holder = sqlite3.connect(tmp_path / "hub.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    assert reader.value() is None
    assert time.monotonic() - started < 0.05
    holder.execute("ROLLBACK")
    assert reader.value() == "7"
    reader.close()


def test_a_missing_file_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.Error):
        loopread.open_reader(tmp_path / "nothing.db", SQL)
    assert not (tmp_path / "nothing.db").exists()


def test_the_reader_cannot_write(tmp_path: Path) -> None:
    _database(tmp_path / "hub.db").close()
    reader = loopread.open_reader(tmp_path / "hub.db", "DELETE FROM hub_state RETURNING value")
    assert reader.value() is None  # PRAGMA query_only refuses it
    reader.close()
    with sqlite3.connect(tmp_path / "hub.db") as db:
        assert db.execute("SELECT count(*) FROM hub_state").fetchone()[0] == 1


def test_reads_do_not_wait_for_the_gil_behind_a_busy_thread(tmp_path: Path) -> None:
    """The point of the module. A thread running Python takes the GIL whenever the reader lets
    go of it, for up to the switch interval: reads through the sqlite3 module then wait about
    that long each, reads that keep the GIL do not. Both are timed in the same run, up to
    three times: on a loaded machine the OS may not run the busy thread for a whole round."""
    _database(tmp_path / "hub.db").close()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # CPython's default
    stop, spinning = threading.Event(), threading.Event()

    def spin() -> None:
        spinning.set()
        while not stop.is_set():
            sum(range(100))

    def timed(reader: loopread.ValueReader, reads: int = 60) -> float:
        started = time.perf_counter()
        for _ in range(reads):
            assert reader.value() == "7"
        reader.close()
        return time.perf_counter() - started

    busy = threading.Thread(target=spin)
    busy.start()
    rounds: list[tuple[float, float]] = []
    try:
        assert spinning.wait(5)
        while len(rounds) < 3 and not any(module > 5 * held for held, module in rounds):
            rounds.append((timed(loopread.open_reader(tmp_path / "hub.db", SQL)),
                           timed(loopread._ModuleReader(tmp_path / "hub.db", SQL))))
    finally:
        stop.set()
        busy.join()
        sys.setswitchinterval(interval)
    assert any(module > 5 * held for held, module in rounds), rounds
