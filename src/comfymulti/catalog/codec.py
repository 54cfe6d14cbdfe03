"""How a catalog travels and is stored: canonical hash, gzip-packed JSON, bounded unpacking.

A catalog is `{"object_info": {...}, "models": {folder: [file, ...]}}` as the worker read it
from its ComfyUI.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from typing import Any

from comfymulti.errors import InvalidInput, PayloadTooLarge

# A real catalog (ComfyUI core + a few packs) is ~2 MB of JSON; this leaves room for many packs.
MAX_UNPACKED = 64 * 1024 * 1024
# Node names, display names and categories reach every participant's browser; real ones never
# contain markup characters, so a catalog with them is refused rather than trusted.
_MARKUP = re.compile(r"[<>]")


def catalog_hash(catalog: dict[str, Any]) -> str:
    """Content hash of a catalog; worker and hub compute it the same way."""
    canonical = json.dumps(catalog, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def pack(catalog: dict[str, Any]) -> bytes:
    return gzip.compress(json.dumps(catalog, separators=(",", ":")).encode(), 6)


def gunzip(data: bytes, limit: int = MAX_UNPACKED) -> bytes:
    """Decompress gzip data, refusing (PayloadTooLarge) as soon as the output passes `limit`:
    a small bomb never gets to allocate its gigabytes."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    chunks: list[bytes] = []
    size = 0
    pending = data
    try:
        while pending:
            chunk = inflater.decompress(pending, 1024 * 1024)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"catalog unpacks to more than {limit} bytes")
            chunks.append(chunk)
            pending = inflater.unconsumed_tail
            if inflater.eof:
                break
        if not inflater.eof:
            raise InvalidInput("catalog is not complete gzip data")
    except zlib.error as exc:
        raise InvalidInput(f"catalog is not gzip data: {exc}") from None
    return b"".join(chunks)


def unpack(data: bytes, limit: int = MAX_UNPACKED) -> dict[str, Any]:
    """The catalog in `data` (from `pack`), or InvalidInput saying what is wrong with it."""
    try:
        catalog = json.loads(gunzip(data, limit))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"catalog is not JSON: {exc}") from None
    if not isinstance(catalog, dict) or not isinstance(catalog.get("object_info"), dict):
        raise InvalidInput("catalog must be an object with an object_info object")
    for class_type, node_def in catalog["object_info"].items():
        if not isinstance(node_def, dict):
            raise InvalidInput(f"catalog node {class_type!r} must be an object")
        labels = [class_type, node_def.get("display_name"), node_def.get("category")]
        if any(isinstance(x, str) and _MARKUP.search(x) for x in labels):
            raise InvalidInput(f"catalog node {class_type[:80]!r}: names and categories must be "
                               "plain text")
    return catalog
