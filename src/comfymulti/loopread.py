"""One-value SQLite reads for the event loop thread, made without ever letting go of the GIL.

Python's sqlite3 module releases the GIL around each step of a statement. When the hub's other
threads are busy (the report writer, job lists, dispatch), the event loop then waits up to the
interpreter's switch interval (5 ms) to get it back, and every request waits with it. In the
load bench (300 participants, a 1,000-prompt burst) ~28,000 auth-epoch reads kept the loop
waiting 24 s in all: p50 35 µs but p99 12 ms and max 418 ms, for about 4 µs of work each.
Functions called through `ctypes.PyDLL` keep the GIL, so the same read costs the loop its 4 µs.

It has to be the very SQLite library the sqlite3 module uses: two copies of SQLite in one
process do not see each other's POSIX locks, and one copy closing its file would drop the
other's locks (https://www.sqlite.org/howtocorrupt.html, section 2.2). So the library is the
one the sqlite3 module already mapped into this process. Where there is none to find (SQLite
built into the module, no /proc), the reader falls back to the sqlite3 module, which is correct
and only slower under load.
"""

from __future__ import annotations

import ctypes
import functools
import sqlite3
from pathlib import Path
from typing import Protocol

_ROW = 100  # SQLITE_ROW
_OPEN_READWRITE = 0x2  # not SQLITE_OPEN_CREATE: a missing file is an error, not a new database


class ValueReader(Protocol):
    def value(self) -> str | None:
        """The first column of the statement's first row; None when there is none or the
        database cannot answer at once (locked, busy, any error). Never waits."""

    def close(self) -> None: ...


def open_reader(path: Path, sql: str) -> ValueReader:
    """A reader of `sql` on the SQLite file `path` that keeps the GIL when it can. Raises
    sqlite3.Error if the file cannot be opened."""
    lib = _library()
    return _HeldReader(lib, path, sql) if lib is not None else _ModuleReader(path, sql)


@functools.cache
def _library() -> ctypes.PyDLL | None:
    """The SQLite library the sqlite3 module is linked to, loaded so that its calls keep the
    GIL; None when the module has SQLite built in or the process maps cannot be read."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = {line.split()[-1] for line in maps.splitlines()
             if "/libsqlite3." in line and line.split()[-1].startswith("/")}
    if len(paths) != 1:
        return None
    lib = ctypes.PyDLL(paths.pop())
    ptr, p_ptr, text, num = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, \
        ctypes.c_int
    for name, args, result in (("sqlite3_open_v2", [text, p_ptr, num, text], num),
                               ("sqlite3_prepare_v2", [ptr, text, num, p_ptr, ptr], num),
                               ("sqlite3_step", [ptr], num),
                               ("sqlite3_column_text", [ptr, num], text),
                               ("sqlite3_reset", [ptr], num),
                               ("sqlite3_finalize", [ptr], num),
                               ("sqlite3_close_v2", [ptr], num)):
        function = getattr(lib, name)
        function.argtypes, function.restype = args, result
    return lib


class _HeldReader:
    """A connection and one prepared statement, driven through `ctypes.PyDLL`. Not
    thread-safe: one caller at a time."""

    def __init__(self, lib: ctypes.PyDLL, path: Path, sql: str) -> None:
        self._lib = lib
        self._db, self._stmt = ctypes.c_void_p(), ctypes.c_void_p()
        # busy timeout: SQLite's default of 0, so a lock answers SQLITE_BUSY at once.
        if lib.sqlite3_open_v2(str(path).encode(), ctypes.byref(self._db), _OPEN_READWRITE,
                               None) != 0:
            self.close()
            raise sqlite3.OperationalError(f"cannot open {path}")
        for statement in ("PRAGMA query_only=ON", sql):
            if lib.sqlite3_prepare_v2(self._db, statement.encode(), -1,
                                      ctypes.byref(self._stmt), None) != 0:
                self.close()
                raise sqlite3.OperationalError(f"cannot prepare {statement!r}")
            if statement is not sql:
                lib.sqlite3_step(self._stmt)
                lib.sqlite3_finalize(self._stmt)

    def value(self) -> str | None:
        try:
            if self._lib.sqlite3_step(self._stmt) != _ROW:
                return None
            found: bytes | None = self._lib.sqlite3_column_text(self._stmt, 0)  # a copy
            return None if found is None else found.decode()
        finally:
            # Ends the read transaction: a snapshot left open would pin the WAL and hide
            # later changes.
            self._lib.sqlite3_reset(self._stmt)

    def close(self) -> None:
        if self._stmt:
            self._lib.sqlite3_finalize(self._stmt)
            self._stmt = ctypes.c_void_p()
        if self._db:
            self._lib.sqlite3_close_v2(self._db)
            self._db = ctypes.c_void_p()


class _ModuleReader:
    """The same through the sqlite3 module: lets go of the GIL at every step."""

    def __init__(self, path: Path, sql: str) -> None:
        if not path.is_file():
            raise sqlite3.OperationalError(f"no database at {path}")
        self._sql = sql
        self._conn = sqlite3.connect(path, timeout=0, isolation_level=None,
                                     check_same_thread=False)
        self._conn.execute("PRAGMA query_only=ON")

    def value(self) -> str | None:
        try:
            # fetchall steps the statement to its end, which ends its read snapshot.
            rows = self._conn.execute(self._sql).fetchall()
        except sqlite3.Error:
            return None
        return str(rows[0][0]) if rows else None

    def close(self) -> None:
        self._conn.close()
