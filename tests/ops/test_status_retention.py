"""backup status / list, retention of snapshot sets, --prune of mirror sets, progress bars."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from comfymulti import backup_status
from comfymulti.config import Settings
from comfymulti.errors import RemoteUnavailable
from comfymulti.ops.backup import manifest
from comfymulti.ops.backup.backup import run_backup
from comfymulti.ops.backup.retention import kept_runs
from comfymulti.ops.backup.s3 import MIB, ObjectStore
from comfymulti.ops.backup.verify import verify
from tests.fakes.seaweedfs import SECRET_KEY
from tests.ops.conftest import R2Guard
from tests.ops.test_backup import cli, do_restore, make_tree, tree_of, write_config

MakeOps = Callable[..., tuple[Settings, ObjectStore]]


def objects(store: ObjectStore) -> set[str]:
    """The blobs and packs stored, by name (SHA-256)."""
    return {k.rsplit("/", 1)[-1] for folder in ("blobs", "packs")
            for k in store.list(store.key("files", folder) + "/")}


def named(store: ObjectStore) -> set[str]:
    """The objects the latest run names."""
    return {e.pack or e.sha256 for e in manifest.require(store, "files").files}


def test_kept_runs_keeps_the_newest_of_each_hour_day_and_week() -> None:
    runs = ["20261202T101500000Z", "20261202T104500000Z",  # 10h: the newer one
            "20261202T090000000Z", "20261201T230000000Z",  # 9h today; yesterday's last
            "20261130T120000000Z", "20261120T120000000Z", "20261101T120000000Z"]
    assert kept_runs(runs, "2h") == {"20261202T104500000Z", "20261202T090000000Z"}
    assert kept_runs(runs, "2d") == {"20261202T104500000Z", "20261201T230000000Z"}
    # ISO weeks: 30 Nov (Mon) starts the week of 1-2 Dec; 20 Nov and 1 Nov are older weeks.
    assert kept_runs(runs, "3w") == {"20261202T104500000Z", "20261120T120000000Z",
                                     "20261101T120000000Z"}
    assert kept_runs(runs, "1h 1d 2w") == {"20261202T104500000Z", "20261120T120000000Z"}
    assert kept_runs([], "24h 7d 4w") == set()


def test_snapshot_sets_keep_what_retention_says_and_every_object_a_kept_run_names(
        tmp_path: Path, make_ops: MakeOps) -> None:
    root = tmp_path / "src"
    files = make_tree(root)
    settings, store = make_ops(root, mode="snapshot", keep="1h")
    first = run_backup(settings, "files", store)
    old_model = next(e.sha256 for e in manifest.require(store, "files").files
                     if e.path == "big/model.safetensors")
    files["a.txt"], files["big/model.safetensors"] = b"second version\n", os.urandom(6 * MIB)
    for rel in ("a.txt", "big/model.safetensors"):
        (root / rel).write_bytes(files[rel])
    second = run_backup(settings, "files", store)
    # Both runs fall in this hour: "1h" keeps only the newer. The model's first content goes;
    # the first pack stays, as the kept run still names the other small files in it.
    assert second.pruned is not None and second.pruned.runs_deleted == [first.run]
    assert manifest.runs(store, "files") == [second.run]
    assert second.pruned.objects_deleted == [old_model]
    assert second.pruned.bytes_freed == 12 * MIB
    assert objects(store) == named(store)
    assert verify(store, "files", 4, deep=True).problems == []
    do_restore(settings, store, tmp_path / "out")
    assert tree_of(tmp_path / "out") == files


def test_mirror_sets_delete_nothing_without_prune_and_reupload_what_a_prune_removed(
        tmp_path: Path, make_ops: MakeOps, guard: R2Guard) -> None:
    root = tmp_path / "src"
    make_tree(root)
    settings, store = make_ops(root)
    first = run_backup(settings, "files", store)
    (root / "a.txt").write_bytes(b"second version\n")
    second = run_backup(settings, "files", store)
    assert second.pruned is None and len(manifest.runs(store, "files")) == 2
    second_pack = next(e.pack for e in manifest.require(store, "files").files
                       if e.path == "a.txt")
    assert second_pack in objects(store)

    (root / "a.txt").write_bytes(b"third\n")
    third = run_backup(settings, "files", store, prune=True)
    assert third.pruned is not None
    assert third.pruned.runs_deleted == [first.run, second.run]
    # The second run's pack held only a.txt's second version, which no kept run names.
    assert third.pruned.objects_deleted == [second_pack] and third.pruned.bytes_freed == 15
    assert objects(store) == named(store)
    assert verify(store, "files", 4, deep=True).problems == []

    (root / "a.txt").write_bytes(b"second version\n")  # a content whose pack was pruned
    guard.uploaded_bytes = 0
    fourth = run_backup(settings, "files", store)
    assert (fourth.uploaded_files, guard.uploaded_bytes) == (1, 15)
    assert verify(store, "files", 4, deep=True).problems == []


def status_config(tmp_path: Path, backup_config: dict[str, Any], root: Path, **extra: Any
                  ) -> Path:
    config = write_config(tmp_path, {**backup_config, **extra}, root)
    config.write_text(config.read_text() + 'schedule = "1h"\n')
    return config


def test_status_without_a_destination_says_nothing_is_backed_up_in_one_line(
        tmp_path: Path) -> None:
    config = tmp_path / "comfymulti.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    r = cli(config, "backup", "status")
    assert r.returncode == 2 and r.stdout == "", r
    assert r.stderr.startswith("error: no backup destination is set, so nothing is backed up")
    assert r.stderr.count("\n") == 1 and "backup.endpoint_url" in r.stderr


def test_status_reports_each_set_and_fails_when_a_scheduled_set_is_overdue(
        tmp_path: Path, backup_config: dict[str, Any], make_ops: MakeOps) -> None:
    root = tmp_path / "src"
    files = make_tree(root)
    config = status_config(tmp_path, backup_config, root)
    r = cli(config, "backup", "status", "--json")
    assert r.returncode == 1 and "files (last success never" in r.stderr, r
    assert json.loads(r.stdout)["sets"][0]["stale"] is True

    settings, store = make_ops(root, schedule="1h")
    run_backup(settings, "files", store)
    r = cli(config, "backup", "status", "--json")
    assert r.returncode == 0, r
    row = json.loads(r.stdout)["sets"][0]
    assert (row["files"], row["bytes"], row["error"]) == (len(files),
                                                          sum(map(len, files.values())), "")
    assert row["age_seconds"] < 60 and not row["stale"]

    store.bucket = "no-such-bucket-here"
    with pytest.raises(RemoteUnavailable):
        run_backup(settings, "files", store)
    status = backup_status.read(settings.data_dir, "files")
    assert "does not exist" in status.error and status.files == len(files)  # success kept

    path = settings.data_dir / backup_status.FOLDER / "files.json"
    path.write_text(json.dumps({**asdict(status), "last_success": time.time() - 3 * 3600}))
    r = cli(config, "backup", "status")
    assert r.returncode == 1 and "OVERDUE" in r.stdout, r
    assert r.stderr.count("\n") == 1 and "files (last success 3h ago, schedule 1h)" in r.stderr


def test_list_shows_every_run_with_files_and_bytes(
        tmp_path: Path, backup_config: dict[str, Any], make_ops: MakeOps) -> None:
    root = tmp_path / "src"
    files = make_tree(root)
    settings, store = make_ops(root)
    for _ in range(2):
        run_backup(settings, "files", store)
    config = write_config(tmp_path, backup_config, root)
    runs = json.loads(cli(config, "backup", "list", "files", "--json").stdout)["runs"]
    assert [(r["files"], r["bytes"], r["latest"]) for r in runs] == [
        (len(files), sum(map(len, files.values())), False),
        (len(files), sum(map(len, files.values())), True)]
    r = cli(config, "backup", "list", "nope")
    assert r.returncode == 1 and r.stderr == "error: no backup set 'nope' (configured: files)\n"


def on_terminal(config: Path, *args: str) -> str:
    """Run the CLI with stdout on a pseudo-terminal; return what it printed there."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env.update(COMFYMULTI_BACKUP__SECRET_ACCESS_KEY=SECRET_KEY, TERM="xterm", COLUMNS="150")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "comfymulti", "--config", str(config), *args],
                            stdout=follower, stderr=subprocess.DEVNULL, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(60) == 0
    return b"".join(chunks).decode(errors="replace")


def test_progress_bars_show_on_a_terminal_only(
        tmp_path: Path, backup_config: dict[str, Any]) -> None:
    root = tmp_path / "src"
    make_tree(root)
    config = write_config(tmp_path, backup_config, root)
    shown = on_terminal(config, "backup", "run", "files")
    assert "backup files" in shown and "MB/s" in shown and "MB" in shown, shown
    piped = cli(config, "backup", "run", "files")
    assert piped.returncode == 0 and "backup files" not in piped.stdout
    assert "\x1b" not in piped.stdout
    as_json = on_terminal(config, "restore", "files", "--to", str(tmp_path / "b"), "--json")
    assert json.loads(as_json)["files"] > 0  # nothing but the JSON object
    shown = on_terminal(config, "restore", "files", "--to", str(tmp_path / "c"))
    assert "restore files" in shown and "MB/s" in shown, shown
