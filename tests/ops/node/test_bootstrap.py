"""`node bootstrap` on a machine made of temporary folders, against a real S3 server and a real
hub: order, idempotence, resuming after a failure, and the units systemd would load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from comfymulti.errors import NodeError
from comfymulti.ops.backup import manifest
from comfymulti.ops.node.bootstrap import STEPS, bootstrap
from tests.conftest import HubHarness, LiveServer, free_port
from tests.ops.conftest import R2Guard, tamper
from tests.ops.node.conftest import HOST_KEY, IDENTITY, MODELS, TOKEN, Rig

MakeRig = Callable[..., Rig]
STYLE = "loras/style.safetensors"
IDENTITY_BYTES = len(b"node 7\n") + len(b"old host key\n")


def verify_units(rig: Rig) -> subprocess.CompletedProcess[str]:
    paths = [str(Path(rig.node.unit_dir) / name) for name in rig.units()]
    return subprocess.run(["/usr/bin/systemd-analyze", "verify", *paths], capture_output=True,
                          text=True, timeout=60)


def test_identity_comes_back_before_any_unit_models_come_from_the_sfs_and_a_rerun_does_nothing(
        make_rig: MakeRig, live_hub: Callable[..., tuple[HubHarness, str]],
        guard: R2Guard) -> None:
    _, url = live_hub()
    rig = make_rig(url)
    guard.downloads = 0
    report = bootstrap(rig.settings, rig.node, rig.config, rig.store)

    assert [s.name for s in report.steps] == [name for name, _ in STEPS]
    assert (rig.root / IDENTITY).read_bytes() == b"node 7\n"
    assert (rig.root / HOST_KEY).read_bytes() == b"old host key\n"
    calls = rig.systemctl_calls()
    assert calls == ["try-restart ssh.service identity=yes", "daemon-reload identity=yes",
                     "is-active --quiet comfymulti-comfyui.service identity=yes",
                     "enable --now comfymulti-comfyui.service identity=yes",
                     "is-active --quiet comfymulti-worker.service identity=yes",
                     "enable --now comfymulti-worker.service identity=yes"]
    models = next(s for s in report.steps if s.name == "models")
    assert not models.changed and "bytes from the backup" not in models.outcome
    assert guard.downloads == 1  # the pack of the two identity files; no model
    assert report.downloaded_bytes == IDENTITY_BYTES
    assert all((Path(rig.node.scratch_mount) / d).is_dir() for d in ("input", "output", "temp"))
    paths = json.loads((rig.settings.data_dir / "extra_model_paths.yaml").read_text())
    assert paths["comfymulti"]["base_path"] == str(rig.sfs / "models")
    assert {"checkpoints", "loras", "text_encoders"} <= set(paths["comfymulti"])
    checked = verify_units(rig)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked

    guard.downloads = 0
    again = bootstrap(rig.settings, rig.node, rig.config, rig.store)
    assert again.changed == [] and guard.downloads == 0 and again.downloaded_bytes == 0
    assert [c.split()[0] for c in rig.systemctl_calls()[len(calls):]] == ["is-active"] * 2


@pytest.mark.parametrize("models_dir", ["", "scratch/models"])
def test_a_model_missing_from_the_sfs_is_the_only_download(
        make_rig: MakeRig, live_hub: Callable[..., tuple[HubHarness, str]], guard: R2Guard,
        tmp_path: Path, models_dir: str) -> None:
    """Models on the SFS itself, or copied from it to another folder: only the missing one
    comes from the backup."""
    _, url = live_hub()
    rig = make_rig(url, models_dir=str(tmp_path / models_dir) if models_dir else "")
    (rig.sfs / "models" / STYLE).unlink()
    guard.downloads = 0
    report = bootstrap(rig.settings, rig.node, rig.config, rig.store)

    step = next(s for s in report.steps if s.name == "models")
    assert step.changed and guard.downloads == 1 + 1  # identity, and the model's pack
    assert report.downloaded_bytes == IDENTITY_BYTES + len(MODELS[STYLE])
    target = rig.node.models_path
    assert {rel: (target / rel).read_bytes() for rel in MODELS} == MODELS
    rest = sum(map(len, MODELS.values())) - len(MODELS[STYLE])
    where = str(rig.sfs / "models") if models_dir else "local"
    assert f"{rest} bytes from {where}" in step.outcome, step.outcome


def test_a_failed_step_stops_the_run_with_its_name_and_a_rerun_resumes(
        make_rig: MakeRig, guard: R2Guard) -> None:
    rig = make_rig()
    entry = next(e for e in manifest.require(rig.store, "models").files if e.path == STYLE)
    tamper(rig.settings, "models", entry, b"x" * entry.size)
    (rig.sfs / "models" / STYLE).unlink()

    with pytest.raises(NodeError, match=r"stopped at step 'models': .*loras/style\.safetensors"):
        bootstrap(rig.settings, rig.node, rig.config, rig.store)
    assert not Path(rig.node.unit_dir).exists()  # nothing after the failed step ran
    assert rig.systemctl_calls() == ["try-restart ssh.service identity=yes"]

    (rig.sfs / "models" / STYLE).write_bytes(MODELS[STYLE])  # the organiser puts it back
    guard.downloads = 0
    with pytest.raises(NodeError, match=r"stopped at step 'hub'"):
        bootstrap(rig.settings, rig.node, rig.config, rig.store)
    assert guard.downloads == 0  # node-state was done: not fetched again
    assert rig.units() == ["comfymulti-comfyui.service", "comfymulti-worker.service"]


def cli(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    options = [f"--{k.replace('_', '-')}={v}" for k, v in rig.node.model_dump().items()
               if k not in ("package", "state_dir")]
    return subprocess.run(
        [sys.executable, "-m", "comfymulti", "--config", str(rig.config), "node", "bootstrap",
         *options, *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_cli_an_unreachable_hub_is_one_error_line_and_the_rerun_only_waits_for_it(
        make_rig: MakeRig, make_hub: Callable[..., HubHarness]) -> None:
    port = free_port()
    rig = make_rig(f"http://127.0.0.1:{port}")
    failed = cli(rig, "--hub-wait", "0")
    assert failed.returncode == 1, failed
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: node bootstrap stopped at step 'hub': the hub at "
                           f"http://127.0.0.1:{port}/health did not answer"), failed.stderr
    assert "Traceback" not in failed.stderr and TOKEN not in failed.stderr + failed.stdout
    started = rig.systemctl_calls()

    server = LiveServer(make_hub().app, port).start()
    try:
        done = cli(rig, "--hub-wait", "10", "--json")
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [s["name"] for s in report["steps"] if s["changed"]] == []
    assert report["downloaded_bytes"] == 0
    assert [c.split()[0] for c in rig.systemctl_calls()[len(started):]] == ["is-active"] * 2
