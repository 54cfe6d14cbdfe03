"""Debian's chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HubHarness

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("COMFYMULTI_SCREENSHOTS",
                                  Path(__file__).resolve().parents[2] / "build/screenshots"))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
# Requests that fail in normal operation and change nothing (reference §a.1, §0.1).
HARMLESS = ("/user.css", "/api/userdata/user.css", "/api/userdata?dir=",
            "/api/userdata/comfy.templates.json", "/api/userdata/workflows%2F.index.json",
            "api.comfy.org", "huggingface.co")


@pytest.fixture
def page() -> Iterator[Any]:
    """A fresh browser page that records failed requests in `page.failures`."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: scripts/test installs it (apt-get)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 900})
        pg.failures = []  # type: ignore[attr-defined]
        answered: set[str] = set()

        def on_response(r: Any) -> None:
            if r.status >= 400:
                pg.failures.append((r.status, r.url))
            else:
                answered.add(r.url)

        # Chromium also reports a request whose 2xx answer the page never read as "failed"
        # (ERR_ABORTED); only requests that got no good answer count.
        pg.on("response", on_response)
        pg.on("requestfailed", lambda r: r.url not in answered
              and pg.failures.append(("failed", r.url)))
        yield pg
        browser.close()


def login(page: Any, url: str, harness: HubHarness, name: str = "user002") -> None:
    page.goto(url + "/")
    page.fill("#username", name)
    page.fill("#password", harness.passwords[name])
    page.click("button[type=submit]")
    page.wait_for_url(f"**/u/{name}/")
    page.wait_for_function("window.app && window.app.graph", timeout=60_000)
    page.wait_for_timeout(1500)
    page.keyboard.press("Escape")  # first-run template browser


def unexpected(failures: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
    return [f for f in failures if not any(h in f[1] for h in HARMLESS)]
