"""The organiser's dashboard in Debian's chromium against a live hub, a real worker process
and the ComfyUI protocol test server, with two participants' workspaces open beside it: the
admin lands on /admin, sees a worker and user002's job arrive without reloading, cancels the
job (user002's workspace is told), drains the worker, publishes a template with a thumbnail
and sends an announcement that user003's workspace shows as a toast. Screenshots of each
panel go to build/screenshots/."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from comfymulti.hub.services import templates
from comfymulti.queue.jobs import Role
from tests.browser.conftest import SCREENSHOTS, login, unexpected
from tests.browser.test_first_minutes import workflow
from tests.browser.test_workspace_ui import IMAGE
from tests.conftest import HubHarness, LiveServer
from tests.fakes.comfyui import FakeComfyUI

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWPORT = {"width": 1280, "height": 800}
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
                       "DwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
PANELS = ("health", "queue", "workers", "users", "templates", "announcements")


@pytest.fixture
def stack(make_hub) -> Iterator[tuple[HubHarness, str, list[subprocess.Popen[bytes]]]]:
    harness = make_hub()
    for name, role in (("admin", Role.ADMIN), ("user002", Role.PARTICIPANT),
                       ("user003", Role.PARTICIPANT)):
        harness.user(name, role)
    server = LiveServer(harness.app).start()
    # Slow nodes: the job is still running when the admin cancels it.
    fake = FakeComfyUI(models={"checkpoints": ["base.safetensors"]}, node_seconds=20).start()
    harness.fake_url = fake.url  # type: ignore[attr-defined]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        yield harness, server.url, processes
    finally:
        for process in processes:
            process.terminate()
            process.wait(15)
        server.stop()
        fake.close()


def _panel(page: Any, name: str) -> Any:
    return page.locator(f"#{name}")


def _shoot(page: Any, name: str) -> None:
    _panel(page, name).screenshot(path=SCREENSHOTS / f"admin-{name}.png")


def test_dashboard_live_actions_reach_workspaces(stack, page) -> None:
    harness, url, processes = stack
    browser = page.context.browser
    admin = browser.new_context(viewport=VIEWPORT).new_page()
    errors: list[str] = []
    admin.on("pageerror", lambda e: errors.append(str(e)))
    admin.goto(url + "/")
    admin.fill("#username", "admin")
    admin.fill("#password", harness.passwords["admin"])
    admin.click("button[type=submit]")
    admin.wait_for_url(url + "/admin")
    admin.locator("#connection.live").wait_for(timeout=10_000)
    assert admin.locator("#workers-empty").is_visible()

    # A GPU worker starts: it appears without a reload.
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "comfymulti", "worker", "--hub", url, "--token",
         harness.worker_token(), "--comfyui", harness.fake_url, "--name", "gpu-1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    worker_row = admin.locator('#workers-rows tr[data-worker="gpu-1"]')
    worker_row.locator("td.state-online").wait_for(timeout=30_000)

    # user002 runs a job from their workspace: it appears in the queue panel, running.
    login(page, url, harness, "user002")
    page.evaluate("""() => { window.interrupted = [];
        window.comfyAPI.api.api.addEventListener('execution_interrupted',
            (e) => window.interrupted.push(e.detail.prompt_id)); }""")
    page.evaluate("p => window.app.loadApiJson(p, 'image.json')", IMAGE)
    page.get_by_role("button", name="Run").first.click()
    job_row = admin.locator("#queue-rows tr", has_text="user002")
    job_row.locator("td.state-running").wait_for(timeout=20_000)
    assert "gpu-1" in job_row.inner_text()
    job_id = job_row.get_attribute("data-job")
    _shoot(admin, "queue")

    # The admin cancels it: ComfyUI is interrupted and user002's workspace is told.
    job_row.get_by_role("button", name="Cancel").click()
    page.wait_for_function("id => window.interrupted.includes(id)", arg=job_id,
                           timeout=15_000)
    cancelled = page.evaluate("fetch('api/jobs?status=cancelled').then(r => r.json())")
    assert [j["id"] for j in cancelled["jobs"]] == [job_id]
    admin.locator("#queue-empty").wait_for(state="visible", timeout=10_000)
    page.screenshot(path=SCREENSHOTS / "user002-after-cancel.png")

    # Drain the worker.
    worker_row.get_by_role("button", name="Drain").click()
    worker_row.locator("td.state-draining, td.state-offline").wait_for(timeout=10_000)
    assert "1" not in worker_row.locator("td").nth(6).inner_text()  # nothing done today
    _shoot(admin, "workers")

    # Publish a template with a thumbnail, title and description; make it the default.
    admin.set_input_files("#tpl-file", files=[{
        "name": "Portrait.json", "mimeType": "application/json",
        "buffer": workflow("Portrait step one")}])
    admin.fill("#tpl-title", "Portrait in four steps")
    admin.fill("#tpl-description", "Start here on day one")
    admin.set_input_files("#tpl-thumbnail", files=[{
        "name": "portrait.png", "mimeType": "image/png", "buffer": PNG}])
    admin.get_by_role("button", name="Publish").click()
    item = admin.locator('#templates-list li[data-template="Portrait.json"]')
    item.wait_for(timeout=10_000)
    admin.wait_for_function("""() => { const img = document.querySelector(
        '#templates-list li[data-template="Portrait.json"] img');
        return img && img.complete && img.naturalWidth === 1; }""", timeout=10_000)
    assert "Portrait in four steps" in item.inner_text()
    admin.select_option("#default-workflow", "Portrait.json")
    admin.wait_for_function("() => document.querySelector('#templates-list').innerText"
                            ".includes('default')", timeout=10_000)
    published, = templates.describe(harness.ctx.settings)
    assert published.thumbnail is not None and published.thumbnail.read_bytes() == PNG
    assert templates.default_workflow(harness.ctx.settings) == "Portrait.json"
    _shoot(admin, "templates")

    # An announcement appears as a toast in user003's open workspace.
    other = browser.new_context(viewport=VIEWPORT).new_page()
    login(other, url, harness, "user003")
    admin.fill("#announce-text", "Lunch at 12:30 in the hall")
    admin.keyboard.press("Enter")  # forms work from the keyboard
    other.get_by_text("Lunch at 12:30 in the hall").first.wait_for(timeout=10_000)
    other.screenshot(path=SCREENSHOTS / "user003-announcement.png")
    admin.locator("#announcements-list li", has_text="Lunch at 12:30").wait_for()
    _shoot(admin, "announcements")

    # The template published above is in user003's template dialog with its thumbnail, and
    # opens from there.
    other.evaluate("window.app.graph.clear()")
    other.evaluate("window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = other.get_by_role("dialog")
    card = dialog.get_by_text("Portrait in four steps").first
    card.wait_for(timeout=20_000)
    # The frontend fetches thumbnails into blob: URLs; ours is the published 1 x 1 PNG.
    other.wait_for_function("""() => [...document.querySelectorAll('[role=dialog] img')]
        .some(i => i.complete && i.naturalWidth === 1)""", timeout=10_000)
    other.screenshot(path=SCREENSHOTS / "user003-template-dialog.png")
    card.click()
    other.wait_for_function("window.app.graph.nodes.some(n => n.title === 'Portrait step one')",
                            timeout=20_000)

    # Users panel: activity and jobs today; new login card for one participant.
    user_row = admin.locator('#users-rows tr[data-user="user002"]')
    assert user_row.locator("td").nth(4).inner_text() == "1"
    _shoot(admin, "users")
    _shoot(admin, "health")
    assert admin.locator('[data-health="workers_online"]').inner_text() in ("0", "1")
    admin.screenshot(path=SCREENSHOTS / "admin-dashboard.png")
    # Checked before user002's new password ends the session their page polls with.
    assert unexpected(page.failures) == [], page.failures
    user_row.get_by_role("button", name="New password").click()
    cards = admin.frame_locator("#output-cards")
    cards.get_by_text("user002").wait_for(timeout=10_000)
    admin.locator("#output").screenshot(path=SCREENSHOTS / "admin-cards.png")
    assert errors == []
