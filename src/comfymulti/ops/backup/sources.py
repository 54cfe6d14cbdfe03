"""What a backup set covers: the files under its root that its paths and globs select.

A live SQLite database is never read directly: it is copied with SQLite's online backup API
into a staging folder first, so the stored copy is consistent while the hub keeps writing.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from comfymulti.config import BackupSet, Settings
from comfymulti.errors import NotFound, StorageError

_SQLITE_SUFFIXES = {".db", ".sqlite", ".sqlite3"}
_SQLITE_HEADER = b"SQLite format 3\x00"
_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class SourceFile:
    rel: str  # relative to the set's root, POSIX separators
    read_from: Path  # the file itself, or its staged snapshot
    size: int
    mtime_ns: int
    mode: int
    staged: bool  # a database snapshot: read_from is a fresh copy, never cached


def get_set(settings: Settings, name: str) -> BackupSet:
    try:
        return settings.backup.sets[name]
    except KeyError:
        known = ", ".join(sorted(settings.backup.sets)) or "none"
        raise NotFound(f"no backup set {name!r} (configured: {known})") from None


def _matches(rel: str, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatchcase(rel, p) or fnmatchcase(name, p) for p in patterns)


def _is_sqlite(path: Path) -> bool:
    if path.suffix not in _SQLITE_SUFFIXES:
        return False
    with path.open("rb") as fh:
        return fh.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER


def _walk(top: Path) -> list[Path]:
    if top.is_file():
        return [top]
    found: list[Path] = []
    for folder, dirs, files in os.walk(top):
        dirs.sort()
        found += [Path(folder, f) for f in sorted(files)]
    return found


def snapshot_sqlite(source: Path, staging: Path) -> Path:
    """A consistent copy of a live database, taken with SQLite's online backup API."""
    staging.mkdir(parents=True, exist_ok=True)
    needed = source.stat().st_size + sum(
        Path(f"{source}{s}").stat().st_size for s in _SQLITE_SIDECARS
        if Path(f"{source}{s}").exists())
    free = shutil.disk_usage(staging).free
    if free < needed * 1.1 + 16 * 1024 * 1024:
        raise StorageError(f"not enough free space in {staging} to stage {source.name}: "
                           f"{needed} bytes needed, {free} free")
    target = staging / source.name
    target.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    except sqlite3.Error as exc:
        raise StorageError(f"could not snapshot the database {source}: {exc}") from exc
    finally:
        dst.close()
        src.close()
    return target


def collect(root: Path, backup_set: BackupSet, staging: Path) -> tuple[list[SourceFile], list[str]]:
    """The set's files (databases staged), and the configured paths that do not exist."""
    files: dict[str, SourceFile] = {}
    missing: list[str] = []
    databases: set[str] = set()
    for entry in backup_set.paths:
        top = root / entry
        if not top.exists():
            missing.append(entry)
            continue
        for path in _walk(top):
            rel = path.relative_to(root).as_posix()
            if backup_set.include and not _matches(rel, backup_set.include):
                continue
            if _matches(rel, backup_set.exclude) or rel in files:
                continue
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            read_from, size, staged = path, st.st_size, _is_sqlite(path)
            if staged:
                databases.add(rel)
                read_from = snapshot_sqlite(path, staging / Path(rel).parent)
                size = read_from.stat().st_size
            files[rel] = SourceFile(rel, read_from, size, st.st_mtime_ns,
                                    stat.S_IMODE(st.st_mode), staged)
    sidecars = {db + s for db in databases for s in _SQLITE_SIDECARS}
    return [f for rel, f in sorted(files.items()) if rel not in sidecars], missing
