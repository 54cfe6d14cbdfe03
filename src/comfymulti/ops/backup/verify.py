"""`backup verify`: does the remote still hold, unchanged, every object the manifest names?

The quick check is one HEAD per object (size, ETag, recorded SHA-256: any rewrite changes the
ETag); --deep downloads each object and hashes it.
"""

from __future__ import annotations

import io
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from comfymulti.ops.backup import manifest
from comfymulti.ops.backup.manifest import Entry
from comfymulti.ops.backup.s3 import ObjectStore


@dataclass
class VerifyReport:
    set: str
    run: str
    objects: int = 0
    problems: list[str] = field(default_factory=list)  # "path: what is wrong"


class _Discard(io.RawIOBase):
    def write(self, b: bytes) -> int:  # type: ignore[override]
        return len(b)


def _check(store: ObjectStore, set_name: str, entry: Entry, deep: bool) -> str | None:
    key = manifest.blob_key(store, set_name, entry.sha256)
    info = store.head(key)
    if info is None:
        return "missing from the storage"
    if info.size != entry.size:
        return f"size {info.size} on the storage, {entry.size} in the manifest"
    if info.etag != entry.etag or info.sha256 != entry.sha256:
        return "changed on the storage since it was backed up"
    if deep and store.download(key, _Discard()) != entry.sha256:
        return "content does not match its SHA-256"
    return None


def verify(store: ObjectStore, set_name: str, concurrency: int, run: str | None = None,
           deep: bool = False) -> VerifyReport:
    found = manifest.require(store, set_name, run)
    by_sha: dict[str, list[Entry]] = defaultdict(list)
    for entry in found.files:
        by_sha[entry.sha256].append(entry)
    report = VerifyReport(set_name, found.run, len(by_sha))
    with ThreadPoolExecutor(concurrency, thread_name_prefix="verify") as pool:
        checks = {sha: pool.submit(_check, store, set_name, entries[0], deep)
                  for sha, entries in by_sha.items()}
        for sha, future in checks.items():
            if (problem := future.result()) is not None:
                report.problems += [f"{e.path}: {problem}" for e in by_sha[sha]]
    report.problems.sort()
    return report
