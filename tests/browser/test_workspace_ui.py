"""The official frontend in Debian's chromium against a live hub, a real worker process and
the ComfyUI protocol test server: log in, missing-model check, Run, output, reload mid-job."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests import testdata
from tests.browser.conftest import SCREENSHOTS, login, unexpected
from tests.conftest import HubHarness, LiveServer, wait_for_worker
from tests.fakes.comfyui import FakeComfyUI

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IMAGE = {"1": {"class_type": "EmptyImage", "inputs": {"width": 256, "height": 256,
                                                       "batch_size": 1, "color": 16744448}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                      "filename_prefix": "ComfyUI"}}}


@pytest.fixture
def stack(make_hub) -> Iterator[tuple[HubHarness, str, FakeComfyUI]]:
    harness = make_hub()
    harness.user("user002")
    server = LiveServer(harness.app).start()
    fake = FakeComfyUI(models={"checkpoints": ["base.safetensors"]}).start()
    worker = subprocess.Popen(
        [sys.executable, "-m", "comfymulti", "worker", "--hub", server.url, "--token",
         harness.worker_token(), "--comfyui", fake.url, "--name", "gpu-1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_worker(harness)
    try:
        yield harness, server.url, fake
    finally:
        worker.terminate()
        worker.wait(15)
        server.stop()
        fake.close()


def test_ui_mounts_checks_models_runs_and_shows_output(stack, page) -> None:
    harness, url, _fake = stack
    login(page, url, harness)
    assert unexpected(page.failures) == [], page.failures
    page.screenshot(path=SCREENSHOTS / "01-mounted.png")

    # Three loaders whose files no worker has, declared in `properties.models` as
    # ComfyUI's templates do: the frontend lists them with their download links.
    workflow = json.loads((testdata.WORKFLOWS / "missing_models.json").read_text())
    page.evaluate("wf => window.app.loadGraphData(wf)", workflow)
    page.get_by_text("View details").first.click()
    section = page.get_by_text("Missing Models").first
    section.wait_for(timeout=15_000)
    panel = section.locator("xpath=ancestor::*[contains(., 'Download all')][1]").inner_text()
    for model in ("flux-2-klein-base-4b.safetensors", "qwen_3_4b.safetensors",
                  "flux2-vae.safetensors"):
        assert model in panel.replace("\n", ""), (model, panel)
    page.screenshot(path=SCREENSHOTS / "02-missing-models.png")
    page.keyboard.press("Escape")

    page.evaluate("p => window.app.loadApiJson(p, 'image.json')", IMAGE)
    with page.expect_response(lambda r: "/u/user002/api/view" in r.url and r.ok,
                              timeout=30_000) as view:
        page.get_by_role("button", name="Run").first.click()
    assert view.value.headers["content-type"] == "image/png"
    assert view.value.body().startswith(b"\x89PNG")
    # The Save Image node shows the output: the frontend draws it on the canvas from the
    # node's loaded image (there may be no <img> element in the page at all).
    page.wait_for_function("""() => {
        const node = window.app.graph.getNodeById(2);
        return (node?.imgs ?? []).some(i => i.complete && i.naturalWidth > 0
                                       && i.src.includes('/u/user002/api/view'));
    }""", timeout=15_000)
    page.screenshot(path=SCREENSHOTS / "03-output.png")
    # The queue/history panel lists the job with its image.
    page.get_by_text("0 active").first.click()
    page.wait_for_timeout(1000)
    page.screenshot(path=SCREENSHOTS / "04-queue-panel.png")
    jobs = page.evaluate("fetch('api/jobs?status=completed').then(r => r.json())")
    assert jobs["jobs"][0]["preview_output"]["filename"].endswith(".png")
    assert unexpected(page.failures) == [], page.failures


def test_reload_mid_job_keeps_showing_progress(stack, page) -> None:
    harness, url, fake = stack
    fake.node_seconds = 6.0  # a 12 s job: the reload (3-5 s) lands in the middle
    login(page, url, harness)
    page.evaluate("p => window.app.loadApiJson(p, 'image.json')", IMAGE)
    page.get_by_role("button", name="Run").first.click()
    page.wait_for_function(
        "fetch('api/jobs?status=in_progress').then(r => r.json())"
        ".then(b => b.jobs.length > 0)", timeout=20_000)
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(
        f if isinstance(f, str) else "")))
    page.reload()
    page.wait_for_function("window.app && window.app.graph", timeout=60_000)
    # Our extension (loaded through /api/extensions) shows the job's place in the queue.
    badge = page.locator("#comfymulti-queue")
    badge.wait_for(state="visible", timeout=10_000)
    assert "Your jobs: 1 running" in badge.inner_text()
    page.screenshot(path=SCREENSHOTS / "05-reloaded-mid-job.png")
    with page.expect_response(lambda r: "/u/user002/api/view" in r.url and r.ok,
                              timeout=30_000):
        pass
    kinds = [json.loads(f)["type"] for f in frames if f.startswith("{")]
    assert "executing" in kinds or "progress_state" in kinds, kinds
    assert "executed" in kinds, kinds
    page.screenshot(path=SCREENSHOTS / "06-after-reload.png")
