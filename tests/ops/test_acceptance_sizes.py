"""The acceptance tree (5,000 small files, nested, unicode, empty files, one big file), and
restores onto a disk that is too small or fills up half-way (a 5 MB tmpfs)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from comfymulti.config import Settings
from comfymulti.errors import StorageError
from comfymulti.ops.backup.backup import run_backup
from comfymulti.ops.backup.s3 import MIB, ObjectStore
from tests.ops.conftest import R2Guard
from tests.ops.test_backup import cli, do_restore, write_config

MakeOps = Callable[..., tuple[Settings, ObjectStore]]
SMALL_FILES = 5000
BIG_BYTES = 300 * 1000 * 1000


def make_small_files(root: Path, count: int) -> None:
    """count files in nested folders (unicode names, every 50th empty)."""
    for i in range(count):
        folder = root / f"d{i % 20:02d}" / f"ü{i % 7}" / ("深い" if i % 3 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"fïle {i}.txt").write_bytes(b"" if i % 50 == 0 else f"{i}\n".encode() * 3)


def make_big_file(path: Path, size: int) -> None:
    """Random content (no two parts alike, so a misplaced range shows), written 8 MiB at a
    time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for offset in range(0, size, 8 * MIB):
            fh.write(os.urandom(min(8 * MIB, size - offset)))


def digests(root: Path) -> dict[str, tuple[int, str]]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                found[path.relative_to(root).as_posix()] = (
                    path.stat().st_size, hashlib.file_digest(fh, "sha256").hexdigest())
    return found


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 5 MB tmpfs: full after about 1,200 files, whatever their size (4 KiB pages)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_5000_files_and_a_big_file_round_trip_and_a_rerun_uploads_nothing(
        tmp_path: Path, make_ops: MakeOps, guard: R2Guard, backup_config: dict[str, Any],
        small_disk: Path) -> None:
    root = tmp_path / "src"
    make_small_files(root / "small", SMALL_FILES)
    make_big_file(root / "big/model.safetensors", BIG_BYTES)
    settings, store = make_ops(root)

    first = run_backup(settings, "files", store)
    assert first.files == SMALL_FILES + 1 and first.uploaded_bytes == first.bytes
    parts = -(-BIG_BYTES // (5 * MIB))
    assert len(guard.parts) == 1 and len(next(iter(guard.parts.values()))) == parts
    # The small files travel in one pack (they total ~80 KB): one request, not 5,000.
    assert [k.split("/")[2] for k in guard.puts] == ["packs"]
    guard.uploaded_bytes = 0
    second = run_backup(settings, "files", store)
    assert (second.uploaded_files, second.uploaded_bytes, guard.uploaded_bytes) == (0, 0, 0)
    assert second.hashed_files == 0

    out = tmp_path / "restored"
    assert not do_restore(settings, store, out).problems
    assert digests(out) == digests(root)
    assert guard.downloads == 1 + parts  # the pack, and the big file's ranges

    # Too small from the start: refused before a byte is written, one line, exit 1.
    config = write_config(tmp_path, backup_config, root)
    r = cli(config, "restore", "files", "--to", str(small_disk))
    assert r.returncode == 1 and r.stderr.startswith("error: not enough free space in"), r
    assert r.stderr.count("\n") == 1 and not any(small_disk.iterdir())

    # Fits by byte count, not by pages: the disk fills up half-way through.
    settings, store = make_ops(root, paths=["small"])
    run_backup(settings, "files", store)
    with pytest.raises(StorageError, match=r"^disk full in .* while restoring small/") as exc:
        do_restore(settings, store, small_disk)
    assert "\n" not in str(exc.value)
    left = [p for p in small_disk.rglob("*") if p.is_file()]
    assert left and not [p for p in left if p.name.endswith(".restoring")]
    originals, placed = digests(root / "small"), digests(small_disk / "small")
    assert all(placed[rel] == originals[rel] for rel in placed)  # only whole files stay
