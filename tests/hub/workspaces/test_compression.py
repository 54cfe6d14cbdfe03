"""Venue Wi-Fi: the frontend's JS and CSS and object_info go out gzipped, hashed assets are
cached for good, and everything else is revalidated with a 304 instead of sent again."""

from __future__ import annotations

import asyncio
import gzip
import re

import pytest

from comfymulti.hub.web.compression import GzipCache
from comfymulti.hub.workspaces.frontend import STATIC
from tests.hub.workspaces.conftest import login

GZIP = {"Accept-Encoding": "gzip, deflate"}


def _largest_script(client) -> str:
    """The biggest module the page loads first (index.html names them all)."""
    page = client.get("/u/user002/", headers=GZIP)
    assert page.status_code == 200 and page.headers["content-encoding"] == "gzip"
    assert page.headers["cache-control"] == "no-store"
    scripts = re.findall(r'"\./(assets/[^"]+\.js)"', page.text)
    return max(scripts, key=lambda rel: (STATIC / rel).stat().st_size)


def test_frontend_js_is_gzipped_from_a_copy_made_once_and_cached_for_good(ws_hub) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    script = _largest_script(client)
    r = client.get(f"/u/user002/{script}", headers=GZIP)
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.content == (STATIC / script).read_bytes()  # the same file, decoded by httpx
    assert int(r.headers["content-length"]) < 0.4 * len(r.content)

    cache = harness.ctx.settings.data_dir / "cache" / "gzip"
    copies = list(cache.rglob(script.split("/")[-1] + ".gz"))
    assert len(copies) == 1
    made = copies[0].stat().st_mtime_ns
    again = client.get(f"/u/user002/{script}", headers=GZIP)
    assert again.content == r.content and copies[0].stat().st_mtime_ns == made  # not re-made

    plain = client.get(f"/u/user002/{script}", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == r.content


def test_css_is_gzipped_and_unhashed_files_revalidate_with_304(ws_hub) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    r = client.get("/u/user002/materialdesignicons.min.css", headers=GZIP)
    assert r.headers["content-encoding"] == "gzip" and r.headers["cache-control"] == "no-cache"
    again = client.get("/u/user002/materialdesignicons.min.css",
                       headers={**GZIP, "If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    # A font is packed already: sent as it is.
    font = next(p for p in (STATIC / "assets").iterdir() if p.suffix == ".woff2")
    r = client.get(f"/u/user002/assets/{font.name}", headers=GZIP)
    assert r.status_code == 200 and "content-encoding" not in r.headers


def test_object_info_revalidates_with_304(ws_hub) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    r = client.get("/u/user002/api/object_info", headers=GZIP)
    assert r.headers["content-encoding"] == "gzip" and r.headers["etag"]
    again = client.get("/u/user002/api/object_info",
                       headers={**GZIP, "If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    stale = client.get("/u/user002/api/object_info",
                       headers={**GZIP, "If-None-Match": '"old"'})
    assert stale.status_code == 200 and stale.json() == r.json()


def test_json_answers_made_per_request_are_gzipped(ws_hub) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    origin = {"Origin": "http://testserver"}
    assert client.post("/u/user002/api/settings", json={"Comfy.Note": "workshop " * 300},
                       headers=origin).status_code == 200
    r = client.get("/u/user002/api/settings", headers=GZIP)
    assert r.headers["content-encoding"] == "gzip" and r.json()["Comfy.Note"].startswith("work")
    assert int(r.headers["content-length"]) < len(r.content) / 5
    small = client.get("/u/user002/api/features", headers=GZIP)  # not worth it under 1 KB
    assert "content-encoding" not in small.headers


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_file_asked_for_by_many_at_once_is_compressed_once(tmp_path) -> None:
    calls = []

    async def run(fn, *args):  # the hub's Offload, counting
        calls.append(args)
        await asyncio.sleep(0.05)  # still compressing while the others ask
        return fn(*args)

    root = tmp_path / "static"
    root.mkdir()
    (root / "app.js").write_text("console.log('workshop');\n" * 200)
    cache = GzipCache(tmp_path / "cache", run)
    copies = await asyncio.gather(*(cache.get("frontend", root, "app.js") for _ in range(20)))
    assert len(calls) == 1 and len(set(copies)) == 1
    assert gzip.decompress(copies[0].read_bytes()) == (root / "app.js").read_bytes()
    assert await cache.get("frontend", root, "app.js") == copies[0] and len(calls) == 1
    (root / "tiny.js").write_text("x")
    assert await cache.get("frontend", root, "tiny.js") is None  # not worth it
