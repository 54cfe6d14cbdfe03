"""Saving, renaming and deleting workflows through the frontend's own UI, with spaces,
subfolders and non-ASCII names; workshop templates show up in every user's list."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from comfymulti.hub.services import templates
from tests.browser.conftest import SCREENSHOTS, login, unexpected
from tests.conftest import HubHarness, LiveServer
from tests.hub.workspaces.conftest import give_catalog

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def hub_url(make_hub) -> Iterator[tuple[HubHarness, str]]:
    harness = make_hub()
    harness.user("user002")
    give_catalog(harness)
    server = LiveServer(harness.app).start()
    yield harness, server.url
    server.stop()


def _tree(page: Any) -> Any:
    return page.locator(".p-tree, [role=tree]")


def test_save_rename_delete_through_the_ui(hub_url, page) -> None:
    harness, url = hub_url
    templates.publish(harness.ctx.settings, "Day 1 - portrait", b'{"nodes": [], "links": []}')
    folder = harness.ctx.settings.data_dir / "users/user002/userdata/workflows"
    login(page, url, harness)
    page.mouse.click(600, 450)
    page.keyboard.press("Control+s")
    page.locator("input[type=text]:visible").first.fill("shots/take 1 é")
    page.keyboard.press("Enter")
    page.wait_for_timeout(1000)
    assert (folder / "shots" / "take 1 é.json").is_file()

    page.keyboard.press("w")  # the workflows sidebar
    page.get_by_text("Workshop", exact=True).first.wait_for(timeout=10_000)
    page.get_by_text("Workshop", exact=True).first.click()
    _tree(page).get_by_text("Day 1 - portrait").first.wait_for(timeout=10_000)
    page.get_by_text("shots", exact=True).first.click()
    _tree(page).get_by_text("take 1 é").first.click(button="right")
    page.get_by_role("menuitem", name="Rename").click()
    page.keyboard.press("Control+a")
    page.keyboard.type("take 2 ü")
    page.keyboard.press("Enter")
    page.wait_for_timeout(1000)
    assert (folder / "shots" / "take 2 ü.json").is_file()
    assert not (folder / "shots" / "take 1 é.json").exists()
    page.screenshot(path=SCREENSHOTS / "07-workflows.png")

    _tree(page).get_by_text("take 2 ü").first.click(button="right")
    page.get_by_role("menuitem", name="Delete").click()
    page.get_by_role("button", name="Delete").click()
    page.wait_for_timeout(1000)
    assert not (folder / "shots" / "take 2 ü.json").exists()
    assert unexpected(page.failures) == [], page.failures
