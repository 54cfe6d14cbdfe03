"""Reading request bodies, always with a limit: the one place that caps a body. An oversized
body is refused from its Content-Length before a byte is read, or as soon as the stream
passes the limit; never buffered whole first."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from comfymulti.errors import InvalidInput, PayloadTooLarge
from comfymulti.userfiles import staging_path

M = TypeVar("M", bound=BaseModel)

# Bodies of small JSON requests (interrupt, queue and history edits, cancel lists).
SMALL_JSON = 1024 * 1024


def _too_large(limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"{what} is larger than {limit} bytes")


async def stream(request: Request, limit: int, what: str = "request body"
                 ) -> AsyncIterator[bytes]:
    """The body's chunks, refusing (413) a declared or actual size above `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, what)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, what)
        yield chunk


async def read_body(request: Request, limit: int, what: str = "request body") -> bytes:
    return b"".join([chunk async for chunk in stream(request, limit, what)])


def _no_constants(name: str) -> Any:
    raise InvalidInput(f"{name} is not a JSON number; send finite numbers only")


def parse_json(body: bytes) -> Any:
    """Strict JSON: NaN and Infinity refused (they could never be answered back as JSON),
    absurd nesting refused rather than overflowing the stack."""
    try:
        return json.loads(body, parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput("body is nested too deeply") from None


async def read_json(request: Request, limit: int) -> Any:
    return parse_json(await read_body(request, limit))


async def read_object(request: Request, limit: int = SMALL_JSON, *, empty_ok: bool = False
                      ) -> dict[str, Any]:
    """A JSON object body (`{}` for an empty body when `empty_ok`)."""
    body = await read_body(request, limit)
    if empty_ok and not body.strip():
        return {}
    value = parse_json(body)
    if not isinstance(value, dict):
        raise InvalidInput("body must be a JSON object")
    return value


@dataclass
class Received:
    """A body streamed to a staging file (the caller moves or removes it)."""

    path: Path
    size: int
    sha256: str


async def receive_file(request: Request, limit: int, data_dir: Path, purpose: str,
                       what: str = "file") -> Received:
    """Stream the body to DATA_DIR/tmp (never whole in memory), fsynced, with its hash.
    Nothing is left behind if the body is refused or the client goes away."""
    tmp = staging_path(data_dir, purpose)
    digest, size = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as fh:
            async for chunk in stream(request, limit, what):
                size += len(chunk)
                digest.update(chunk)
                fh.write(chunk)
            await asyncio.to_thread(_to_disk, fh)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Received(path=tmp, size=size, sha256=digest.hexdigest())


def _to_disk(fh: BinaryIO) -> None:
    """Flush and fsync, in a thread: waiting for the disk (milliseconds, seconds when it is
    busy) on the loop would hold every socket and request of the hub meanwhile."""
    fh.flush()
    os.fsync(fh.fileno())


async def read_model(request: Request, model: type[M], limit: int = SMALL_JSON) -> M:
    """A JSON body as a pydantic model. Routes call this after their access dependency, so
    nobody's body is read before their credentials are checked (a declared pydantic body
    parameter would be read first)."""
    try:
        return model.model_validate(await read_json(request, limit))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidInput(f"{where}: {first.get('msg', 'invalid')}") from None
