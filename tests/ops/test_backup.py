"""Backup, verify and restore against a real S3 server (SeaweedFS) on 127.0.0.1."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from comfymulti.config import Settings, load_settings, render_toml
from comfymulti.ops.backup import manifest
from comfymulti.ops.backup.backup import run_backup
from comfymulti.ops.backup.cache import Cache
from comfymulti.ops.backup.restore import REMOTE, restore
from comfymulti.ops.backup.s3 import MIB, ObjectStore
from comfymulti.ops.backup.verify import verify
from tests.fakes.seaweedfs import SECRET_KEY
from tests.ops.conftest import R2Guard, tamper

MakeOps = Callable[..., tuple[Settings, ObjectStore]]


def make_tree(root: Path) -> dict[str, bytes]:
    """Nested folders, unicode names, empty files, a 12 MiB file (3 parts of 5 MiB), a live
    SQLite database in WAL mode."""
    files = {
        "a.txt": b"alpha\n",
        "empty": b"",
        "deep/er/still/empty.json": b"",
        "deep/er/still/x.bin": os.urandom(70_000),
        "ünïcødé/名前 with space.png": os.urandom(1234),
        "big/model.safetensors": os.urandom(12 * MIB),
    }
    files.update({f"many/{i:03d}.txt": f"file {i}\n".encode() for i in range(40)})
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def live_db(path: Path) -> sqlite3.Connection:
    """A WAL database with committed rows still only in the -wal file (as on a running hub)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (v TEXT)")
    db.executemany("INSERT INTO t VALUES (?)", [(f"row {i}",) for i in range(500)])
    return db


def tree_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*") if p.is_file()}


def do_restore(settings: Settings, store: ObjectStore, to: Path,
               tiers: list[Path] | None = None) -> Any:
    cache = Cache(settings.backup_cache_dir / "cache.sqlite")
    try:
        return restore(store, "files", to, cache, 4, tiers)
    finally:
        cache.close()


def test_round_trip_is_byte_identical_and_a_rerun_uploads_nothing(
        tmp_path: Path, make_ops: MakeOps, guard: R2Guard) -> None:
    root = tmp_path / "src"
    files = make_tree(root)
    db = live_db(root / "hub.db")
    os.chmod(root / "a.txt", 0o600)
    settings, store = make_ops(root)

    first = run_backup(settings, "files", store)
    assert first.files == len(files) + 1  # the database, without its -wal and -shm
    assert first.uploaded_bytes >= sum(len(d) for d in files.values())
    assert len(guard.parts) == 1 and sorted(next(iter(guard.parts.values())).values()) == [
        2 * MIB, 5 * MIB, 5 * MIB]

    guard.uploaded_bytes = 0
    second = run_backup(settings, "files", store)
    assert (second.uploaded_files, second.uploaded_bytes, guard.uploaded_bytes) == (0, 0, 0)
    assert second.hashed_files == 1  # only the database snapshot, taken afresh each run

    out = tmp_path / "restored"
    report = do_restore(settings, store, out)
    assert not report.problems and set(report.bytes_from) == {REMOTE}
    restored = tree_of(out)
    assert {k: v for k, v in restored.items() if k != "hub.db"} == files
    assert (out / "a.txt").stat().st_mode & 0o777 == 0o600
    assert (out / "big/model.safetensors").stat().st_mtime_ns == (
        root / "big/model.safetensors").stat().st_mtime_ns
    copy = sqlite3.connect(out / "hub.db")
    assert copy.execute("SELECT count(*) FROM t").fetchone() == (500,)
    copy.close()
    db.close()


def test_an_object_altered_behind_our_back_is_named_by_verify_and_refused_by_restore(
        tmp_path: Path, make_ops: MakeOps, backup_config: dict[str, Any]) -> None:
    root = tmp_path / "src"
    make_tree(root)
    settings, store = make_ops(root)
    run_backup(settings, "files", store)
    assert verify(store, "files", 4).problems == []

    entry = next(e for e in manifest.require(store, "files").files if e.path == "a.txt")
    assert entry.pack  # a small file: the pack that holds it (and others) is rewritten
    tamper(settings, "files", entry, b"ALPHA\n")
    assert verify(store, "files", 4).problems == ["a.txt: changed on the storage since it was "
                                                 "backed up"]

    config = write_config(tmp_path, backup_config, root)
    r = cli(config, "backup", "verify", "files")
    assert r.returncode == 1 and "a.txt" in r.stdout and "a.txt" in r.stderr, r

    out = tmp_path / "restored"
    report = do_restore(settings, store, out)
    assert len(report.problems) == 1 and report.problems[0].startswith("a.txt: the stored copy")
    assert not (out / "a.txt").exists() and (out / "empty").exists()
    r = cli(config, "restore", "files", "--to", str(tmp_path / "again"))
    assert r.returncode == 1 and "a.txt" in r.stderr and r.stderr.count("\n") == 1, r


def test_restore_takes_matching_files_from_a_tier_and_skips_local_ones(
        tmp_path: Path, make_ops: MakeOps, guard: R2Guard) -> None:
    root = tmp_path / "src"
    files = make_tree(root)
    settings, store = make_ops(root)
    run_backup(settings, "files", store)
    (root / "deep/er/still/x.bin").write_bytes(b"a different local copy")  # not taken

    out = tmp_path / "restored"
    out.mkdir()
    (out / "a.txt").write_bytes(b"alpha\n")
    report = do_restore(settings, store, out, tiers=[tmp_path / "no-such-tier", root])
    assert not report.problems
    assert report.bytes_from == {str(root): sum(len(d) for d in files.values()) - 6 - 70_000,
                                 "local": 6, REMOTE: 70_000}
    assert tree_of(out) == files

    guard.downloads = 0
    again = do_restore(settings, store, out, tiers=[root])
    assert set(again.bytes_from) == {"local"} and guard.downloads == 0


def test_every_file_in_a_tier_means_nothing_downloaded(
        tmp_path: Path, make_ops: MakeOps, guard: R2Guard) -> None:
    root = tmp_path / "src"
    files = make_tree(root)
    settings, store = make_ops(root)
    run_backup(settings, "files", store)
    guard.downloads = 0
    report = do_restore(settings, store, tmp_path / "restored", tiers=[root])
    assert guard.downloads == 0 and REMOTE not in report.bytes_from
    assert tree_of(tmp_path / "restored") == files


def write_config(tmp_path: Path, backup: dict[str, Any], root: Path | None = None,
                 data_dir: Path | None = None) -> Path:
    """A config file as a person writes it, the secret left to the environment; with a set
    `files` covering ROOT, else the ready-made sets."""
    lines = ["[backup]"] + [f"{k} = {v!r}" if isinstance(v, int) else f'{k} = "{v}"'
                            for k, v in backup.items() if k != "secret_access_key"]
    if root is not None:
        lines += ["[backup.sets.files]", f'root = "{root}"']
    path = tmp_path / "comfymulti.toml"
    path.write_text("\n".join([f'data_dir = "{data_dir or tmp_path / "data"}"', *lines]) + "\n")
    return path


def cli(config: Path, *args: str, secret: str = SECRET_KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COMFYMULTI_BACKUP__SECRET_ACCESS_KEY": secret}
    return subprocess.run([sys.executable, "-m", "comfymulti", "--config", str(config), *args],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(("change", "expected"), [
    ({"secret": "wrong-secret-key"}, "refused the credentials"),
    ({"bucket": "no-such-bucket-here"}, "does not exist"),
    ({"endpoint_url": "http://127.0.0.1:9"}, "cannot reach backup storage at"),
])
def test_destination_errors_are_one_clear_line(
        tmp_path: Path, backup_config: dict[str, Any], change: dict[str, str],
        expected: str) -> None:
    root = tmp_path / "src"
    make_tree(root)
    secret = change.pop("secret", SECRET_KEY)
    config = write_config(tmp_path, {**backup_config, **change}, root)
    r = cli(config, "backup", "run", "files", secret=secret)
    assert r.returncode != 0 and expected in r.stderr, r
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    assert secret not in r.stderr + r.stdout
    assert manifest.read(ObjectStore(load_settings(None, backup=backup_config).backup),
                         "files") is None


def test_cli_backup_and_restore_round_trip_with_json(
        tmp_path: Path, backup_config: dict[str, Any]) -> None:
    import json

    root = tmp_path / "src"
    files = make_tree(root)
    config = write_config(tmp_path, backup_config, root)
    r = cli(config, "backup", "run", "files", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files"] == len(files)
    r = cli(config, "restore", "files", "--to", str(tmp_path / "out"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bytes_from"] == {"remote": sum(map(len, files.values()))}
    assert tree_of(tmp_path / "out") == files


def test_init_writes_three_ready_made_sets_and_the_secret_comes_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    sets = tomllib.loads(render_toml())["backup"]["sets"]
    assert set(sets) == {"user-files", "node-state", "models"}
    assert sets["user-files"]["paths"][:2] == ["comfymulti.db", "users"]
    monkeypatch.setenv("COMFYMULTI_BACKUP__SECRET_ACCESS_KEY", "from-env")
    settings = load_settings(None)
    assert settings.backup.secret_access_key.get_secret_value() == "from-env"
    assert "from-env" not in repr(settings.backup)


def test_the_guard_catches_what_r2_refuses() -> None:
    from types import SimpleNamespace

    request = SimpleNamespace(
        url="http://127.0.0.1/b/k?partNumber=1&uploadId=u", method="PUT",
        headers={"Content-Encoding": "aws-chunked", "X-Amz-Trailer": "x-amz-checksum-crc32"})
    g = R2Guard()
    g.check_headers(request)
    for number, size in ((1, 5), (2, 6), (3, 1)):
        g.record_part({"UploadId": "u", "PartNumber": number, "Body": b"x" * size})
    g.check_parts({"UploadId": "u", "Key": "k"})
    assert len(g.violations) == 4, g.violations


def test_a_file_changed_while_uploading_is_not_recorded(
        tmp_path: Path, make_ops: MakeOps) -> None:
    from comfymulti.errors import StorageError

    root = tmp_path / "src"
    make_tree(root)
    settings, store = make_ops(root)
    big = root / "big/model.safetensors"

    def append_during_first_part(params: dict[str, Any], **_: Any) -> None:
        if params["PartNumber"] == 1:
            with big.open("ab") as fh:
                fh.write(b"written by ComfyUI meanwhile")

    store.client.meta.events.register("provide-client-params.s3.UploadPart",
                                      append_during_first_part)
    with pytest.raises(StorageError, match=r"big/model\.safetensors"):
        run_backup(settings, "files", store)
    assert manifest.read(store, "files") is None


def test_a_file_rewritten_in_place_while_uploading_is_refused_by_its_part_checksum(
        tmp_path: Path, make_ops: MakeOps) -> None:
    """Same size, same mtime: only the part sums taken when the file was hashed can tell (the
    storage checks each part against its sum)."""
    from comfymulti.errors import StorageError

    root = tmp_path / "src"
    make_tree(root)
    settings, store = make_ops(root, paths=["big"])
    big = root / "big/model.safetensors"

    def rewrite_after_hashing(**_: Any) -> None:
        st = big.stat()
        with big.open("r+b") as fh:
            fh.seek(11 * MIB)
            fh.write(b"rewritten")
        os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))

    store.client.meta.events.register("provide-client-params.s3.CreateMultipartUpload",
                                      rewrite_after_hashing)
    with pytest.raises(StorageError, match=r"model\.safetensors.*changed while being backed up"):
        run_backup(settings, "files", store)
    assert manifest.read(store, "files") is None
    assert not store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads")
