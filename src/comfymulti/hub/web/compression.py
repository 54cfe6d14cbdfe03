"""Small answers for venue Wi-Fi: gzip copies of static text files, each made once and kept
in the data folder, and ETag revalidation, so twenty browsers opening at 9:00 share one link
without each pulling the frontend's 25 MB uncompressed."""

from __future__ import annotations

import asyncio
import gzip
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from comfymulti.blocking import Offload

# Text formats worth compressing; images, fonts in woff/woff2 and media are packed already.
COMPRESSIBLE = {".js", ".mjs", ".css", ".json", ".html", ".svg", ".map", ".txt", ".ttf",
                ".otf", ".eot", ".ico", ".xml", ".wasm"}
MIN_SIZE = 1024  # below this a gzip header and an extra round of work gain nothing
LEVEL = 9  # made once per file, so the smallest output is worth the time


def accepts_gzip(headers: Mapping[str, str]) -> bool:
    return "gzip" in headers.get("accept-encoding", "").lower()


def is_fresh(headers: Mapping[str, str], etag: str) -> bool:
    """The browser's copy (If-None-Match) is the current one: answer 304 without a body."""
    wanted = headers.get("if-none-match", "")
    return any(tag.strip().removeprefix("W/") == etag for tag in wanted.split(",")) \
        or wanted.strip() == "*"


class GzipCache:
    """`<cache>/<namespace>/<file>.gz` next to nothing the user can see; made on a file's first
    request off the event loop, once even when many browsers ask at the same moment, and made
    again only when the source file is newer (a frontend upgrade)."""

    def __init__(self, folder: Path, run: Offload) -> None:
        self.folder = folder
        self.run = run
        self._making: dict[Path, asyncio.Future[Path]] = {}

    async def get(self, namespace: str, root: Path, rel: str) -> Path | None:
        """The gzip copy of `root/rel`, or None when the file is not worth compressing."""
        source = root / rel
        if source.suffix.lower() not in COMPRESSIBLE:
            return None
        target = self.folder / namespace / (rel + ".gz")
        stat = source.stat()
        if stat.st_size < MIN_SIZE:
            return None
        if target.is_file() and target.stat().st_mtime >= stat.st_mtime:
            return target
        task = self._making.get(target)
        if task is None:
            task = asyncio.ensure_future(self.run(_compress, source, target))
            self._making[target] = task
            task.add_done_callback(lambda _: self._making.pop(target, None))
        return await asyncio.shield(task)  # a browser that goes away leaves the work to finish

def _compress(source: Path, target: Path) -> Path:
    """Write atomically: a half-written copy is never served."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".gz-")
    with os.fdopen(fd, "wb") as out:
        out.write(gzip.compress(source.read_bytes(), LEVEL, mtime=0))
    os.replace(tmp, target)
    return target
