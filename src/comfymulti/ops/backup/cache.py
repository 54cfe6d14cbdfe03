"""The local cache that makes a run with no change cheap: no re-hashing, no re-uploading.

`hashes` maps (path, size, mtime_ns) to a SHA-256, so a file whose size and mtime did not change
is not read again; `stored` remembers which contents a destination already holds, and where.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1024 * 1024

# WAL without an fsync per write: a row per file must cost microseconds, not a disk flush;
# a crash of the process loses nothing, a power cut at most the last rows of a cache.
PRAGMAS = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
_VERSION = 2  # 2: stored contents may live in packs
_SCHEMA = """
CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER NOT NULL,
                                   mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stored (dest TEXT NOT NULL, sha256 TEXT NOT NULL,
                                   etag TEXT NOT NULL, pack TEXT NOT NULL DEFAULT '',
                                   "offset" INTEGER NOT NULL DEFAULT 0,
                                   PRIMARY KEY (dest, sha256));
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


@dataclass(frozen=True)
class Stored:
    """Where the destination holds a content: its own blob, or `pack` from `offset` on."""

    etag: str  # of the object holding it: any rewrite of that object changes it
    pack: str = ""  # the pack's SHA-256, "" for a blob
    offset: int = 0


class Cache:
    """One SQLite file per host; used from one thread (the command's)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.executescript(PRAGMAS)
        if self.db.execute("PRAGMA user_version").fetchone()[0] < _VERSION:
            # An older cache's `stored` rows lack locations; the latest manifest knows them.
            self.db.executescript(f"DROP TABLE IF EXISTS stored; PRAGMA user_version={_VERSION};")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for many rows: 5,000 files cost one commit, not 5,000."""
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

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

    def stored(self, dest: str) -> dict[str, Stored]:
        """sha256 -> where this destination was seen to hold that content."""
        rows = self.db.execute('SELECT sha256, etag, pack, "offset" FROM stored WHERE dest=?',
                               (dest,))
        return {sha: Stored(etag, pack, offset) for sha, etag, pack, offset in rows}

    def remember_stored(self, dest: str, sha256: str, where: Stored) -> None:
        self.db.execute("INSERT OR REPLACE INTO stored VALUES (?, ?, ?, ?, ?)",
                        (dest, sha256, where.etag, where.pack, where.offset))

    def forget_stored(self, dest: str, objects: list[str]) -> None:
        """Objects deleted from the destination (by a prune), named by SHA-256: the contents
        they held (a blob's own, or a pack's) must be uploaded again."""
        self.db.executemany('DELETE FROM stored WHERE dest=? AND (sha256=? AND pack=\'\' '
                            'OR pack=?)', [(dest, name, name) for name in objects])
