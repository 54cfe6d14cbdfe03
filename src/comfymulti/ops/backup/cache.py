"""The local cache that makes a run with no change cheap: no re-hashing, no re-uploading.

`hashes` maps (path, size, mtime_ns) to a SHA-256, so a file whose size and mtime did not change
is not read again; `stored` remembers which contents a destination already holds.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from pathlib import Path

_CHUNK = 1024 * 1024

# WAL without an fsync per write: a row per file must cost microseconds, not a disk flush;
# a crash of the process loses nothing, a power cut at most the last rows of a cache.
PRAGMAS = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER NOT NULL,
                                   mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stored (dest TEXT NOT NULL, sha256 TEXT NOT NULL,
                                   etag TEXT NOT NULL, PRIMARY KEY (dest, sha256));
"""


def sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def sha256_parts(path: Path, part_size: int) -> tuple[str, list[str]]:
    """One read of a big file: its SHA-256, and each part's (base64, as S3 headers want)."""
    whole, parts = hashlib.sha256(), []
    with path.open("rb", buffering=0) as fh:
        while True:
            part, left = hashlib.sha256(), part_size
            while left and (chunk := fh.read(min(left, _CHUNK))):
                whole.update(chunk)
                part.update(chunk)
                left -= len(chunk)
            if left == part_size:
                return whole.hexdigest(), parts
            parts.append(base64.b64encode(part.digest()).decode())


class Cache:
    """One SQLite file per host; used from one thread (the command's)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.executescript(PRAGMAS + _SCHEMA)

    def close(self) -> None:
        self.db.close()

    def known_hash(self, path: Path, size: int, mtime_ns: int) -> str | None:
        row = self.db.execute("SELECT sha256 FROM hashes WHERE path=? AND size=? AND mtime_ns=?",
                              (str(path), size, mtime_ns)).fetchone()
        return row[0] if row else None

    def all_hashes(self) -> dict[tuple[str, int, int], str]:
        """(path, size, mtime_ns) -> SHA-256 of every file seen: one query for a whole run."""
        rows = self.db.execute("SELECT path, size, mtime_ns, sha256 FROM hashes")
        return {(p, size, mtime): sha for p, size, mtime, sha in rows}

    def remember_hash(self, path: Path, size: int, mtime_ns: int, sha256: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)",
                        (str(path), size, mtime_ns, sha256))

    def hash_of(self, path: Path) -> str:
        """A file's SHA-256, read only if its size or mtime changed since last time."""
        st = path.stat()
        if (known := self.known_hash(path, st.st_size, st.st_mtime_ns)) is not None:
            return known
        sha = sha256_file(path)
        self.remember_hash(path, st.st_size, st.st_mtime_ns, sha)
        return sha

    def stored(self, dest: str) -> dict[str, str]:
        """sha256 -> ETag of every content this destination was seen to hold."""
        return dict(self.db.execute("SELECT sha256, etag FROM stored WHERE dest=?", (dest,)))

    def remember_stored(self, dest: str, sha256: str, etag: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO stored VALUES (?, ?, ?)", (dest, sha256, etag))

    def forget_stored(self, dest: str, shas: list[str]) -> None:
        """Contents deleted from the destination (by a prune) must be uploaded again."""
        self.db.executemany("DELETE FROM stored WHERE dest=? AND sha256=?",
                            [(dest, sha) for sha in shas])
