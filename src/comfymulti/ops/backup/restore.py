"""`restore SET --to DIR [--tier DIR ...]`: recreate a set's root in DIR from the cheapest source.

For each file: keep a local copy that already matches the manifest; else copy from the first
tier folder (e.g. the provider's shared file system) holding a matching copy; else download (a
big file by parallel ranges, small ones with the rest of their pack in one request). Every copy
is hashed while it is written and renamed into place only if it matches.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TypeVar

from comfymulti.errors import IntegrityError, RemoteUnavailable, StorageError
from comfymulti.ops.backup import manifest, packs
from comfymulti.ops.backup.cache import Cache, sha256_file
from comfymulti.ops.backup.journal import Journal
from comfymulti.ops.backup.manifest import Entry
from comfymulti.ops.backup.s3 import ObjectStore, Progress, no_progress

LOCAL = "local"
REMOTE = "remote"
PACKED = "packed"
_CHUNK = 1024 * 1024
_T = TypeVar("_T")


@dataclass
class RestoreReport:
    set: str
    run: str
    files: int = 0
    bytes_from: dict[str, int] = field(default_factory=dict)  # local, each tier, remote
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Result:
    entry: Entry
    source: str  # LOCAL, a tier, REMOTE; or PACKED: still to fetch with its pack
    hashes: dict[Path, str]  # files hashed on the way, for the cache


def _target(to: Path, entry: Entry) -> Path:
    rel = PurePosixPath(entry.path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise IntegrityError(f"{entry.path}: unsafe path in the manifest; refused")
    return to.joinpath(*rel.parts)


def _matches(path: Path, entry: Entry, known: dict[Path, str | None],
             hashes: dict[Path, str]) -> bool:
    if path not in known:
        return False
    sha = known[path] or sha256_file(path)
    if known[path] is None:
        hashes[path] = sha
    return sha == entry.sha256


def _copy_hashing(src: BinaryIO, out: BinaryIO, progress: Progress) -> str:
    digest = hashlib.sha256()
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        out.write(chunk)
        progress(len(chunk))
    return digest.hexdigest()


@dataclass(frozen=True)
class _Job:
    """What every file of one restore shares."""

    store: ObjectStore
    set_name: str
    tiers: list[Path]
    journal: Journal
    progress: Progress


def _fetch(job: _Job, entry: Entry, tmp: Path) -> str:
    """Download a blob into tmp; a big one by parallel ranges, resuming a tmp left by a kill."""
    key = manifest.blob_key(job.store, job.set_name, entry.sha256)
    if entry.size <= job.store.part_size:
        with tmp.open("wb") as out:
            return job.store.download(key, out, job.progress)
    job.store.download_ranges(key, entry.size, entry.sha256, tmp, job.journal, job.progress)
    return sha256_file(tmp)


def _forget_ranges(job: _Job, entry: Entry, tmp: Path) -> None:
    if not entry.pack and entry.size > job.store.part_size:  # only ranged downloads are
        job.journal.end_download(tmp)                         # journaled


def _place(job: _Job, entry: Entry, dest: Path, source: str, fill: Callable[[Path], str]
           ) -> _Result:
    """fill(tmp) writes the content and returns its SHA-256; only a match is renamed to dest,
    with the manifest's mode and mtime."""
    tmp = dest.with_name(f".{dest.name}.{entry.sha256[:16]}.restoring")  # found again on resume
    try:
        if fill(tmp) != entry.sha256:
            where = "the stored copy" if source == REMOTE else f"the copy in {source}"
            raise IntegrityError(f"{entry.path}: {where} does not match the manifest's SHA-256; "
                                 "refused")
        os.chmod(tmp, entry.mode)
        os.utime(tmp, ns=(entry.mtime_ns, entry.mtime_ns))
        os.replace(tmp, dest)
    except RemoteUnavailable:
        raise  # tmp and the journal stay: the next attempt resumes
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _forget_ranges(job, entry, tmp)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise StorageError(f"disk full in {dest.parent} while restoring {entry.path}; "
                               "free space (or restore --to another disk) and rerun") from exc
        raise
    _forget_ranges(job, entry, tmp)
    return _Result(entry, source, {dest: entry.sha256})


def _restore_one(job: _Job, entry: Entry, dest: Path, known: dict[Path, str | None]) -> _Result:
    """From a matching local copy, a tier's copy or the file's own blob; a packed file no copy
    holds is left PACKED, to come with the rest of its pack."""
    hashes: dict[Path, str] = {}
    if _matches(dest, entry, known, hashes):
        job.progress(entry.size)
        return _Result(entry, LOCAL, hashes)
    for tier in job.tiers:
        candidate = _target(tier, entry)
        if _matches(candidate, entry, known, hashes):
            def copy(tmp: Path, candidate: Path = candidate) -> str:
                with candidate.open("rb") as src, tmp.open("wb") as out:
                    return _copy_hashing(src, out, job.progress)
            placed = _place(job, entry, dest, str(tier), copy)
            return _Result(entry, placed.source, {**hashes, **placed.hashes})
    if entry.pack:
        return _Result(entry, PACKED, hashes)
    placed = _place(job, entry, dest, REMOTE, lambda tmp: _fetch(job, entry, tmp))
    return _Result(entry, REMOTE, {**hashes, **placed.hashes})


def _restore_pack(job: _Job, items: list[tuple[Entry, Path]]) -> tuple[list[_Result], list[str]]:
    """The files of one pack that no copy holds, from one ranged GET; (placed, problems)."""
    def write(data: bytes) -> Callable[[Path], str]:
        def fill(tmp: Path) -> str:
            tmp.write_bytes(data)
            job.progress(len(data))
            return hashlib.sha256(data).hexdigest()
        return fill

    placed, problems = [], []
    fetched = packs.members(job.store, job.set_name, [entry for entry, _ in items])
    for (entry, data), (_, dest) in zip(fetched, items, strict=True):
        try:
            placed.append(_place(job, entry, dest, REMOTE, write(data)))
        except (IntegrityError, OSError) as exc:
            problems.append(str(exc))
    return placed, problems


def _known_hashes(cache: Cache, paths: list[Path], entry: Entry) -> dict[Path, str | None]:
    """Candidates of the right size, with their cached hash where size and mtime still match."""
    known: dict[Path, str | None] = {}
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        if st.st_size == entry.size and path.is_file():
            known[path] = cache.known_hash(path, st.st_size, st.st_mtime_ns)
    return known


def restore(store: ObjectStore, set_name: str, to: Path, cache: Cache, concurrency: int,
            tiers: list[Path] | None = None, run: str | None = None,
            progress: Callable[[int], Progress] | None = None) -> RestoreReport:
    """Restore a run (default: the latest) into `to`; progress(total bytes) returns the
    callback told of bytes as they are placed.

    A file that fails is named in the report; a full disk or an unreachable store stops all."""
    found = manifest.require(store, set_name, run)
    tiers = tiers or []
    report = RestoreReport(set_name, found.run, len(found.files))
    jobs = []
    for entry in found.files:
        try:
            dest = _target(to, entry)
        except IntegrityError as exc:
            report.problems.append(str(exc))
            continue
        candidates = [dest, *(_target(t, entry) for t in tiers)]
        jobs.append((entry, dest, _known_hashes(cache, candidates, entry)))
    _check_space(to, [(e, d) for e, d, known in jobs if d not in known])
    try:
        for folder in sorted({d.parent for _, d, _ in jobs}):  # once each, not once per file
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {exc.filename}: {exc.strerror}") from exc
    journal = Journal(cache.path)
    told = progress(sum(e.size for e, _, _ in jobs)) if progress else no_progress
    job = _Job(store, set_name, tiers, journal, told)
    hashed: dict[Path, str] = {}
    pending: dict[str, list[tuple[Entry, Path]]] = defaultdict(list)

    def record(result: _Result) -> None:
        hashed.update(result.hashes)
        if result.source == PACKED:
            pending[result.entry.pack].append((result.entry, _target(to, result.entry)))
        else:
            sizes = report.bytes_from
            sizes[result.source] = sizes.get(result.source, 0) + result.entry.size

    def record_pack(done: tuple[list[_Result], list[str]]) -> None:
        for result in done[0]:
            record(result)
        report.problems.extend(done[1])

    try:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="restore") as pool:
            # First every copy that can be used, and every blob; then each pack once, for the
            # packed files no copy holds.
            first = []
            for entry, dest, known in jobs:
                if entry.pack and not known:  # no copy anywhere: no thread needed
                    record(_Result(entry, PACKED, {}))
                else:
                    first.append(pool.submit(_restore_one, job, entry, dest, known))
            _collect(first, record, report)
            _collect([pool.submit(_restore_pack, job, items) for items in pending.values()],
                     record_pack, report)
    finally:
        journal.close()
        _remember(cache, hashed)
    report.problems.sort()
    return report


def _check_space(to: Path, needed: list[tuple[Entry, Path]]) -> None:
    """Refuse to start a restore that cannot fit, rather than fail half-way."""
    to.mkdir(parents=True, exist_ok=True)
    total = sum(e.size for e, _ in needed)
    free = shutil.disk_usage(to).free
    if total > free:
        raise StorageError(f"not enough free space in {to}: {total} bytes to restore, "
                           f"{free} free")


def _collect(futures: list[Future[_T]], record: Callable[[_T], None],
             report: RestoreReport) -> None:
    """Each result as it comes, recorded; a failed file is a problem in the report; anything
    else (a full disk, an unreachable store) cancels the rest and stops the restore."""
    try:
        for future in as_completed(futures):
            try:
                result = future.result()
            except (IntegrityError, OSError) as exc:
                report.problems.append(str(exc))
                continue
            record(result)
    except BaseException:
        for other in futures:
            other.cancel()
        raise


def _remember(cache: Cache, hashed: dict[Path, str]) -> None:
    """The restored (and hashed) files' SHA-256s, in one transaction: a later backup or
    restore need not read them again."""
    with cache.batch():
        for path, sha in hashed.items():
            with suppress(OSError):
                st = path.stat()
                cache.remember_hash(path, st.st_size, st.st_mtime_ns, sha)
