"""What a transfer killed half-way needs to resume: open multipart uploads and downloaded ranges.

Kept in the host's cache file next to the hash cache, written as each part lands (autocommit), so
a kill -9 loses at most the parts in flight. Thread-safe: parts finish on many threads.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfymulti.ops.backup.cache import PRAGMAS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (target TEXT PRIMARY KEY, sha256 TEXT NOT NULL,
                                    part_size INTEGER NOT NULL, upload_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS upload_parts (upload_id TEXT NOT NULL, number INTEGER NOT NULL,
                                         sha256 TEXT NOT NULL, etag TEXT NOT NULL,
                                         PRIMARY KEY (upload_id, number));
CREATE TABLE IF NOT EXISTS downloads (path TEXT NOT NULL, sha256 TEXT NOT NULL,
                                      part_size INTEGER NOT NULL, number INTEGER NOT NULL,
                                      PRIMARY KEY (path, sha256, part_size, number));
"""


@dataclass(frozen=True)
class OpenUpload:
    upload_id: str
    etags: dict[int, str]  # part number -> ETag of the parts known to be stored


class Journal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(PRAGMAS + _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, args: tuple[object, ...]) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def open_upload(self, target: str, sha256: str, part_size: int) -> OpenUpload | None:
        """The multipart upload begun for this object with these parts, if any."""
        rows = self._run("SELECT upload_id FROM uploads WHERE target=? AND sha256=? "
                         "AND part_size=?", (target, sha256, part_size))
        if not rows:
            return None
        upload_id = str(rows[0][0])
        parts = self._run("SELECT number, etag FROM upload_parts WHERE upload_id=?",
                          (upload_id,))
        return OpenUpload(upload_id, {int(n): str(e) for n, e in parts})

    def begin_upload(self, target: str, sha256: str, part_size: int, upload_id: str) -> None:
        self.end_upload(target)
        self._run("INSERT INTO uploads VALUES (?, ?, ?, ?)",
                  (target, sha256, part_size, upload_id))

    def part_stored(self, upload_id: str, number: int, sha256: str, etag: str) -> None:
        self._run("INSERT OR REPLACE INTO upload_parts VALUES (?, ?, ?, ?)",
                  (upload_id, number, sha256, etag))

    def end_upload(self, target: str) -> None:
        """Forget an upload that completed, was aborted or no longer exists."""
        with self._lock:
            self._db.execute("DELETE FROM upload_parts WHERE upload_id IN "
                             "(SELECT upload_id FROM uploads WHERE target=?)", (target,))
            self._db.execute("DELETE FROM uploads WHERE target=?", (target,))

    def ranges_done(self, path: Path, sha256: str, part_size: int) -> set[int]:
        rows = self._run("SELECT number FROM downloads WHERE path=? AND sha256=? "
                         "AND part_size=?", (str(path), sha256, part_size))
        return {int(r[0]) for r in rows}

    def range_done(self, path: Path, sha256: str, part_size: int, number: int) -> None:
        self._run("INSERT OR REPLACE INTO downloads VALUES (?, ?, ?, ?)",
                  (str(path), sha256, part_size, number))

    def end_download(self, path: Path) -> None:
        self._run("DELETE FROM downloads WHERE path=?", (str(path),))
