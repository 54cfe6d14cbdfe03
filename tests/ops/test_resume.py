"""kill -9 in the middle of a multipart upload or a ranged download, then rerun: only what the
server (or the target file) does not hold yet moves again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from comfymulti.config import Settings
from comfymulti.ops.backup import manifest
from comfymulti.ops.backup.backup import run_backup
from comfymulti.ops.backup.journal import Journal
from comfymulti.ops.backup.s3 import MIB, ObjectStore
from comfymulti.ops.backup.verify import verify
from tests.fakes.seaweedfs import SECRET_KEY
from tests.ops.conftest import R2Guard
from tests.ops.test_backup import do_restore, write_config

MakeOps = Callable[..., tuple[Settings, ObjectStore]]
PARTS = 10
REPO = Path(__file__).resolve().parents[2]


def kill_after_parts(config: Path, *args: str, parts: int = 3) -> None:
    """Run the slowed child and kill -9 it once `parts` parts have landed."""
    env = {**os.environ, "COMFYMULTI_BACKUP__SECRET_ACCESS_KEY": SECRET_KEY}
    with subprocess.Popen([sys.executable, "-m", "tests.ops.slow_child", str(config), *args],
                          stdout=subprocess.PIPE, text=True, env=env, cwd=REPO) as child:
        try:
            assert child.stdout is not None
            lines = [child.stdout.readline() for _ in range(parts)]
            assert lines == ["part\n"] * parts, lines
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
    assert child.returncode == -signal.SIGKILL


def big_file(root: Path) -> bytes:
    """PARTS full 5 MiB parts and a short last one."""
    data = os.urandom(PARTS * 5 * MIB + 12_345)
    (root / "big").mkdir(parents=True)
    (root / "big/model.safetensors").write_bytes(data)
    return data


def settled_parts(store: ObjectStore, key: str, upload_id: str) -> set[int]:
    """The parts the server holds once the killed client's last requests are done with (a
    part fully sent before the kill may still be landing)."""
    seen: list[set[int]] = []
    for _ in range(60):
        seen.append({p["PartNumber"] for p in store.client.list_parts(
            Bucket=store.bucket, Key=key, UploadId=upload_id).get("Parts", [])})
        if len(seen) >= 4 and seen[-4] == seen[-1]:  # unchanged for 1.5 s
            return seen[-1]
        time.sleep(0.5)
    raise AssertionError(f"the server's parts kept changing: {seen}")


def test_a_multipart_upload_killed_9_resumes_without_resending_stored_parts(
        tmp_path: Path, make_ops: MakeOps, backup_config: dict[str, Any],
        guard: R2Guard) -> None:
    root = tmp_path / "src"
    big_file(root)
    settings, store = make_ops(root)
    kill_after_parts(write_config(tmp_path, backup_config, root), "backup", "files")

    uploads = store.client.list_multipart_uploads(Bucket=store.bucket)["Uploads"]
    assert len(uploads) == 1
    upload_id = uploads[0]["UploadId"]
    stored = settled_parts(store, uploads[0]["Key"], upload_id)
    assert 3 <= len(stored) < PARTS + 1
    assert manifest.read(store, "files") is None  # the killed run claimed nothing

    report = run_backup(settings, "files", store)
    sent = set(guard.parts[upload_id])
    assert list(guard.parts) == [upload_id]  # the same upload, continued
    assert sent.isdisjoint(stored) and sent | stored == set(range(1, PARTS + 2))
    assert guard.uploaded_bytes == report.bytes - len(stored) * 5 * MIB
    assert verify(store, "files", 4, deep=True).problems == []
    assert not store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads")


def test_a_ranged_download_killed_9_resumes_without_refetching_ranges(
        tmp_path: Path, make_ops: MakeOps, backup_config: dict[str, Any],
        guard: R2Guard) -> None:
    root = tmp_path / "src"
    data = big_file(root)
    settings, store = make_ops(root)
    run_backup(settings, "files", store)
    out = tmp_path / "restored"
    kill_after_parts(write_config(tmp_path, backup_config, root), "restore", "files", str(out))

    entry = manifest.require(store, "files").files[0]
    partial = next((out / "big").glob(".model.safetensors.*.restoring"))
    journal = Journal(settings.backup_cache_dir / "cache.sqlite")
    done = journal.ranges_done(partial, entry.sha256, store.part_size)
    journal.close()
    assert len(done) >= 3 and not (out / "big/model.safetensors").exists()

    guard.downloads = 0
    report = do_restore(settings, store, out)
    assert not report.problems and guard.downloads == PARTS + 1 - len(done)
    assert (out / "big/model.safetensors").read_bytes() == data
    assert not partial.exists()
