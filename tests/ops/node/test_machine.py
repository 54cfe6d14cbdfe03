"""The machine-level parts on real tools: a loop device standing in for the scratch volume
(mkfs, mount, blkid), and the units read by systemd's own checker whatever the paths hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfymulti.config import load_settings
from comfymulti.errors import ConfigError, NodeError
from comfymulti.ops.node import comfyui, mounts, units
from comfymulti.ops.node.settings import NodeSettings

ODD = "odd dir $HOME %k 'q' \"d\" \\b"


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True,
                          timeout=60).stdout.strip()


def test_a_new_scratch_volume_is_formatted_once_and_one_holding_data_is_never_wiped(
        tmp_path: Path) -> None:
    image = tmp_path / "scratch.img"
    with image.open("wb") as fh:
        fh.truncate(16 * 1024 * 1024)
    device = sh("losetup", "--find", "--show", str(image))
    point, fstab = tmp_path / "scratch point", tmp_path / "fstab"
    try:
        assert mounts.ensure_block(point, device, fstab) == (
            True, f"formatted and mounted {device} on {point}")
        (point / "canary").write_text("kept")
        assert mounts.ensure_block(point, device, fstab) == (False, f"{point} already mounted")

        sh("umount", str(point))  # as after a restart of the machine
        assert mounts.ensure_block(point, device, fstab) == (
            True, f"mounted {device} on {point}")
        assert (point / "canary").read_text() == "kept"
        escaped = str(point).replace(" ", "\\040")
        assert fstab.read_text() == f"{device} {escaped} ext4 defaults,nofail 0 2\n"
    finally:
        if os.path.ismount(point):
            sh("umount", str(point))
        sh("losetup", "--detach", device)


def test_a_mount_point_neither_mounted_nor_present_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(NodeError, match=r"neither mounted nor present; pass --sfs-source"):
        mounts.ensure_sfs(tmp_path / "sfs", "", tmp_path / "fstab")
    (tmp_path / "sfs").mkdir()
    assert mounts.ensure_sfs(tmp_path / "sfs", "", tmp_path / "fstab")[0] is False


def test_units_with_odd_paths_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    odd = tmp_path / ODD
    (odd / "ComfyUI").mkdir(parents=True)
    python = tmp_path / "py thon %k" / "python"  # what systemd allows in a program's path
    python.parent.mkdir()
    python.symlink_to(sys.executable)
    node = NodeSettings(sfs_mount=str(odd / "sfs"), scratch_mount=str(odd / "scratch"),
                        comfyui_dir=str(odd / "ComfyUI"), comfyui_python=str(python))
    rendered = units.render(load_settings(None), node, odd / "comfymulti.toml",
                            odd / "extra_model_paths.yaml")
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for name, text in rendered.items():
        (unit_dir / name).write_text(text)
    checked = subprocess.run(["/usr/bin/systemd-analyze", "verify",
                              *(str(unit_dir / n) for n in rendered)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked
    assert '"--port" "8188"' in rendered[units.COMFYUI]
    assert "%%k" in rendered[units.COMFYUI] and "$$HOME" in rendered[units.WORKER]


def test_a_program_path_systemd_cannot_run_is_refused_by_name(tmp_path: Path) -> None:
    node = NodeSettings(comfyui_python=str(tmp_path / ODD / "python"))
    with pytest.raises(ConfigError, match=r"systemd cannot run a program whose path holds"):
        units.render(load_settings(None), node, tmp_path / "c.toml", tmp_path / "m.yaml")


def git(repo: Path, *args: str) -> None:
    sh("git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args)


def test_comfyui_is_cloned_at_its_tag_into_its_own_venv_once(tmp_path: Path) -> None:
    source = tmp_path / "ComfyUI-source"
    source.mkdir()
    git(source, "init", "--quiet")
    (source / "main.py").write_text("# release\n")
    (source / "requirements.txt").write_text("# nothing to fetch\n")
    git(source, "add", ".")
    git(source, "commit", "--quiet", "-m", "release")
    git(source, "tag", "v9.9.9")
    (source / "main.py").write_text("# later work\n")
    git(source, "commit", "--quiet", "-am", "later")
    folder = tmp_path / "opt" / "ComfyUI"
    node = NodeSettings(comfyui_dir=str(folder), comfyui_repo=f"file://{source}",
                        comfyui_ref="v9.9.9")
    (tmp_path / "opt" / ".ComfyUI.cloning").mkdir(parents=True)  # a clone cut short before

    assert comfyui.ensure(node) == (True, f"cloned v9.9.9 into {folder}; installed its "
                                          f"requirements into {folder / '.venv'}")
    assert (folder / "main.py").read_text() == "# release\n"
    assert Path(node.python_for_comfyui).is_file()
    assert comfyui.ensure(node) == (False, f"{folder} ready")

    with pytest.raises(NodeError, match=r"no .*main\.py and no --comfyui-repo"):
        comfyui.ensure(NodeSettings(comfyui_dir=str(tmp_path / "none"), comfyui_repo=""))
