"""A participant's first five minutes in Debian's chromium: the first login opens the
organiser's default workflow, the queue badge says plainly that no GPU is running (no ETA) and
stays clear of the frontend's controls, the top bar shows the workshop account with a working
"Log out" instead of Comfy.org's login, and the template dialog shows the workshop's templates
with their thumbnails and opens them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from comfymulti.db import transaction
from comfymulti.hub.services import templates
from comfymulti.models import Worker
from tests.browser.conftest import SCREENSHOTS
from tests.conftest import HubHarness, LiveServer, wait_for
from tests.fakes.media import make_png
from tests.hub.workspaces.conftest import give_catalog

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def workflow(title: str) -> bytes:
    """A two-node workflow in the frontend's format; `title` names its first node."""
    return json.dumps({
        "last_node_id": 2, "last_link_id": 1, "version": 0.4, "groups": [], "config": {},
        "extra": {},
        "nodes": [
            {"id": 1, "type": "EmptyImage", "title": title, "pos": [100, 100],
             "size": [300, 130], "flags": {}, "order": 0, "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
             "properties": {}, "widgets_values": [512, 512, 1, 0]},
            {"id": 2, "type": "SaveImage", "pos": [500, 100], "size": [300, 300],
             "flags": {}, "order": 1, "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": [],
             "properties": {}, "widgets_values": ["ComfyUI"]}],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]]}).encode()


@pytest.fixture
def workshop(make_hub) -> Iterator[tuple[HubHarness, str]]:
    """A hub with two published templates (one the default, one with a thumbnail) and a
    catalog from a worker that has since gone away: no GPU is running."""
    harness = make_hub()
    harness.user("user002")
    settings = harness.ctx.settings
    templates.publish(settings, "Welcome portrait", workflow("Welcome portrait"),
                      title="Welcome portrait", description="Start here: your first image")
    templates.publish(settings, "Day 1 - poster", workflow("Poster maker"), title="Poster maker",
                      description="A poster in steps",
                      thumbnail_bytes=make_png(64, 40, 0x3366cc))
    templates.set_default(settings, "Welcome portrait")
    give_catalog(harness)
    with transaction(harness.ctx.factory) as s:
        s.execute(update(Worker).values(last_seen=0.0))
    server = LiveServer(harness.app).start()
    yield harness, server.url
    server.stop()


def _titles(page: Any) -> list[str]:
    return page.evaluate("window.app.graph.nodes.map(n => n.title)")


def _first_login(page: Any, url: str, harness: Any) -> None:
    """user002 logs in for the first time: the workspace opens on the default workflow."""
    page.goto(url + "/")
    page.fill("#username", "user002")
    page.fill("#password", harness.passwords["user002"])
    page.click("button[type=submit]")
    page.wait_for_function("window.app && window.app.graph", timeout=60_000)
    wait_for(lambda: "Welcome portrait" in _titles(page), timeout=30)


def _boxes_overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def test_first_login_default_workflow_no_gpu_badge_and_log_out(workshop, page) -> None:
    harness, url = workshop
    _first_login(page, url, harness)
    # No template browser over it, and not the frontend's default graph.
    assert "CheckpointLoaderSimple" not in page.evaluate(
        "window.app.graph.nodes.map(n => n.type)")
    page.wait_for_url(f"{url}/u/user002/", timeout=10_000)  # the frontend dropped ?template=
    page.screenshot(path=SCREENSHOTS / "first5-01-first-login.png")

    # The default workflow queued (as Run does) while no GPU runs: the badge says so, and
    # gives no ETA.
    page.evaluate("window.app.queuePrompt(0, 1)")
    badge = page.locator("#comfymulti-queue")
    badge.wait_for(state="visible", timeout=10_000)
    wait_for(lambda: "your job waits" in badge.inner_text(), timeout=10)
    text = badge.inner_text()
    assert text.startswith("No GPU running") and "done in" not in text and "~" not in text
    page.screenshot(path=SCREENSHOTS / "first5-02-no-gpu-badge.png")
    box = badge.bounding_box()
    controls = page.locator('[data-testid="minimap-container"], '
                            '[data-testid="zoom-controls-button"], '
                            '[data-testid="toggle-minimap-button"], '
                            '[data-testid="action-bar-buttons"]')
    assert controls.count() >= 3
    for i in range(controls.count()):
        other = controls.nth(i).bounding_box()
        assert other is None or not _boxes_overlap(box, other), (box, other)

    # The workshop account in the top bar, no Comfy.org login anywhere in it.
    assert page.locator('[data-testid="login-button"]:visible').count() == 0
    bar = page.locator('[data-testid="action-bar-buttons"]')
    assert "user002" in bar.inner_text()

    # A reload does not open the default again: the first-run step is over.
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    wait_for(lambda: httpx.get(f"{url}/u/user002/api/settings/Comfy.TutorialCompleted",
                               cookies=cookies).json() is True, timeout=10)
    r = httpx.get(f"{url}/u/user002/", cookies=cookies, follow_redirects=False)
    assert r.status_code == 200

    # "Log out" ends the session on the hub, not only in this tab.
    bar.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{url}/", timeout=10_000)
    assert page.locator("#username").is_visible()
    after = httpx.get(f"{url}/u/user002/api/settings", cookies=cookies)
    assert after.status_code == 401


def test_template_dialog_shows_workshop_templates_with_thumbnails(workshop, page) -> None:
    harness, url = workshop
    _first_login(page, url, harness)

    page.evaluate("window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.get_by_role("dialog")
    card = dialog.get_by_text("Poster maker").first
    card.wait_for(timeout=20_000)
    assert dialog.get_by_text("Workshop").first.is_visible()
    # The published thumbnail (64 x 40), fetched from templates/<name>-1.png.
    sizes = "[...document.querySelectorAll('[role=dialog] img')]" \
            ".map(i => i.complete ? `${i.naturalWidth}x${i.naturalHeight}` : '')"
    wait_for(lambda: "64x40" in page.evaluate(sizes), timeout=10)
    assert not [f for f in page.failures if "/templates/" in f[1]], page.failures
    page.screenshot(path=SCREENSHOTS / "first5-03-template-dialog.png")


    card.click()
    wait_for(lambda: "Poster maker" in _titles(page), timeout=20)


def test_returning_participant_on_a_new_browser_gets_the_default_not_the_builtin_graph(
        workshop, page) -> None:
    """The first run is over (Comfy.TutorialCompleted) but this browser has nothing saved:
    the frontend would open its own default graph, whose models no worker has."""
    harness, url = workshop
    login = httpx.post(f"{url}/login", data={"username": "user002",
                                             "password": harness.passwords["user002"]})
    assert httpx.post(f"{url}/u/user002/api/settings/Comfy.TutorialCompleted", content=b"true",
                      cookies=login.cookies, headers={"Origin": url}).status_code == 200
    page.goto(url + "/")
    page.fill("#username", "user002")
    page.fill("#password", harness.passwords["user002"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/u/user002/")  # no first-visit redirect
    page.wait_for_function("window.app && window.app.graph", timeout=60_000)
    wait_for(lambda: "Welcome portrait" in _titles(page), timeout=30)
    assert "KSampler" not in page.evaluate("window.app.graph.nodes.map(n => n.type)")
