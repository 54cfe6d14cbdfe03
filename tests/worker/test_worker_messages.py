"""What the worker says when it cannot work: ComfyUI or the hub unreachable (repeated while it
lasts, not per retry), TLS refused (naming --ca), URLs swapped or with a wrong path (fatal, one
line), and which Python a launched ComfyUI runs with."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import pytest

from comfymulti.errors import ConfigError
from comfymulti.worker.comfyui import ComfyUIClient
from comfymulti.worker.hub_client import HubClient
from comfymulti.worker.notices import Notices
from comfymulti.worker.supervisor import Supervisor, comfyui_python
from tests.conftest import free_port
from tests.deploy.conftest import tls_server
from tests.fakes.comfyui import FakeComfyUI
from tests.test_cli import run

log = logging.getLogger("test.notices")


def test_a_lasting_problem_is_repeated_every_interval_not_per_retry(caplog) -> None:
    now = [0.0]
    notices = Notices(log, every=30.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.notices"):
        for step in range(1000):  # a retry every 0.1 s for 100 s
            now[0] = step / 10
            notices.problem("comfyui", "ComfyUI down")
        notices.resolved("comfyui", "ComfyUI back")
        notices.resolved("comfyui", "ComfyUI back")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["ComfyUI down", "ComfyUI down (for 30 s)", "ComfyUI down (for 60 s)",
                     "ComfyUI down (for 90 s)", "ComfyUI back"]


async def _problems(caplog, coro, seconds: float = 1.0) -> list[str]:
    with caplog.at_level(logging.WARNING), pytest.raises(TimeoutError):
        await asyncio.wait_for(coro, seconds)
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.anyio
async def test_comfyui_unreachable_is_said_at_once_with_what_to_do(caplog) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    comfy = ComfyUIClient(url, notices=Notices(logging.getLogger("w"), every=0.4))
    try:
        said = await _problems(caplog, comfy.wait_ready(), 1.0)
    finally:
        await comfy.aclose()
    assert 2 <= len(said) <= 3, said  # at once, then every 0.4 s; retries are more often
    assert said[0].startswith(f"ComfyUI at {url}: nothing answers")
    assert "--launch-comfyui" in said[0]


@pytest.mark.anyio
async def test_hub_unreachable_is_said_while_the_worker_waits(caplog) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    hub = HubClient(url, "cmw_x", backoff_max=0.1,
                    notices=Notices(logging.getLogger("w"), every=10))
    try:
        said = await _problems(caplog, hub.identify(), 0.8)
    finally:
        await hub.aclose()
    assert len(said) == 1 and said[0].startswith(f"hub at {url}: nothing answers")


@pytest.mark.anyio
async def test_untrusted_tls_names_the_ca_option(caplog, tmp_path: Path) -> None:
    with tls_server(tmp_path) as (url, cert):
        await _untrusted_then_trusted(caplog, url, cert)


async def _untrusted_then_trusted(caplog, url: str, cert: Path) -> None:
    hub = HubClient(url, "cmw_x", backoff_max=0.1)
    try:
        said = await _problems(caplog, hub.identify(), 1.0)
    finally:
        await hub.aclose()
    assert said and "TLS certificate not trusted" in said[0] and "--ca FILE" in said[0]
    trusting = HubClient(url, "cmw_x", ca_bundle=str(cert))
    try:  # with --ca the TLS is fine, and what answers is plainly not a hub
        with pytest.raises(ConfigError, match="does not answer like a ComfyMulti hub"):
            await trusting.identify()
    finally:
        await trusting.aclose()


def test_swapped_urls_and_a_wrong_path_are_one_line(live_hub) -> None:
    _, hub_url = live_hub()
    comfy = FakeComfyUI().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMULTI_")}
    try:
        for hub, comfyui, says in (
                (comfy.url, hub_url, "answers like ComfyUI: are --hub and --comfyui swapped"),
                (hub_url, hub_url, "answers like the ComfyMulti hub: are --hub and --comfyui"),
                (f"{hub_url}/u/user001", comfy.url, "without a path")):
            r = run("worker", "--hub", hub, "--comfyui", comfyui, "--token", "cmw_x", env=env)
            assert r.returncode == 2 and says in r.stderr, r.stderr
            assert "Traceback" not in r.stderr
    finally:
        comfy.close()


def test_no_token_hint_is_the_real_command() -> None:
    r = run("worker", "--hub", "http://127.0.0.1:9", env={
        k: v for k, v in os.environ.items() if not k.startswith("COMFYMULTI_")})
    assert r.returncode == 2 and "'comfymulti workers token --name NAME'" in r.stderr


def test_launched_comfyui_runs_with_its_own_venv(tmp_path: Path, caplog) -> None:
    (tmp_path / "main.py").write_text("")
    with caplog.at_level(logging.WARNING):
        assert comfyui_python(tmp_path) == sys.executable
    assert "--comfyui-python" in caplog.text
    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    assert comfyui_python(tmp_path) == str(venv_python)
    chosen = tmp_path / "other-python"
    assert comfyui_python(tmp_path, chosen) == str(chosen)
    sup = Supervisor(tmp_path, port=8188, python=comfyui_python(tmp_path))
    assert sup.command[:2] == [str(venv_python), "main.py"]
