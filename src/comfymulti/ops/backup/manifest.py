"""What one run stored: path -> size, mtime, mode, SHA-256 and where the content is.

Contents are addressed by SHA-256. A big file is its own object (a blob); small files travel
together in packs (one object holding many contents back to back), so 5,000 small files cost a
handful of requests instead of 5,000: the per-request cost, not the bytes, dominates them.

A manifest is written only after every object it names is stored, and the `latest` pointer only
after the manifest, each by one PUT (atomic on S3): a failed run leaves no manifest behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from comfymulti.errors import NotFound, StorageError
from comfymulti.ops.backup.cache import Stored
from comfymulti.ops.backup.s3 import ObjectStore

FORMAT = 2
_READABLE = {1, 2}  # format 1: no packs


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the set's root, POSIX separators
    size: int
    mtime_ns: int
    mode: int
    sha256: str
    etag: str
    pack: str = ""
    offset: int = 0

    @property
    def stored(self) -> Stored:
        return Stored(self.etag, self.pack, self.offset)


@dataclass
class Manifest:
    set: str
    run: str
    mode: str
    files: list[Entry] = field(default_factory=list)

    def to_json(self) -> bytes:
        body = {"format": FORMAT, "set": self.set, "run": self.run, "mode": self.mode,
                "files": [vars(e) for e in self.files]}  # asdict: 10x slower
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            body = json.loads(data)
            if body.get("format") not in _READABLE:
                raise ValueError(f"format {body.get('format')}")
            return cls(body["set"], body["run"], body["mode"],
                       [Entry(**e) for e in body["files"]])
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"unreadable backup manifest: {exc}") from exc


def blob_key(store: ObjectStore, set_name: str, sha256: str) -> str:
    return store.key(set_name, "blobs", sha256[:2], sha256)


def pack_key(store: ObjectStore, set_name: str, sha256: str) -> str:
    return store.key(set_name, "packs", sha256[:2], sha256)


def object_key(store: ObjectStore, set_name: str, entry: Entry) -> str:
    """The object holding an entry's content: its pack, or its own blob."""
    if entry.pack:
        return pack_key(store, set_name, entry.pack)
    return blob_key(store, set_name, entry.sha256)


def _manifest_key(store: ObjectStore, set_name: str, run: str) -> str:
    return store.key(set_name, "manifests", f"{run}.json")


def runs(store: ObjectStore, set_name: str) -> list[str]:
    """Every run with a manifest, oldest first (run ids sort by time)."""
    folder = store.key(set_name, "manifests") + "/"
    return sorted(k[len(folder):-len(".json")] for k in store.list(folder)
                  if k.endswith(".json"))


def delete_runs(store: ObjectStore, set_name: str, runs: list[str]) -> None:
    store.delete([_manifest_key(store, set_name, r) for r in runs])


def write(store: ObjectStore, manifest: Manifest) -> None:
    store.put_bytes(_manifest_key(store, manifest.set, manifest.run), manifest.to_json())
    store.put_bytes(store.key(manifest.set, "latest"), manifest.run.encode())


def read(store: ObjectStore, set_name: str, run: str | None = None) -> Manifest | None:
    """A run's manifest (default: the latest); None if the set was never backed up."""
    if run is None:
        pointer = store.get_bytes(store.key(set_name, "latest"))
        if pointer is None:
            return None
        run = pointer.decode().strip()
    data = store.get_bytes(_manifest_key(store, set_name, run))
    if data is None:
        raise NotFound(f"backup set {set_name!r} has no run {run!r}")
    return Manifest.from_json(data)


def require(store: ObjectStore, set_name: str, run: str | None = None) -> Manifest:
    if (manifest := read(store, set_name, run)) is None:
        raise NotFound(f"backup set {set_name!r} has no backup at {store.endpoint} yet")
    return manifest
