"""Userdata, settings and user.css under /u/<user>/: ComfyUI's shapes, the frontend's save
flows, names with %2F/spaces/non-ASCII, traversal attempts and isolation between users."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import HubHarness

U2 = "/u/user002"
FLOW = "workflows%2Fmy%20flow%20%C3%A9.json"  # workflows/my flow é.json
FLOW_PATH = "workflows/my flow é.json"


class Workspace:
    """user002 (the owner) and user003 (a neighbour) on one hub, with helpers."""

    def __init__(self, harness: HubHarness, client: TestClient) -> None:
        self.harness, self.client = harness, client
        harness.user("user002")
        harness.user("user003")
        self.auth = harness.bearer("user002")
        self.data_dir: Path = harness.ctx.settings.data_dir
        self.userdata = self.data_dir / "users/user002/userdata"

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(U2 + path, headers=self.auth, **kw)

    def post(self, path: str, content: bytes | str = b"", **kw: Any) -> Any:
        return self.client.post(U2 + path, content=content, headers=self.auth, **kw)

    def delete(self, path: str) -> Any:
        return self.client.delete(U2 + path, headers=self.auth)


@pytest.fixture
def ws(hub: tuple[HubHarness, TestClient]) -> Workspace:
    return Workspace(*hub)


def files_under(root: Path) -> dict[str, bytes]:
    """Every file below `root` with its bytes (database and staging area left out)."""
    found = {}
    for here, _, names in os.walk(root):
        for name in names:
            path = Path(here, name)
            rel = path.relative_to(root).as_posix()
            if not rel.startswith(("comfymulti.db", "tmp/", "secret_key")):
                found[rel] = path.read_bytes()
    return found


# --------------------------------------------------------------------------- settings


def test_settings_start_empty_and_store_what_the_frontend_sends(ws: Workspace) -> None:
    assert ws.get("/api/settings").json() == {}
    assert ws.get("/api/settings/Comfy.InstalledVersion").json() is None
    # The frontend sends a bare JSON value without a Content-Type.
    r = ws.post("/api/settings/Comfy.InstalledVersion", b'"1.58.1"')
    assert r.status_code == 200 and r.content == b""
    for key, value in [("Comfy.TutorialCompleted", True), ("Comfy.Zoom", 1.5),
                       ("Comfy.Keybindings", [{"key": "ctrl+s"}]), ("Comfy.Empty", None)]:
        assert ws.post(f"/api/settings/{key}", json.dumps(value)).status_code == 200
    r = ws.post("/api/settings", json.dumps({"Comfy.Zoom": 2, "Comfy.Locale": "de"}))
    assert r.status_code == 200 and r.content == b""
    expected = {"Comfy.InstalledVersion": "1.58.1", "Comfy.TutorialCompleted": True,
                "Comfy.Zoom": 2, "Comfy.Keybindings": [{"key": "ctrl+s"}], "Comfy.Empty": None,
                "Comfy.Locale": "de"}
    assert ws.get("/api/settings").json() == expected
    assert ws.get("/api/settings/Comfy.Keybindings").json() == [{"key": "ctrl+s"}]
    stored = json.loads((ws.userdata / "comfy.settings.json").read_text())
    assert stored == expected


@pytest.mark.parametrize(("path", "body"), [
    ("/api/settings/Comfy.X", b"{broken"),
    ("/api/settings/Comfy.X", b"NaN"),  # would make the file unreadable to the browser
    ("/api/settings/Comfy.X", b""),
    ("/api/settings/Comfy.X", b"\xff\xfe"),
    ("/api/settings", b"[1, 2]"),
    ("/api/settings", b'{"a": Infinity}'),
])
def test_settings_refuse_what_is_not_json(ws: Workspace, path: str, body: bytes) -> None:
    ws.post("/api/settings/Comfy.Keep", b"1")
    r = ws.post(path, body)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_input"
    assert ws.get("/api/settings").json() == {"Comfy.Keep": 1}


def test_settings_file_that_is_no_object_reads_as_empty(ws: Workspace) -> None:
    """A user can overwrite comfy.settings.json through userdata; the app must still mount."""
    for junk in (b"[1, 2]", b"{not json", b"\xff"):
        assert ws.post("/api/userdata/comfy.settings.json", junk).status_code == 200
        assert ws.get("/api/settings").json() == {}
        assert ws.get("/api/settings/x").json() is None
    assert ws.post("/api/settings/Comfy.A", b"1").status_code == 200
    assert ws.get("/api/settings").json() == {"Comfy.A": 1}


def test_settings_are_size_limited(make_hub) -> None:
    harness = make_hub(files={"max_upload_bytes": 2048})
    with TestClient(harness.app) as client:
        ws = Workspace(harness, client)
        r = ws.post("/api/settings/Comfy.Big", json.dumps("x" * 3000))
        assert r.status_code == 413
        for i in range(3):  # each small, together too big
            r = ws.post(f"/api/settings/Comfy.Part{i}", json.dumps("y" * 900))
        assert r.status_code == 413
        assert set(ws.get("/api/settings").json()) == {"Comfy.Part0", "Comfy.Part1"}


# --------------------------------------------------------------------------- save flows


def test_frontend_save_open_rename_delete(ws: Workspace) -> None:
    # Startup: no workflows folder yet → 404, which the frontend reads as empty.
    listing = "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true"
    r = ws.get(listing)
    assert r.status_code == 404
    # "Save" of a new workflow.
    r = ws.post(f"/api/userdata/{FLOW}?overwrite=false&full_info=true", b'{"v": 1}')
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["path"] == FLOW_PATH and info["size"] == 8
    assert isinstance(info["modified"], int) and isinstance(info["created"], int)
    assert (ws.userdata / FLOW_PATH).read_bytes() == b'{"v": 1}'
    # Saving a new one under a taken name is refused, the file kept.
    r = ws.post(f"/api/userdata/{FLOW}?overwrite=false&full_info=true", b'{"v": 0}')
    assert r.status_code == 409
    assert (ws.userdata / FLOW_PATH).read_bytes() == b'{"v": 1}'
    # "Save" of an existing workflow.
    r = ws.post(f"/api/userdata/{FLOW}?overwrite=true&full_info=true", b'{"v": 2}')
    assert r.status_code == 200 and r.json()["size"] == 8
    r = ws.get(listing)
    assert [e["path"] for e in r.json()] == ["my flow é.json"]
    assert r.json()[0]["size"] == 8
    # Open.
    r = ws.get(f"/api/userdata/{FLOW}")
    assert r.status_code == 200 and r.content == b'{"v": 2}'
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"].startswith("attachment")
    assert r.headers["content-type"].startswith("application/json")
    # "Rename".
    dest = "workflows%2Frenamed.json"
    r = ws.post(f"/api/userdata/{FLOW}/move/{dest}?overwrite=false&full_info=true")
    assert r.status_code == 200 and r.json()["path"] == "workflows/renamed.json"
    assert ws.get(f"/api/userdata/{FLOW}").status_code == 404
    assert ws.get(f"/api/userdata/{dest}").content == b'{"v": 2}'
    # Delete.
    r = ws.delete(f"/api/userdata/{dest}")
    assert r.status_code == 204 and r.content == b""
    assert ws.delete(f"/api/userdata/{dest}").status_code == 404
    assert ws.get(listing).json() == []


def test_save_without_full_info_answers_the_path_and_creates_folders(ws: Workspace) -> None:
    r = ws.post("/api/userdata/a%2Fb%2Fc%20d.json", b"{}")
    assert r.status_code == 200 and r.json() == "a/b/c d.json"
    assert (ws.userdata / "a/b/c d.json").read_bytes() == b"{}"
    # ComfyUI's default is to overwrite.
    assert ws.post("/api/userdata/a%2Fb%2Fc%20d.json", b"[]").status_code == 200
    assert (ws.userdata / "a/b/c d.json").read_bytes() == b"[]"


def test_move_conflicts_overwrites_and_creates_folders(ws: Workspace) -> None:
    ws.post("/api/userdata/workflows%2Fa.json", b"A")
    ws.post("/api/userdata/workflows%2Fb.json", b"B")
    r = ws.post("/api/userdata/workflows%2Fa.json/move/workflows%2Fb.json?overwrite=false")
    assert r.status_code == 409
    assert (ws.userdata / "workflows/a.json").read_bytes() == b"A"
    assert (ws.userdata / "workflows/b.json").read_bytes() == b"B"
    r = ws.post("/api/userdata/workflows%2Fa.json/move/workflows%2Fa.json?overwrite=false")
    assert r.status_code == 409  # onto itself: it exists
    r = ws.post("/api/userdata/workflows%2Fa.json/move/workflows%2Fb.json?overwrite=true")
    assert r.status_code == 200 and r.json() == "workflows/b.json"
    assert (ws.userdata / "workflows/b.json").read_bytes() == b"A"
    assert not (ws.userdata / "workflows/a.json").exists()
    r = ws.post("/api/userdata/workflows%2Fb.json/move/archive%2F2026%2Fb%20%C3%A9.json")
    assert r.status_code == 200 and r.json() == "archive/2026/b é.json"
    assert (ws.userdata / "archive/2026/b é.json").read_bytes() == b"A"
    r = ws.post("/api/userdata/workflows%2Fmissing.json/move/x.json")
    assert r.status_code == 404


def test_names_are_one_segment_with_encoded_slashes(ws: Workspace) -> None:
    """A proxy that decoded %2F would send real slashes: ComfyUI answers 404, and so do we."""
    ws.post(f"/api/userdata/{FLOW}", b"{}")
    assert ws.get("/api/userdata/workflows/my%20flow%20%C3%A9.json").status_code == 404
    r = ws.post("/api/userdata/workflows/new.json", b"{}")
    assert r.status_code == 404
    assert not (ws.userdata / "workflows/new.json").exists()
    assert ws.delete("/api/userdata/workflows/my%20flow%20%C3%A9.json").status_code == 404
    assert (ws.userdata / FLOW_PATH).exists()
    assert ws.post(f"/api/userdata/{FLOW}/rename/x.json").status_code == 404
    assert ws.get("/api/userdata/").status_code == 404


def test_names_with_plus_percent_and_unicode(ws: Workspace) -> None:
    name = "workflows%2F100%25%20%2B%20caf%C3%A9%20%E2%9C%93.json"  # 100% + café ✓.json
    r = ws.post(f"/api/userdata/{name}?full_info=true", b"{}")
    assert r.status_code == 200 and r.json()["path"] == "workflows/100% + café ✓.json"
    assert ws.get(f"/api/userdata/{name}").content == b"{}"
    assert ws.get("/api/userdata?dir=workflows").json() == ["100% + café ✓.json"]


def test_listing_shapes(ws: Workspace) -> None:
    for name in ["workflows%2Fa.json", "workflows%2Fsub%2Fb.json", "workflows%2F.index.json",
                 "workflows%2F.hidden%2Fc.json", "subgraphs%2Fs.json"]:
        assert ws.post(f"/api/userdata/{name}", b"12").status_code == 200
    assert ws.get("/api/userdata?dir=workflows").json() == ["a.json"]
    assert ws.get("/api/userdata?dir=workflows&recurse=true").json() == ["a.json", "sub/b.json"]
    assert ws.get("/api/userdata?dir=workflows&recurse=true&split=true").json() == [
        ["a.json", "a.json"], ["sub/b.json", "sub", "b.json"]]
    full = ws.get("/api/userdata?dir=workflows&recurse=true&full_info=true&split=true").json()
    assert [(e["path"], e["size"]) for e in full] == [("a.json", 2), ("sub/b.json", 2)]
    assert set(full[0]) == {"path", "size", "modified", "created"}
    assert ws.get("/api/userdata?dir=workflows/sub").json() == ["b.json"]
    r = ws.get("/api/userdata")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_input"
    assert ws.get("/api/userdata?dir=templates").status_code == 404
    assert ws.get("/api/userdata?dir=workflows/a.json").json() == []


def test_v2_listing(ws: Workspace) -> None:
    for name in ["workflows%2Fb.json", "workflows%2FA.json", "workflows%2Fsub%2Fc.json",
                 "top.json"]:
        ws.post(f"/api/userdata/{name}", b"123")
    entries = ws.get("/api/v2/userdata").json()
    assert [(e["type"], e["path"]) for e in entries] == [
        ("directory", "workflows/sub"), ("directory", "workflows"), ("file", "workflows/A.json"),
        ("file", "workflows/b.json"), ("file", "workflows/sub/c.json"), ("file", "top.json")]
    top = next(e for e in entries if e["path"] == "top.json")
    assert top["name"] == "top.json" and top["size"] == 3 and isinstance(top["modified"], float)
    sub = ws.get("/api/v2/userdata?path=workflows%2Fsub").json()
    assert [e["path"] for e in sub] == ["workflows/sub/c.json"]
    assert ws.get("/api/v2/userdata?path=nope").status_code == 404
    assert ws.get("/api/v2/userdata?path=top.json").status_code == 400
    for path in ws.userdata.rglob("*"):
        if path.is_file():
            path.unlink()
    for path in sorted(ws.userdata.rglob("*"), reverse=True):
        path.rmdir()
    ws.userdata.rmdir()
    assert ws.get("/api/v2/userdata").json() == []  # a new user without a folder yet


def test_user_css(ws: Workspace) -> None:
    assert ws.get("/user.css").status_code == 404
    assert ws.get("/api/userdata/user.css").status_code == 404
    ws.post("/api/userdata/user.css", b"body { color: red }")
    for path in ("/user.css", "/api/userdata/user.css"):
        r = ws.get(path)
        assert r.status_code == 200 and r.content == b"body { color: red }"
        assert r.headers["content-type"].startswith("text/css")
        assert r.headers["content-disposition"] == "inline"
        assert r.headers["x-content-type-options"] == "nosniff"
    # Only the top-level user.css is a stylesheet; any other CSS is a download.
    ws.post("/api/userdata/themes%2Fuser.css", b"x")
    r = ws.get("/api/userdata/themes%2Fuser.css")
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment")


@pytest.mark.parametrize("name", ["page.html", "x.svg", "a.js", "feed.xml", "s.css"])
def test_active_content_is_only_a_download(ws: Workspace, name: str) -> None:
    ws.post(f"/api/userdata/{name}", b"<script>alert(1)</script>")
    r = ws.get(f"/api/userdata/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment")
    assert r.headers["x-content-type-options"] == "nosniff"


def test_folder_and_file_clashes_are_4xx(ws: Workspace) -> None:
    ws.post("/api/userdata/workflows%2Fa.json", b"A")
    assert ws.post("/api/userdata/workflows?overwrite=true", b"x").status_code == 400
    assert ws.post("/api/userdata/workflows?overwrite=false", b"x").status_code == 409
    assert ws.post("/api/userdata/workflows%2Fa.json%2Fb.json", b"x").status_code == 400
    r = ws.post("/api/userdata/workflows%2Fa.json/move/workflows?overwrite=true")
    assert r.status_code == 400
    assert ws.get("/api/userdata/workflows").status_code == 404
    assert ws.delete("/api/userdata/workflows").status_code == 404
    assert (ws.userdata / "workflows/a.json").read_bytes() == b"A"


def test_upload_limit(make_hub) -> None:
    harness = make_hub(files={"max_upload_bytes": 2048})
    with TestClient(harness.app) as client:
        ws = Workspace(harness, client)
        assert ws.post("/api/userdata/big.json", b"x" * 2049).status_code == 413
        # Without a Content-Length the stream is cut off as well.
        r = ws.post("/api/userdata/big.json", iter([b"x" * 1500, b"x" * 1500]))
        assert r.status_code == 413
        assert not (ws.userdata / "big.json").exists()
        assert list((ws.data_dir / "tmp").glob("*")) == []
        assert ws.post("/api/userdata/ok.json", b"x" * 2048).status_code == 200


# --------------------------------------------------------------------------- traversal

OUTSIDE = "%2e%2e%2F%2e%2e%2Fuser003%2Fuserdata%2Fevil.json"  # ../../user003/userdata/evil.json
BAD_NAMES = [
    OUTSIDE,
    "%2e%2e%2Fcomfymulti.db",
    "..%2F..%2F..%2Fsecret_key",
    "%2Fetc%2Fpasswd",
    "x%00y.json",
    "a%5C..%5Cb.json",
    "%2F",
    "%2e",
    "%FF%FE.json",  # not UTF-8
    "C:%5Cx.json",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_4xx_and_touch_nothing(ws: Workspace, name: str) -> None:
    ws.post("/api/userdata/keep.json", b"K")
    before = files_under(ws.data_dir)
    attempts = [
        ws.get(f"/api/userdata/{name}"),
        ws.post(f"/api/userdata/{name}", b"EVIL"),
        ws.post(f"/api/userdata/{name}?overwrite=false&full_info=true", b"EVIL"),
        ws.delete(f"/api/userdata/{name}"),
        ws.post(f"/api/userdata/keep.json/move/{name}"),
        ws.post(f"/api/userdata/{name}/move/stolen.json"),
    ]
    for r in attempts:
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)
        assert "error" in r.json()
    assert files_under(ws.data_dir) == before


@pytest.mark.parametrize("query", [
    "dir=..", "dir=../user003/userdata", "dir=%2Fetc", "dir=a%00b", "dir=..%5C..",
])
def test_listing_outside_is_refused(ws: Workspace, query: str) -> None:
    for route in ("/api/userdata?", "/api/v2/userdata?"):
        q = query if route.startswith("/api/userdata") else query.replace("dir=", "path=")
        r = ws.get(route + q)
        assert r.status_code == 400, (route, q, r.text)


def test_symlink_planted_in_userdata_is_refused(ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_bytes(b"SECRET")
    ws.userdata.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, ws.userdata / "link")
    os.symlink(outside / "secret.json", ws.userdata / "file-link.json")
    checks = [
        ws.get("/api/userdata/link%2Fsecret.json"),
        ws.get("/api/userdata/file-link.json"),
        ws.post("/api/userdata/link%2Fnew.json", b"EVIL"),
        ws.post("/api/userdata/file-link.json", b"EVIL"),
        ws.delete("/api/userdata/link%2Fsecret.json"),
        ws.get("/api/userdata?dir=link"),
        ws.get("/api/v2/userdata?path=link"),
    ]
    ws.post("/api/userdata/a.json", b"A")
    checks.append(ws.post("/api/userdata/a.json/move/link%2Fa.json"))
    for r in checks:
        assert r.status_code == 403, (r.request.url, r.text)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.json"]
    assert (outside / "secret.json").read_bytes() == b"SECRET"
    # Listings do not follow or show symlinks.
    assert ws.get("/api/userdata?dir=.&recurse=true").json() == ["a.json"]
    assert [e["path"] for e in ws.get("/api/v2/userdata").json()] == ["a.json"]


# --------------------------------------------------------------------------- isolation


def all_routes() -> Iterator[tuple[str, str, bytes]]:
    """(method, path, body) for every userdata/settings route, aimed at user002's data."""
    yield "GET", "/api/settings", b""
    yield "GET", "/api/settings/Comfy.Secret", b""
    yield "POST", "/api/settings", b'{"Comfy.Secret": "pwned"}'
    yield "POST", "/api/settings/Comfy.Secret", b'"pwned"'
    yield "GET", "/api/userdata?dir=workflows&recurse=true&full_info=true", b""
    yield "GET", "/api/userdata?dir=missing", b""
    yield "GET", "/api/v2/userdata", b""
    yield "GET", f"/api/userdata/{FLOW}", b""
    yield "GET", "/api/userdata/comfy.settings.json", b""
    yield "GET", "/user.css", b""
    yield "GET", "/api/userdata/user.css", b""
    yield "POST", f"/api/userdata/{FLOW}?overwrite=true&full_info=true", b"pwned"
    yield "POST", "/api/userdata/workflows%2Fnew.json?overwrite=false", b"pwned"
    yield "POST", f"/api/userdata/{FLOW}/move/workflows%2Fstolen.json", b""
    yield "DELETE", f"/api/userdata/{FLOW}", b""
    yield "DELETE", "/api/userdata/missing.json", b""


@pytest.mark.parametrize("scheme", ["bearer", "basic"])
def test_another_user_gets_404_everywhere_and_changes_nothing(ws: Workspace,
                                                              scheme: str) -> None:
    ws.post(f"/api/userdata/{FLOW}", b'{"mine": true}')
    ws.post("/api/userdata/user.css", b"body{}")
    ws.post("/api/settings/Comfy.Secret", b'"mine"')
    before = files_under(ws.data_dir)
    intruder = getattr(ws.harness, scheme)("user003")
    for method, path, body in all_routes():
        r = ws.client.request(method, U2 + path, content=body, headers=intruder)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.json()["error"]["type"] == "not_found"
        assert "mine" not in r.text and "body{}" not in r.text
        # Without credentials: 401, also before anything is read or written.
        r = ws.client.request(method, U2 + path, content=body)
        assert r.status_code == 401, (method, path)
    assert files_under(ws.data_dir) == before
    # user003's own workspace is separate: same names, its own files.
    own = ws.client.get("/u/user003/api/settings", headers=intruder)
    assert own.status_code == 200 and own.json() == {}
    r = ws.client.post(f"/u/user003/api/userdata/{FLOW}", content=b"theirs", headers=intruder)
    assert r.status_code == 200
    assert ws.get(f"/api/userdata/{FLOW}").content == b'{"mine": true}'
    assert ws.get("/api/settings").json() == {"Comfy.Secret": "mine"}


def test_encoded_names_survive_a_real_http_server(live_hub) -> None:
    """uvicorn hands over the raw path too: %2F, spaces and non-ASCII work end to end."""
    import httpx

    harness, url = live_hub()
    harness.user("user002")
    auth = harness.bearer("user002")
    with httpx.Client(base_url=url, headers=auth) as c:
        r = c.post(f"{U2}/api/userdata/{FLOW}?overwrite=false&full_info=true", content=b"{}")
        assert r.status_code == 200 and r.json()["path"] == FLOW_PATH
        assert c.get(f"{U2}/api/userdata/{FLOW}").content == b"{}"
        assert c.get(f"{U2}/api/userdata/workflows/my%20flow%20%C3%A9.json").status_code == 404
        r = c.get(f"{U2}/api/userdata", params={"dir": "workflows", "full_info": "true"})
        assert [e["path"] for e in r.json()] == ["my flow é.json"]
        r = c.post(f"{U2}/api/userdata/{FLOW}/move/workflows%2Fb%20%C3%BC.json")
        assert r.status_code == 200 and r.json() == "workflows/b ü.json"
        assert c.delete(f"{U2}/api/userdata/workflows%2Fb%20%C3%BC.json").status_code == 204
