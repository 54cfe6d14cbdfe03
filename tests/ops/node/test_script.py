"""The generated startup script: ASCII, no shellcheck finding whatever the values, values
arriving intact, the token written only to a 0600 file; and a real run of it on the temp-folder
machine that ends in a working bootstrap."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from comfymulti.config import Settings, load_settings
from comfymulti.errors import ConfigError
from comfymulti.ops.node.script import startup_script
from comfymulti.ops.node.settings import NodeSettings
from tests.conftest import HubHarness
from tests.ops.node.conftest import IDENTITY, TOKEN, Rig

ODD = "a b'c\"d$(touch /tmp/pwned)`e`;f&g|h\\i\nj%k"
ODD_TOKEN = "cmw_" + ODD
CASES = {
    "defaults": ({}, {}),
    "odd values": (
        {"hub": {"public_url": "https://hub.example.org/" + ODD},
         "worker": {"name": "gpu " + ODD},
         "backup": {"endpoint_url": "https://acct.eu.r2.cloudflarestorage.com", "bucket": "b",
                    "prefix": "pr\u00e9fixe \u540d " + ODD, "access_key_id": "id" + ODD,
                    "secret_access_key": "s3cr3t" + ODD}},
        {"sfs_mount": "/mnt/s f s/" + ODD, "scratch_mount": "/mnt/scratch " + ODD,
         "sfs_source": "nfs.fin-01.datacrunch.io:/sfs-" + ODD, "scratch_device": "/dev/vdb",
         "models_dir": "/mnt/models " + ODD, "package": "comfymulti @ git+https://x/y.git#" + ODD,
         "state_dir": "/var/lib/comfy multi " + ODD, "hub_wait": 12.5}),
}


def shellcheck(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["shellcheck", "--severity=style", "--shell=bash", "-"],
                          input=script, capture_output=True, text=True, timeout=60)


def embedded_config(script: str, tmp_path: Path) -> Settings:
    toml = re.search(r"<<'COMFYMULTI_CONFIG_END'\n(.*)\nCOMFYMULTI_CONFIG_END\n", script,
                     re.S)
    assert toml is not None
    path = tmp_path / "node.toml"
    path.write_text(toml.group(1))
    return load_settings(path)


@pytest.mark.parametrize("case", CASES)
def test_the_script_is_ascii_passes_shellcheck_and_every_value_arrives_intact(
        tmp_path: Path, case: str) -> None:
    sections, node_options = CASES[case]
    settings = load_settings(None, **sections)
    node = NodeSettings(**node_options)
    token = ODD_TOKEN if node_options else TOKEN
    script = startup_script(settings, token, node)

    assert script.isascii()
    checked = shellcheck(script)
    assert checked.returncode == 0 and checked.stdout == "", checked.stdout

    config = embedded_config(script, tmp_path)
    assert config.worker.token.get_secret_value() == token
    assert config.worker.hub_url == settings.public_url and config.worker.name == \
        settings.worker.name
    assert config.backup == settings.backup
    assert str(config.data_dir) == f"{node.state_dir}/data"
    inside = script.index("<<'COMFYMULTI_CONFIG_END'"), script.rindex("\nCOMFYMULTI_CONFIG_END")
    mentions = [m.start() for m in re.finditer("cmw_", script)]
    assert len(mentions) == 1 and inside[0] < mentions[0] < inside[1]  # the 0600 file only

    words = shlex.split(script[script.rindex("\nexec ") + 1:])
    assert words[:6] == ["exec", "$comfymulti", "--config", "$config", "node", "bootstrap"]
    given = dict(zip(words[6::2], words[7::2], strict=True))
    expected = {f"--{k.replace('_', '-')}": str(v) for k, v in node_options.items()
                if k not in ("package", "state_dir")}
    assert given == expected
    assert shlex.quote(node.state_dir) in script and shlex.quote(node.package) in script


@pytest.mark.parametrize(("options", "token", "message"), [
    ({"sfs_mount": "/mnt/d\u00e9j\u00e0"}, TOKEN,
     "--sfs-mount '/mnt/d\u00e9j\u00e0' has non-ASCII"),
    ({}, "", "no worker token"),
])
def test_what_the_script_cannot_carry_is_refused_in_one_line(
        options: dict[str, str], token: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        startup_script(load_settings(None), token, NodeSettings(**options))


def test_running_the_script_writes_a_private_config_and_bootstraps_the_machine(
        make_rig: Callable[..., Rig], live_hub: Callable[..., tuple[HubHarness, str]],
        tmp_path: Path) -> None:
    _, url = live_hub()
    rig = make_rig(url)
    rig.config.unlink()
    script = tmp_path / "startup.sh"
    script.write_text(startup_script(rig.settings, TOKEN, rig.node))
    bin_dir = tmp_path / "bin"  # comfymulti as installed on the machine
    bin_dir.mkdir()
    (bin_dir / "comfymulti").write_text(
        f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m comfymulti \"$@\"\n")
    (bin_dir / "comfymulti").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin",
           "PYTHONPATH": os.pathsep.join(sys.path)}

    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert stat.S_IMODE(rig.config.stat().st_mode) == 0o600
    assert tomllib.loads(rig.config.read_text())["worker"]["token"] == TOKEN
    assert (rig.root / IDENTITY).read_bytes() == b"node 7\n"
    assert rig.units() == ["comfymulti-comfyui.service", "comfymulti-worker.service"]
    assert done.stdout.strip().splitlines()[-1].endswith("; 20 bytes downloaded"), done.stdout
    assert "step hub: " in done.stderr  # each step is logged
