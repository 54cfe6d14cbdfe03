"""Received files reach the disk without the event loop waiting for it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from comfymulti.hub.web import bodies


def test_received_file_is_fsynced_off_the_loop(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An output upload's fsync can take seconds on a busy disk; on the loop it would hold
    every socket and request of the hub for that long."""
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        try:
            asyncio.get_running_loop()
            synced.append(True)  # on a loop thread
        except RuntimeError:
            synced.append(False)
        real_fsync(fd)

    monkeypatch.setattr(bodies.os, "fsync", fsync)
    chunks = [b"abc", b"def"]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    async def upload() -> bodies.Received:
        request = Request({"type": "http", "method": "PUT", "path": "/", "headers": []},
                          receive)
        return await bodies.receive_file(request, 100, tmp_path, "upload")

    received = asyncio.run(upload())
    assert received.path.read_bytes() == b"abcdef" and received.size == 6
    assert synced == [False]
