"""`backup run`: hash what changed, upload what the destination lacks, then write the manifest.

Big files are hashed and uploaded on `concurrency` threads; small ones are read on the calling
thread into packs (see packs.py). Parts and packs share the store's `concurrency` part-sized
slots of memory. The cache and the manifest are touched only by the calling thread.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from comfymulti import backup_status
from comfymulti.config import BackupMode, BackupSet, Settings
from comfymulti.errors import ComfyMultiError, Conflict, IntegrityError, NotFound, StorageError
from comfymulti.ops.backup import manifest, packs, retention
from comfymulti.ops.backup.cache import Cache, Stored, sha256_file, sha256_parts
from comfymulti.ops.backup.journal import Journal
from comfymulti.ops.backup.manifest import Entry, Manifest
from comfymulti.ops.backup.packs import Pack, Packer
from comfymulti.ops.backup.retention import PruneReport
from comfymulti.ops.backup.s3 import ObjectStore, Progress, no_progress
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
    pruned: PruneReport | None = None


@dataclass(frozen=True)
class _Done:
    source: SourceFile
    sha256: str
    where: Stored
    hashed: bool
    uploaded: bool


def run_id() -> str:
    """A sortable, unique-enough name for a run: UTC time to the millisecond."""
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z"


def destination(store: ObjectStore, set_name: str) -> str:
    """Names the remote copy in the local cache, so another bucket is never taken as stored."""
    return f"{store.endpoint}|{store.bucket}|{store.prefix}|{set_name}"


@dataclass(frozen=True)
class _Job:
    """What every file of one run shares."""

    store: ObjectStore
    set_name: str
    stored: dict[str, Stored]  # sha256 -> where the destination holds it
    journal: Journal
    progress: Progress


def _store_one(job: _Job, src: SourceFile, sha256: str | None) -> _Done:
    hashed = sha256 is None
    part_sums = None
    if sha256 is not None:
        sha = sha256
    elif src.size > job.store.part_size:
        sha, part_sums = sha256_parts(src.read_from, job.store.part_size)
    else:
        sha = sha256_file(src.read_from)
    uploaded = sha not in job.stored
    if uploaded:
        key = manifest.blob_key(job.store, job.set_name, sha)
        where = Stored(job.store.upload_file(key, src.read_from, sha, job.journal,
                                             job.progress, part_sums))
    else:
        where = job.stored[sha]
        job.progress(src.size)
    if hashed or uploaded:
        _check_unchanged(src)
    return _Done(src, sha, where, hashed, uploaded)


def _check_unchanged(src: SourceFile) -> None:
    """The bytes stored are the file as collected: a write since then fails the file."""
    if src.staged:
        return
    st = src.read_from.stat()
    if (st.st_size, st.st_mtime_ns) != (src.size, src.mtime_ns):
        raise IntegrityError(f"{src.rel}: changed while being backed up")


def _read_small(src: SourceFile) -> bytes:
    data = src.read_from.read_bytes()
    if len(data) != src.size:
        raise IntegrityError(f"{src.rel}: changed while being backed up")
    _check_unchanged(src)
    return data


def run_backup(settings: Settings, set_name: str, store: ObjectStore,
               progress: Callable[[int], Progress] | None = None,
               prune: bool = False) -> BackupReport:
    """Back up one set; raises (and writes no manifest) if any file could not be stored.

    Snapshot sets then drop the runs their retention does not keep; mirror sets drop older
    runs only with prune. Each attempt is recorded for `backup status` and /health.
    progress(total bytes) returns the callback told of each file's bytes as they are done."""
    backup_set = get_set(settings, set_name)
    report = BackupReport(set_name, run_id())
    with _exclusive(settings.backup_cache_dir / f"{set_name}.lock", set_name):
        try:
            _back_up(settings, backup_set, store, report, progress)
            if prune or backup_set.mode == BackupMode.SNAPSHOT:
                report.pruned = _prune(settings, backup_set, store, set_name)
        except Exception as exc:
            message = exc.message if isinstance(exc, ComfyMultiError) else str(exc)
            backup_status.record(settings.data_dir, set_name, report.run, error=message)
            raise
    backup_status.record(settings.data_dir, set_name, report.run, files=report.files,
                         size=report.bytes)
    return report


@contextmanager
def _exclusive(lock: Path, set_name: str) -> Iterator[None]:
    """One run of a set at a time on this host: a prune must never meet a run's fresh blobs."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"backup set {set_name!r} is being backed up by another "
                           "`backup run`; wait for it to finish") from None
        yield


def _prune(settings: Settings, backup_set: BackupSet, store: ObjectStore, set_name: str
           ) -> PruneReport:
    found = retention.prune(store, set_name, backup_set, settings.backup.concurrency)
    cache = Cache(settings.backup_cache_dir / "cache.sqlite")
    try:
        cache.forget_stored(destination(store, set_name), found.objects_deleted)
    finally:
        cache.close()
    return found


def _back_up(settings: Settings, backup_set: BackupSet, store: ObjectStore, report: BackupReport,
             progress: Callable[[int], Progress] | None) -> None:
    set_name = report.set
    root = settings.backup_root(backup_set)
    store.check()
    staging = settings.backup_cache_dir / "staging" / set_name
    sources, report.missing = collect(root, backup_set, staging)
    if not sources and len(report.missing) == len(backup_set.paths):
        raise NotFound(f"backup set {set_name!r}: none of its paths exist under {root}")
    cache = Cache(settings.backup_cache_dir / "cache.sqlite")
    journal = Journal(cache.path)
    try:
        dest = destination(store, set_name)
        stored = cache.stored(dest)
        if (previous := manifest.read(store, set_name)) is not None:
            stored.update({e.sha256: e.stored for e in previous.files})
        told = progress(sum(s.size for s in sources)) if progress else no_progress
        job = _Job(store, set_name, stored, journal, told)
        done = _transfer(job, sources, cache, settings.backup.concurrency)
        entries = []
        with cache.batch():
            for item in done:
                src, where = item.source, item.where
                if item.hashed and not src.staged:
                    cache.remember_hash(src.read_from, src.size, src.mtime_ns, item.sha256)
                if item.uploaded:
                    cache.remember_stored(dest, item.sha256, where)
                    report.uploaded_files += 1
                    report.uploaded_bytes += src.size
                report.hashed_files += item.hashed
                entries.append(Entry(src.rel, src.size, src.mtime_ns, src.mode, item.sha256,
                                     where.etag, where.pack, where.offset))
    finally:
        journal.close()
        cache.close()
    entries.sort(key=lambda e: e.path)
    report.files, report.bytes = len(entries), sum(e.size for e in entries)
    manifest.write(store, Manifest(set_name, report.run, str(backup_set.mode), entries))


def _transfer(job: _Job, sources: list[SourceFile], cache: Cache, concurrency: int
              ) -> list[_Done]:
    """Hash and upload: big files on threads, small ones packed. A file that fails is named; a
    destination that fails stops the run at once."""
    failures: list[str] = []
    results: list[_Done] = []
    known = cache.all_hashes()
    big, small = [], []
    for src in sources:
        sha = None if src.staged else known.get((str(src.read_from), src.size, src.mtime_ns))
        if sha is not None and sha in job.stored:  # unchanged and stored: nothing to do
            job.progress(src.size)
            results.append(_Done(src, sha, job.stored[sha], False, False))
        else:
            (small if src.size <= packs.MEMBER_MAX else big).append((src, sha))
    with ThreadPoolExecutor(concurrency, thread_name_prefix="backup") as pool:
        futures = [pool.submit(_store_one, job, src, sha) for src, sha in big]
        packer = Packer(job.store, job.set_name, job.progress)
        try:
            placed = _pack(job, packer, small, results, failures)
            for future in as_completed(futures):
                try:
                    results.append(future.result())
                except (IntegrityError, OSError) as exc:
                    failures.append(str(exc))
            results += [_Done(src, sha, pack.stored(offset), hashed, True)
                        for src, sha, hashed, pack, offset in placed]
        except BaseException:
            for other in futures:  # packs already sent finish on their own
                other.cancel()
            raise
    if failures:
        raise StorageError(f"backup {job.set_name!r}: {len(failures)} file(s) not stored, no "
                           f"manifest written; first: {failures[0]}")
    return results


def _pack(job: _Job, packer: Packer, small: list[tuple[SourceFile, str | None]],
          results: list[_Done], failures: list[str]
          ) -> list[tuple[SourceFile, str, bool, Pack, int]]:
    """Read each small file once (on this thread: a few syscalls each), store what the
    destination lacks in packs; returns (file, SHA-256, hashed, pack, offset) of the packed."""
    placed = []
    for src, known in small:
        try:
            data = _read_small(src)
        except (IntegrityError, OSError) as exc:
            failures.append(str(exc))
            continue
        sha = hashlib.sha256(data).hexdigest()
        if sha in job.stored:
            job.progress(src.size)
            results.append(_Done(src, sha, job.stored[sha], sha != known, False))
        else:
            placed.append((src, sha, sha != known, *packer.place(sha, data)))
    packer.flush()
    return placed
