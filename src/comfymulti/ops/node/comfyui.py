"""ComfyUI on the GPU machine: a pinned release cloned into its folder with its own venv, once;
found in place on every later run (a half-done clone or install is redone, never trusted)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from comfymulti.errors import NodeError
from comfymulti.ops.node.settings import NodeSettings
from comfymulti.ops.node.shell import run

_INSTALLED = ".comfymulti-installed"  # in the venv: the requirements it was built from


def ensure(node: NodeSettings) -> tuple[bool, str]:
    """ComfyUI's main.py and a Python to run it, installing what is missing."""
    folder = Path(node.comfyui_dir)
    done = []
    if not (folder / "main.py").is_file():
        if not node.comfyui_repo:
            raise NodeError(f"ComfyUI not found: no {folder / 'main.py'} and no --comfyui-repo "
                            "to install it from")
        _clone(node.comfyui_repo, node.comfyui_ref, folder)
        done.append(f"cloned {node.comfyui_ref} into {folder}")
    if node.comfyui_python:  # a Python the organiser set up: used as it is
        if not Path(node.comfyui_python).is_file():
            raise NodeError(f"no Python at {node.comfyui_python} to run ComfyUI "
                            "(pass --comfyui-python)")
    elif _install_venv(folder):
        done.append(f"installed its requirements into {folder / '.venv'}")
    return bool(done), "; ".join(done) or f"{folder} ready"


def _clone(repo: str, ref: str, folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        raise NodeError(f"{folder} holds files but no main.py; move them or pass --comfyui-dir")
    partial = folder.with_name(f".{folder.name}.cloning")
    shutil.rmtree(partial, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    run(["git", "clone", "--quiet", "--depth", "1", "--branch", ref, repo, str(partial)])
    if folder.exists():
        folder.rmdir()
    os.replace(partial, folder)


def _install_venv(folder: Path) -> bool:
    """Build folder/.venv from requirements.txt unless it was built from this very file."""
    venv, requirements = folder / ".venv", folder / "requirements.txt"
    wanted = hashlib.sha256(requirements.read_bytes() if requirements.exists() else b"")
    marker = venv / _INSTALLED
    if marker.exists() and marker.read_text() == wanted.hexdigest():
        return False
    run(["python3", "-m", "venv", str(venv)])
    if requirements.exists():
        run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", "-r", str(requirements)])
    marker.write_text(wanted.hexdigest())
    return True
