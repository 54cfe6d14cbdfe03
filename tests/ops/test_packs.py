"""Small files travel in packs: few requests, each pack at most a part, equal contents stored
once, and a restore fetching only what no copy holds, one request per pack."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from comfymulti.config import Settings
from comfymulti.ops.backup import manifest
from comfymulti.ops.backup.backup import run_backup
from comfymulti.ops.backup.packs import MEMBER_MAX
from comfymulti.ops.backup.s3 import MIB, ObjectStore
from tests.ops.conftest import R2Guard
from tests.ops.test_backup import do_restore, tree_of

MakeOps = Callable[..., tuple[Settings, ObjectStore]]


def write(root: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_packs_hold_at_most_a_part_equal_contents_once_and_big_files_stay_blobs(
        tmp_path: Path, make_ops: MakeOps, guard: R2Guard) -> None:
    root = tmp_path / "src"
    files = write(root, {f"small/{i:02d}.bin": os.urandom(MEMBER_MAX) for i in range(12)})
    files |= write(root, {"copy/one.txt": b"same\n", "copy/two.txt": b"same\n",
                          "blob.bin": os.urandom(MEMBER_MAX + 1)})
    settings, store = make_ops(root)  # 5 MiB parts
    sizes: dict[str, int] = {}
    store.client.meta.events.register(
        "provide-client-params.s3.PutObject",
        lambda params, **_: sizes.__setitem__(params["Key"], len(params["Body"])))

    report = run_backup(settings, "files", store)
    packs = {k: n for k, n in sizes.items() if "/packs/" in k}
    assert sorted(packs.values()) == [3 * MIB, 4 * MIB + 5, 5 * MIB]  # 12 MiB, "same\n" once
    assert [k for k in sizes if "/blobs/" in k] == [k for k in guard.puts if "/blobs/" in k]
    assert len(guard.puts) == 4 and report.uploaded_files == 15
    entries = {e.path: e for e in manifest.require(store, "files").files}
    assert entries["copy/one.txt"].stored == entries["copy/two.txt"].stored
    assert not entries["blob.bin"].pack and all(entries[r].pack for r in files if r != "blob.bin")

    # A tier holds every file but one small file from each of two packs: two ranged GETs.
    tier = tmp_path / "tier"
    wanted = ["small/00.bin", "small/11.bin"]
    write(tier, {rel: data for rel, data in files.items() if rel not in wanted})
    assert len({entries[r].pack for r in wanted}) == 2
    guard.downloads = 0
    restored = do_restore(settings, store, tmp_path / "out", tiers=[tier])
    assert restored.problems == [] and tree_of(tmp_path / "out") == files
    assert guard.downloads == 2 and restored.bytes_from["remote"] == 2 * MEMBER_MAX


def test_a_manifest_written_before_packs_still_restores(
        tmp_path: Path, make_ops: MakeOps) -> None:
    root = tmp_path / "src"
    files = write(root, {"a.bin": os.urandom(MEMBER_MAX + 1), "b.bin": os.urandom(2 * MIB)})
    settings, store = make_ops(root)
    report = run_backup(settings, "files", store)
    key = store.key("files", "manifests", f"{report.run}.json")
    body = json.loads(store.get_bytes(key) or b"")
    body["format"] = 1
    for entry in body["files"]:  # format 1 had no pack or offset
        assert entry.pop("pack") == "" and entry.pop("offset") == 0
    store.put_bytes(key, json.dumps(body).encode())

    restored = do_restore(settings, store, tmp_path / "out")
    assert restored.problems == [] and tree_of(tmp_path / "out") == files
