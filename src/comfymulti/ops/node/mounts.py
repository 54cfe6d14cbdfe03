"""The SFS and the scratch volume: mounted once, found mounted on every later run.

With no source configured, a folder already present counts (a machine set up by hand, or a
test's temporary folder). A block device is formatted only when `blkid` finds no file system
on it, so a volume holding data is never wiped.
"""

from __future__ import annotations

import os
from pathlib import Path

from comfymulti.errors import NodeError
from comfymulti.ops.node.shell import run

_NFS_OPTIONS = "nconnect=16"


def ensure_sfs(point: Path, source: str, fstab: Path) -> tuple[bool, str]:
    """Mount the shared file system (NFS) at point unless it is there already."""
    if (found := _present(point, source, "--sfs-source")) is not None:
        return False, found
    point.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "nfs", "-o", _NFS_OPTIONS, source, str(point)])
    _check_mounted(point, source)
    _remember(fstab, [source, str(point), "nfs", f"defaults,{_NFS_OPTIONS},nofail", "0", "0"])
    return True, f"mounted {source} on {point}"


def ensure_block(point: Path, device: str, fstab: Path) -> tuple[bool, str]:
    """Mount a block volume at point, formatting it first only if it holds no file system."""
    if (found := _present(point, device, "--scratch-device")) is not None:
        return False, found
    point.mkdir(parents=True, exist_ok=True)
    formatted = not has_filesystem(device)
    if formatted:
        run(["mkfs.ext4", "-q", device])
    run(["mount", device, str(point)])
    _check_mounted(point, device)
    _remember(fstab, [device, str(point), "ext4", "defaults,nofail", "0", "2"])
    return True, f"{'formatted and ' if formatted else ''}mounted {device} on {point}"


def has_filesystem(device: str) -> bool:
    """blkid's low-level probe: exit 0 with a type found, 2 for nothing found."""
    return run(["blkid", "-p", "-o", "value", "-s", "TYPE", device], ok=(0, 2)).returncode == 0


def _present(point: Path, source: str, option: str) -> str | None:
    if os.path.ismount(point):
        return f"{point} already mounted"
    if source:
        return None
    if point.is_dir():
        return f"{point} present (nothing to mount: no {option})"
    raise NodeError(f"{point} is neither mounted nor present; pass {option}")


def _check_mounted(point: Path, source: str) -> None:
    if not os.path.ismount(point):
        raise NodeError(f"mounting {source} on {point} reported success but nothing is mounted")


def _fstab_field(text: str) -> str:
    """fstab separates fields by blanks; blanks and backslashes inside one are octal escapes."""
    return "".join(f"\\{ord(ch):03o}" if ch in " \t\n\\" else ch for ch in text)


def _remember(fstab: Path, fields: list[str]) -> None:
    """Add the mount to fstab (once), so a restarted machine mounts it again."""
    line = " ".join(_fstab_field(f) for f in fields)
    current = fstab.read_text() if fstab.exists() else ""
    if any(entry.split()[:2] == line.split()[:2] for entry in current.splitlines()):
        return
    with fstab.open("a") as fh:
        fh.write(("\n" if current and not current.endswith("\n") else "") + line + "\n")
