"""`backup verify`: does the remote still hold, unchanged, every object the manifest names?

The quick check is one HEAD per object, blob or pack (size, ETag, recorded SHA-256: any rewrite
changes the ETag); a pack that changed is then read, to name the very files whose bytes changed.
--deep downloads every object and hashes every file's bytes in it.
"""

from __future__ import annotations

import hashlib
import io
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from comfymulti.ops.backup import manifest, packs
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


def _check(store: ObjectStore, set_name: str, entries: list[Entry], deep: bool) -> list[str]:
    """Problems ("path: what") of one object and the files it holds."""
    first = entries[0]
    info = store.head(manifest.object_key(store, set_name, first))
    size = max(e.offset + e.size for e in entries)
    problem = None
    if info is None:
        problem = "missing from the storage"
    elif info.size < size if first.pack else info.size != size:
        problem = f"size {info.size} on the storage, {size} in the manifest"
    elif info.etag != first.etag or info.sha256 != (first.pack or first.sha256):
        problem = "changed on the storage since it was backed up"
        if first.pack:  # name only the files whose bytes changed
            return [f"{e.path}: {problem}" for e in _deep_bad(store, set_name, entries)]
    elif deep:
        return [f"{e.path}: content does not match its SHA-256" for e in _deep_bad(
            store, set_name, entries)]
    return [f"{e.path}: {problem}" for e in entries] if problem else []


def _deep_bad(store: ObjectStore, set_name: str, entries: list[Entry]) -> list[Entry]:
    if not entries[0].pack:
        key = manifest.blob_key(store, set_name, entries[0].sha256)
        return entries if store.download(key, _Discard()) != entries[0].sha256 else []
    return [e for e, data in packs.members(store, set_name, entries)
            if hashlib.sha256(data).hexdigest() != e.sha256]


def verify(store: ObjectStore, set_name: str, concurrency: int, run: str | None = None,
           deep: bool = False) -> VerifyReport:
    found = manifest.require(store, set_name, run)
    by_object: dict[str, list[Entry]] = defaultdict(list)
    for entry in found.files:
        by_object[entry.pack or entry.sha256].append(entry)
    report = VerifyReport(set_name, found.run, len(by_object))
    with ThreadPoolExecutor(concurrency, thread_name_prefix="verify") as pool:
        checks = [pool.submit(_check, store, set_name, entries, deep)
                  for entries in by_object.values()]
        for future in checks:
            report.problems += future.result()
    report.problems.sort()
    return report
