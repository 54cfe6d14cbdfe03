"""Catalogs as the queue uses them: parsed once per content hash, indexed for matching jobs to
workers, and the union of the online workers' catalogs that participants see."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import OrderedDict
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from comfymulti.catalog.codec import unpack
from comfymulti.catalog.index import CatalogIndex, merge_catalogs
from comfymulti.models import Catalog
from comfymulti.queue import fleet


class PackedJson(NamedTuple):
    plain: bytes
    gzipped: bytes
    etag: str


class CatalogCache:
    """Parsed catalogs by hash (a stored catalog never changes, so caching is safe), and the
    catalog participants see: what the workers online now offer together."""

    def __init__(self, online_window: float, keep: int = 8) -> None:
        self.online_window = online_window
        self._keep = keep
        self._indexes: dict[str, CatalogIndex] = {}
        self._parsed: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._current: tuple[tuple[str, ...], dict[str, Any]] | None = None
        self._current_json: PackedJson | None = None

    def index(self, s: Session, catalog_hash: str) -> CatalogIndex | None:
        if not catalog_hash:
            return None
        if catalog_hash not in self._indexes:
            catalog = self.catalog(s, catalog_hash)
            if catalog is None:
                return None
            self._indexes[catalog_hash] = CatalogIndex.build(catalog)
        return self._indexes[catalog_hash]

    def catalog(self, s: Session, catalog_hash: str) -> dict[str, Any] | None:
        if catalog_hash in self._parsed:
            self._parsed.move_to_end(catalog_hash)
            return self._parsed[catalog_hash]
        row = s.get(Catalog, catalog_hash)
        if row is None:
            return None
        self._parsed[catalog_hash] = unpack(row.data)
        while len(self._parsed) > self._keep:
            self._parsed.popitem(last=False)
        return self._parsed[catalog_hash]

    def _current_hashes(self, s: Session) -> tuple[str, ...]:
        online = fleet.online_catalog_hashes(s, self.online_window)
        if online:
            return tuple(online)
        # No GPU up: the last known catalog, so people can prepare workflows anyway.
        last = fleet.last_catalog_hash(s)
        return (last,) if last else ()

    def current(self, s: Session) -> dict[str, Any]:
        """Every node type and model any online worker offers (the scheduler still sends each
        job only to a worker that can run it)."""
        hashes = self._current_hashes(s)
        if self._current is None or self._current[0] != hashes:
            catalogs = [c for h in hashes if (c := self.catalog(s, h)) is not None]
            self._current = (hashes, merge_catalogs(catalogs))
            self._current_json = None
        return self._current[1]

    def current_object_info_json(self, s: Session) -> PackedJson:
        """object_info of `current()` as JSON bytes, gzipped and its ETag, made once per
        catalog: ≈1.6 MB plain, ≈0.2 MB gzipped, sent to every participant's browser at
        start-up, and only a 304 when the browser already has it."""
        catalog = self.current(s)
        if self._current_json is None:
            plain = json.dumps(catalog["object_info"]).encode()
            etag = '"' + hashlib.sha256(plain).hexdigest()[:32] + '"'
            self._current_json = PackedJson(plain, gzip.compress(plain, 6), etag)
        return self._current_json
