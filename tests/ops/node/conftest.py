"""A GPU machine in temporary folders: SFS and scratch are plain folders, node-state restores
into a stand-in for /, systemctl is a stub that records every call, and the backups live on
the real S3 server (SeaweedFS) standing in for R2."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from comfymulti.config import Settings, load_settings
from comfymulti.ops.backup.backup import run_backup
from comfymulti.ops.backup.s3 import ObjectStore
from comfymulti.ops.node.script import node_config
from comfymulti.ops.node.settings import NodeSettings
from tests.ops.conftest import R2Guard

TOKEN = "cmw_node-test-token-0123456789"
IDENTITY = "etc/comfymulti/identity"
HOST_KEY = "etc/ssh/ssh_host_ed25519_key"
MODELS = {"checkpoints/base.safetensors": os.urandom(300_000),
          "loras/style.safetensors": os.urandom(120_000),
          "text_encoders/clip l.safetensors": os.urandom(50_000)}

# Records each call, with whether the restored identity was already there at that moment;
# keeps "active" units as files so is-active answers like systemd.
_SYSTEMCTL = """#!/bin/bash
printf '%s identity=%s\\n' "$*" "$([ -f {identity} ] && echo yes || echo no)" >>{log}
case "$1" in
  is-active) [ -f {state}/"$3" ] ;;
  enable) touch {state}/"$3" ;;
  daemon-reload|restart|try-restart) ;;
  *) exit 1 ;;
esac
"""


@dataclass
class Rig:
    tmp: Path
    settings: Settings  # the node's
    node: NodeSettings
    store: ObjectStore  # guarded
    config: Path

    @property
    def root(self) -> Path:
        return self.tmp / "root"

    @property
    def sfs(self) -> Path:
        return Path(self.node.sfs_mount)

    def systemctl_calls(self) -> list[str]:
        log = self.tmp / "systemctl.log"
        return log.read_text().splitlines() if log.exists() else []

    def units(self) -> list[str]:
        return sorted(p.name for p in Path(self.node.unit_dir).iterdir())


def backup_sets(root: Path, models: Path) -> dict[str, Any]:
    return {"node-state": {"root": str(root), "paths": ["etc/ssh", "etc/comfymulti"]},
            "models": {"root": str(models)}}


UNREACHABLE = "http://127.0.0.1:9"


@pytest.fixture
def make_rig(tmp_path: Path, backup_config: dict[str, Any], guard: R2Guard
             ) -> Callable[..., Rig]:
    """An old machine's identity and the model library backed up; a fresh node to bootstrap.

    The fresh SFS already holds every model (as on a workshop day); ssh has made new host keys.
    """

    def make(hub_url: str = UNREACHABLE, **node: Any) -> Rig:
        old, library = tmp_path / "old-machine", tmp_path / "library"
        for rel, data in {IDENTITY: b"node 7\n", HOST_KEY: b"old host key\n"}.items():
            (old / rel).parent.mkdir(parents=True, exist_ok=True)
            (old / rel).write_bytes(data)
        for rel, data in MODELS.items():
            (library / rel).parent.mkdir(parents=True, exist_ok=True)
            (library / rel).write_bytes(data)
        organiser = load_settings(None, data_dir=str(tmp_path / "organiser"),
                                  backup={**backup_config, "sets": backup_sets(old, library)})
        raw = ObjectStore(organiser.backup)
        run_backup(organiser, "node-state", raw)
        run_backup(organiser, "models", raw)

        root, sfs, scratch = tmp_path / "root", tmp_path / "sfs", tmp_path / "scratch"
        (root / HOST_KEY).parent.mkdir(parents=True)
        (root / HOST_KEY).write_bytes(b"host key made at boot\n")
        for rel, data in MODELS.items():
            (sfs / "models" / rel).parent.mkdir(parents=True, exist_ok=True)
            (sfs / "models" / rel).write_bytes(data)
        scratch.mkdir()
        comfyui = tmp_path / "ComfyUI"
        comfyui.mkdir()
        (comfyui / "main.py").write_text("# stands in for ComfyUI\n")
        systemctl = tmp_path / "systemctl"
        systemctl.write_text(_SYSTEMCTL.format(
            identity=shlex.quote(str(root / IDENTITY)),
            log=shlex.quote(str(tmp_path / "systemctl.log")),
            state=shlex.quote(str(tmp_path / "active"))))
        systemctl.chmod(0o755)
        (tmp_path / "active").mkdir()
        options = {"sfs_mount": str(sfs), "scratch_mount": str(scratch),
                   "comfyui_dir": str(comfyui), "comfyui_python": sys.executable,
                   "unit_dir": str(tmp_path / "units"), "systemctl": str(systemctl),
                   "fstab": str(tmp_path / "fstab"), "state_dir": str(tmp_path / "state"),
                   # a slow shared machine may keep a live hub's /health probe past its
                   # deadline once: wait a little for it, as a real bootstrap waits minutes
                   "hub_wait": 0 if hub_url == UNREACHABLE else 10, **node}
        settings = load_settings(
            None, data_dir=str(tmp_path / "state" / "data"), worker={"hub_url": hub_url},
            hub={"public_url": hub_url},
            backup={**backup_config, "sets": backup_sets(root, sfs / "models")})
        store = ObjectStore(settings.backup)
        guard.attach(store.client)
        rig = Rig(tmp_path, settings, NodeSettings(**options), store,
                  tmp_path / "state" / "comfymulti.toml")
        rig.config.parent.mkdir(parents=True, exist_ok=True)
        rig.config.write_text(node_config(settings, TOKEN, rig.node))
        return rig

    return make
