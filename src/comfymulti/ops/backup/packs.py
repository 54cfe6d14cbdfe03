"""Packs: small files travel together, their contents back to back in one object.

A request costs about the same whatever its size, so 5,000 small files stored as 5,000 objects
spend their time on requests (and, on R2, on per-operation fees). Packed into objects of up to
one part size they are a handful of PUTs, and one ranged GET per pack on restore. Each member
keeps its own SHA-256 in the manifest, with its pack and offset, so verify and restore still
name the one file that is wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from comfymulti.ops.backup.cache import Stored
from comfymulti.ops.backup.manifest import Entry, pack_key
from comfymulti.ops.backup.s3 import MIB, ObjectStore, Progress

MEMBER_MAX = MIB  # files up to this size are packed; above it a request's cost is noise


@dataclass
class Pack:
    """One pack being filled, then stored under its SHA-256; `future` gives its ETag."""

    buffer: bytearray = field(default_factory=bytearray)
    sha256: str = ""
    future: Future[str] | None = None

    def stored(self, offset: int) -> Stored:
        """Where a member placed at offset lives (waits for the upload)."""
        assert self.future is not None
        return Stored(self.future.result(), self.sha256, offset)


class Packer:
    """Fills packs on the calling thread; each full one is stored on the store's part threads.
    A pack being filled or sent holds one of the store's part-sized slots, so packs and big
    files' parts together stay within concurrency x part size of memory."""

    def __init__(self, store: ObjectStore, set_name: str, progress: Progress) -> None:
        self.store = store
        self.set_name = set_name
        self.progress = progress
        self.packs: list[Pack] = []
        self._placed: dict[str, tuple[Pack, int]] = {}  # sha256 -> (pack, offset)
        self._open: Pack | None = None

    def place(self, sha256: str, data: bytes) -> tuple[Pack, int]:
        """The pack and offset that will hold this content; equal contents share one place."""
        if (found := self._placed.get(sha256)) is not None:
            self.progress(len(data))
            return found
        pack = self._open
        if pack is not None and len(pack.buffer) + len(data) > self.store.part_size:
            self._send(pack)
            pack = None
        if pack is None:
            self.store.take_slot()  # given back once the pack is stored (or failed)
            pack = self._open = Pack()
            self.packs.append(pack)
        self._placed[sha256] = (pack, len(pack.buffer))
        pack.buffer += data
        return pack, self._placed[sha256][1]

    def flush(self) -> None:
        """Send the last, partly filled pack."""
        if self._open is not None:
            self._send(self._open)

    def _send(self, pack: Pack) -> None:
        self._open = None
        data, pack.buffer = bytes(pack.buffer), bytearray()
        pack.sha256, size = hashlib.sha256(data).hexdigest(), len(data)
        pack.future = self.store.put_later(pack_key(self.store, self.set_name, pack.sha256),
                                           data)
        pack.future.add_done_callback(lambda _: self.progress(size))


def members(store: ObjectStore, set_name: str, entries: list[Entry]
            ) -> Iterator[tuple[Entry, bytes]]:
    """Each entry's bytes, for entries of one pack: one ranged GET spanning them all (at most
    a pack, so at most one part size in memory)."""
    start = min(e.offset for e in entries)
    end = max(e.offset + e.size for e in entries)
    data = store.get_range(pack_key(store, set_name, entries[0].pack), start, end - start)
    for entry in entries:
        yield entry, data[entry.offset - start:entry.offset - start + entry.size]
