"""`backup run`: hash what changed, upload what the destination lacks, then write the manifest.

Hashing and uploads run on `concurrency` threads, one part in memory each; the cache and the
manifest are touched only by the calling thread.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime

from comfymulti.config import Settings
from comfymulti.errors import IntegrityError, NotFound, StorageError
from comfymulti.ops.backup import manifest
from comfymulti.ops.backup.cache import Cache, sha256_file
from comfymulti.ops.backup.manifest import Entry, Manifest
from comfymulti.ops.backup.s3 import ObjectStore
from comfymulti.ops.backup.sources import SourceFile, collect, get_set


@dataclass
class BackupReport:
    set: str
    run: str
    files: int = 0
    bytes: int = 0
    hashed_files: int = 0
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Done:
    source: SourceFile
    sha256: str
    etag: str
    hashed: bool
    uploaded: bool


def run_id() -> str:
    """A sortable, unique-enough name for a run: UTC time to the millisecond."""
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z"


def destination(store: ObjectStore, set_name: str) -> str:
    """Names the remote copy in the local cache, so another bucket is never taken as stored."""
    return f"{store.endpoint}|{store.bucket}|{store.prefix}|{set_name}"


def _store_one(store: ObjectStore, set_name: str, src: SourceFile, sha256: str | None,
               stored: dict[str, str]) -> _Done:
    hashed = sha256 is None
    sha = sha256 or sha256_file(src.read_from)
    uploaded = sha not in stored
    key = manifest.blob_key(store, set_name, sha)
    etag = store.upload_file(key, src.read_from, sha) if uploaded else stored[sha]
    if (hashed or uploaded) and not src.staged:
        st = src.read_from.stat()
        if (st.st_size, st.st_mtime_ns) != (src.size, src.mtime_ns):
            raise IntegrityError(f"{src.rel}: changed while being backed up")
    return _Done(src, sha, etag, hashed, uploaded)


def run_backup(settings: Settings, set_name: str, store: ObjectStore) -> BackupReport:
    """Back up one set; raises (and writes no manifest) if any file could not be stored."""
    backup_set = get_set(settings, set_name)
    root = settings.backup_root(backup_set)
    store.check()
    staging = settings.backup_cache_dir / "staging" / set_name
    sources, missing = collect(root, backup_set, staging)
    if not sources and len(missing) == len(backup_set.paths):
        raise NotFound(f"backup set {set_name!r}: none of its paths exist under {root}")
    report = BackupReport(set_name, run_id(), missing=missing)
    cache = Cache(settings.backup_cache_dir / "cache.sqlite")
    try:
        dest = destination(store, set_name)
        stored = cache.stored(dest)
        if (previous := manifest.read(store, set_name)) is not None:
            stored.update({e.sha256: e.etag for e in previous.files})
        done = _transfer(store, set_name, sources, cache, stored, settings.backup.concurrency)
        entries = []
        for item in done:
            src = item.source
            if item.hashed and not src.staged:
                cache.remember_hash(src.read_from, src.size, src.mtime_ns, item.sha256)
            if item.uploaded:
                cache.remember_stored(dest, item.sha256, item.etag)
                report.uploaded_files += 1
                report.uploaded_bytes += src.size
            report.hashed_files += item.hashed
            entries.append(Entry(src.rel, src.size, src.mtime_ns, src.mode, item.sha256,
                                 item.etag))
    finally:
        cache.close()
    entries.sort(key=lambda e: e.path)
    report.files, report.bytes = len(entries), sum(e.size for e in entries)
    manifest.write(store, Manifest(set_name, report.run, str(backup_set.mode), entries))
    return report


def _transfer(store: ObjectStore, set_name: str, sources: list[SourceFile], cache: Cache,
              stored: dict[str, str], concurrency: int) -> list[_Done]:
    """Hash and upload on threads. A file that fails is named; a destination that fails stops
    the run at once."""
    failures: list[str] = []
    results: list[_Done] = []
    with ThreadPoolExecutor(concurrency, thread_name_prefix="backup") as pool:
        futures = [pool.submit(_store_one, store, set_name, src, None if src.staged else
                               cache.known_hash(src.read_from, src.size, src.mtime_ns), stored)
                   for src in sources]
        for future in as_completed(futures):
            try:
                results.append(future.result())
            except (IntegrityError, OSError) as exc:
                failures.append(str(exc))
            except BaseException:
                for other in futures:
                    other.cancel()
                raise
    if failures:
        raise StorageError(f"backup {set_name!r}: {len(failures)} file(s) not stored, no "
                           f"manifest written; first: {failures[0]}")
    return results
