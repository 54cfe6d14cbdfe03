"""A participant opening the workspace on venue Wi-Fi: the hub next to plain serving of the same
frontend, in Debian's chromium with emulated 20 Mbit/s down, 5 up, 40 ms latency.

Two sites, each a real hub process with the real ComfyUI 0.33.0 catalog (1.6 MB object_info):

* `hub`: `comfymulti serve` as shipped (gzip copies of the frontend made once, immutable hashed
  assets, ETag/304, gzipped object_info);
* `plain`: the same hub code behind a layer that serves it the way stock ComfyUI does (aiohttp
  static files): no compression at all (Accept-Encoding removed from every request) and every
  file `Cache-Control: no-cache` (revalidated by ETag on every load).

Each site is opened once before measuring (the organiser's own check; it also makes the hub's
gzip copies). Then, alternating sites, `--rounds` times: cold (a new browser profile, logged in,
empty cache) and warm (the same profile loads the page again). Measured with the Chrome DevTools
Protocol: bytes on the wire (encodedDataLength, headers included), requests that went to the
server (304s included, the browser cache's own answers not), and the time from
navigation to the frontend's graph being ready plus the network going quiet (500 ms).

    python bench/workspace_load.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import httpx

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
WIFI = {"offline": False, "latency": 40, "downloadThroughput": 20e6 / 8,
        "uploadThroughput": 5e6 / 8}
USER = "user001"


class StockLike:
    """ASGI layer: the hub's answers as stock ComfyUI would give them (see module doc)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state  # serve() finds the hub there

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"]
                                      if k != b"accept-encoding"]}
        static = "/api/" not in scope["path"] and "/internal/" not in scope["path"]

        async def plain_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and static:
                headers = [(k, v) for k, v in message["headers"] if k != b"cache-control"]
                message = {**message, "headers": [*headers, (b"cache-control", b"no-cache")]}
            await send(message)

        await self.app(scope, receive, plain_send)


def serve_plain(config: str) -> None:
    """`python bench/workspace_load.py --serve-plain CONFIG`: the `plain` site's process."""
    from comfymulti.config import load_settings
    from comfymulti.hub.app import create_app
    from comfymulti.hub.server import serve

    settings = load_settings(Path(config))
    serve(StockLike(create_app(settings)), settings.hub.host,  # type: ignore[arg-type]
          settings.hub.port)


def give_catalog(config: Path) -> None:
    """The real 0.33.0 catalog, as a worker that has since gone would have left it."""
    from comfymulti.catalog.codec import catalog_hash
    from comfymulti.config import load_settings
    from comfymulti.db import make_engine, migrate, session_factory, transaction
    from comfymulti.hub.services import workers
    from comfymulti.protocol import RegisterRequest
    from tests import testdata

    catalog = {"object_info": json.loads(gzip.decompress(testdata.CATALOG.read_bytes())),
               "models": {"checkpoints": ["v1-5-pruned-emaonly.safetensors"]}}
    engine = make_engine(load_settings(config).database_url)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        token = workers.authenticate(s, workers.create_token(s, "bench"))
        worker, _ = workers.register(s, token, RegisterRequest(
            name="gpu-1", catalog_hash=catalog_hash(catalog), gpu="bench", vram_total=0,
            comfyui_version="0.33.0"))
        workers.store_catalog(s, worker, catalog_hash(catalog), catalog)
    engine.dispose()


class Site:
    def __init__(self, name: str, folder: Path) -> None:
        folder.mkdir()
        self.name = name
        self.hub = _common.HubSite(folder)
        self.hub.cli("users", "create", "--count", "1", "--out", str(folder / "cards"),
                     "--force")
        card = next((folder / "cards").glob("*.csv")).read_text().splitlines()[1]
        self.password = card.split(",")[1]
        give_catalog(self.hub.folder / "comfymulti.toml")
        if name == "hub":
            self.hub.start()
        else:
            log = (folder / "plain.log").open("wb")
            self.hub.processes.append(subprocess.Popen(
                [sys.executable, __file__, "--serve-plain", str(folder / "comfymulti.toml")],
                stdout=log, stderr=subprocess.STDOUT))
            _common.wait_http(self.hub.url + "/health")
        # A returning participant: no first-run template dialog in the measurement.
        with httpx.Client(base_url=self.hub.url) as c:
            c.post("/login", data={"username": USER, "password": self.password})
            c.post(f"/u/{USER}/api/settings", json={"Comfy.TutorialCompleted": True},
                   headers={"Origin": self.hub.url})


def load(context: Any, url: str) -> dict[str, float]:
    """One page load under emulated Wi-Fi: bytes, requests, seconds."""
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", WIFI)
    seen: dict[str, float] = {}
    requests: set[str] = set()

    def started(e: dict[str, Any]) -> None:
        if not e["request"]["url"].startswith(("data:", "blob:")):
            requests.add(e["requestId"])

    cdp.on("Network.requestWillBeSent", started)
    cdp.on("Network.requestServedFromCache", lambda e: requests.discard(e["requestId"]))
    cdp.on("Network.loadingFinished",
           lambda e: seen.__setitem__(e["requestId"], e["encodedDataLength"]))
    t0 = time.perf_counter()
    page.goto(url, wait_until="load", timeout=180_000)
    page.wait_for_function("window.app && window.app.graph && window.app.graph.nodes.length",
                           timeout=180_000, polling=50)
    page.wait_for_load_state("networkidle", timeout=180_000)
    seconds = time.perf_counter() - t0 - 0.5  # networkidle waits 500 ms of quiet
    mounted = page.evaluate("window.app.graph.nodes.length")
    page.close()
    return {"bytes": sum(v for k, v in seen.items() if k in requests),
            "requests": len(requests), "seconds": seconds, "nodes": mounted}


def measure(browser: Any, site: Site) -> tuple[dict[str, float], dict[str, float]]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    login = context.request.post(site.hub.url + "/login", form={
        "username": USER, "password": site.password}, max_redirects=0)
    assert login.status == 303, login.status
    url = f"{site.hub.url}/u/{USER}/"
    cold = load(context, url)
    warm = load(context, url)
    context.close()
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve-plain", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_plain:
        serve_plain(args.serve_plain)
        return
    from playwright.sync_api import sync_playwright

    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="cm-wsload-") as tmp:
        sites = [Site("hub", Path(tmp, "hub")), Site("plain", Path(tmp, "plain"))]
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                for site in sites:
                    measure(browser, site)  # the organiser's check: not counted
                for _ in range(args.rounds):
                    for site in sites:
                        cold, warm = measure(browser, site)
                        results.setdefault((site.name, "cold"), []).append(cold)
                        results.setdefault((site.name, "warm"), []).append(warm)
                browser.close()
        finally:
            for site in sites:
                site.hub.close()
    print(report(results, args.rounds))


def report(results: dict[tuple[str, str], list[dict[str, float]]], rounds: int) -> str:
    rows = []
    for kind in ("cold", "warm"):
        hub, plain = results[("hub", kind)], results[("plain", kind)]

        def med(runs: list[dict[str, float]], key: str) -> float:
            return _common.pct([r[key] for r in runs], 50)

        for name, runs in (("plain", plain), ("hub", hub)):
            rows.append([kind, name, f"{med(runs, 'bytes') / 1e6:.2f}",
                         f"{med(runs, 'requests'):.0f}", f"{med(runs, 'seconds'):.2f}",
                         f"{med(runs, 'bytes') / med(plain, 'bytes'):.2f}x",
                         f"{med(runs, 'seconds') / med(plain, 'seconds'):.2f}x"])
    head = (f"Workspace load, Debian chromium, emulated venue Wi-Fi (20/5 Mbit/s, 40 ms), "
            f"median of {rounds} rounds; goal: cold bytes <= 0.35x and cold time <= 0.5x of "
            "plain")
    return head + "\n" + _common.table(
        ["load", "site", "MB", "requests", "seconds", "bytes vs plain", "time vs plain"], rows)


if __name__ == "__main__":
    main()
