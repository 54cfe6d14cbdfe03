"""The ComfyUI launcher and the `comfymulti worker` command's checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from comfymulti import cli
from comfymulti.config import load_settings
from comfymulti.errors import ConfigError
from comfymulti.worker.command import worker
from comfymulti.worker.supervisor import Supervisor
from tests.worker.util import until

MAIN = """\
import pathlib, sys, time
runs = pathlib.Path("runs.txt")
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
print("args", sys.argv[1:], flush=True)
if n == 1:
    sys.exit(3)  # crash on the first start
time.sleep(60)
"""


@pytest.mark.anyio
async def test_supervisor_restarts_a_crashed_comfyui_and_stops_it(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(MAIN)
    log = tmp_path / "logs" / "comfyui.log"
    sup = Supervisor(tmp_path, port=8555, extra_args=["--cpu"], log_path=log,
                     first_backoff=0.05)
    task = asyncio.create_task(sup.run())
    await until(lambda: (tmp_path / "runs.txt").exists() and
                (tmp_path / "runs.txt").read_text() == "2" and "args" in log.read_text()
                and log.read_text().count("args") == 2)
    process = sup.process
    assert process is not None and process.returncode is None
    await sup.stop(timeout=5)
    await asyncio.wait_for(task, 5)
    assert process.returncode is not None and sup.starts == 2
    expected = "args ['--listen', '127.0.0.1', '--port', '8555', '--cpu']"
    assert log.read_text().count(expected) == 2


def test_supervisor_needs_comfyuis_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"main\.py"):
        Supervisor(tmp_path, port=1)


@pytest.fixture
def no_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.state, "settings", load_settings(None))


def _run(**options: object) -> None:
    args: dict[str, object] = {"hub": None, "token": None, "comfyui": None, "name": None,
                               "prefetch": None, "launch_comfyui": None, "comfyui_log": None,
                               "comfyui_args": None}
    args.update(options)
    worker(**args)  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_config")
@pytest.mark.parametrize(("options", "message"), [
    ({}, "no worker token"),
    ({"token": "cmw_x", "hub": "ftp://hub"}, "must be an http"),
    ({"token": "cmw_x", "comfyui": "localhost:8188"}, "must be an http"),
    ({"token": "cmw_x", "prefetch": 9}, "between 0 and 8"),
    ({"token": "cmw_x", "comfyui_args": ["--cpu"]}, "need --launch-comfyui"),
])
def test_worker_command_refuses_bad_settings(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _run(**options)
