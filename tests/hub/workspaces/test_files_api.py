"""/api/view, /api/upload/image, /api/upload/mask and /internal/files under /u/<user>/:
ComfyUI's shapes, naming on upload, size limits, traversal attempts and isolation."""

from __future__ import annotations

import io
import json
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import HubHarness
from tests.fakes.media import make_mp4, make_png, make_webp
from tests.hub.workspaces.test_userdata import Workspace as UserdataWorkspace
from tests.hub.workspaces.test_userdata import files_under

U2 = "/u/user002"
PNG = make_png(8, 8, 0xFF0000, text={"prompt": "{}"})
OTHER_PNG = make_png(8, 8, 0x00FF00)


class Workspace(UserdataWorkspace):
    def __init__(self, harness: HubHarness, client: TestClient) -> None:
        super().__init__(harness, client)
        self.root = self.data_dir / "users/user002"

    def put(self, kind: str, rel: str, data: bytes) -> Path:
        """A file as a finished job (or an earlier upload) would have left it."""
        path = self.root / kind / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def view(self, **params: str) -> Any:
        return self.client.get(f"{U2}/api/view", params=params, headers=self.auth)

    def upload(self, data: bytes = PNG, name: str = "photo.png", route: str = "image",
               **fields: str) -> Any:
        return self.client.post(f"{U2}/api/upload/{route}", headers=self.auth,
                                files={"image": (name, data, "image/png")}, data=fields)


@pytest.fixture
def ws(hub: tuple[HubHarness, TestClient]) -> Workspace:
    return Workspace(*hub)


# --------------------------------------------------------------------------- view


def test_view_serves_outputs_inputs_and_temp(ws: Workspace) -> None:
    ws.put("output", "ComfyUI_00001_.png", PNG)
    ws.put("output", "video/clip é.mp4", make_mp4(16, 16, frames=2))
    ws.put("input", "pasted/image.webp", make_webp(4, 4))
    ws.put("temp", "ComfyUI_temp_abcde_00001_.png", OTHER_PNG)
    r = ws.view(filename="ComfyUI_00001_.png")  # type defaults to output
    assert r.status_code == 200 and r.content == PNG
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"] == 'inline; filename="ComfyUI_00001_.png"'
    r = ws.view(filename="clip é.mp4", subfolder="video", type="output", rand="0.3")
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert r.headers["content-disposition"] == "inline; filename*=utf-8''clip%20%C3%A9.mp4"
    r = ws.view(filename="image.webp", subfolder="pasted", type="input")
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp"
    r = ws.view(filename="ComfyUI_temp_abcde_00001_.png", type="temp")
    assert r.content == OTHER_PNG
    # A folder part in the name works as a subfolder.
    assert ws.view(filename="pasted/image.webp", type="input").status_code == 200


def test_view_annotation_picks_the_folder(ws: Workspace) -> None:
    ws.put("input", "a.png", PNG)
    ws.put("output", "a.png", OTHER_PNG)
    assert ws.view(filename="a.png [input]").content == PNG
    assert ws.view(filename="a.png [input]", type="output").content == PNG
    assert ws.view(filename="a.png [output]", type="input").content == OTHER_PNG
    assert ws.view(filename="a.png [temp]").status_code == 404


def test_view_ignores_preview_and_channel(ws: Workspace) -> None:
    ws.put("output", "x.png", PNG)
    for params in ({"preview": "webp;90"}, {"preview": "jpeg;50", "channel": "rgb"},
                   {"channel": "a"}):
        r = ws.view(filename="x.png", **params)
        assert r.status_code == 200 and r.content == PNG
        assert r.headers["content-type"] == "image/png"


@pytest.mark.parametrize(("params", "status"), [
    ({}, 400),
    ({"filename": ""}, 400),
    ({"filename": "missing.png"}, 404),
    ({"filename": "x.png", "type": "userdata"}, 400),  # settings are not files to view
    ({"filename": "x.png", "type": "models"}, 400),
    ({"filename": "/etc/passwd"}, 400),
    ({"filename": "../input/x.png"}, 400),
    ({"filename": "../../user003/output/x.png"}, 400),
    ({"filename": "..\\x.png"}, 400),
    ({"filename": "x\x00.png"}, 400),
    ({"filename": "x.png", "subfolder": ".."}, 403),
    ({"filename": "x.png", "subfolder": "../../user003/output"}, 403),
    ({"filename": "x.png", "subfolder": "/etc"}, 403),
    ({"filename": "x.png", "subfolder": "a/../../b"}, 403),
    ({"filename": "sub", "subfolder": ""}, 404),  # a folder is not a file
])
def test_view_refusals(ws: Workspace, params: dict[str, str], status: int) -> None:
    ws.put("output", "sub/x.png", PNG)
    (ws.data_dir / "users/user003/output/x.png").write_bytes(b"THEIRS")
    r = ws.view(**params)
    assert r.status_code == status, r.text
    assert "error" in r.json()


@pytest.mark.parametrize(("query", "status"), [
    ("filename=%2e%2e%2Fx.png", 400),
    ("filename=%2e%2e%2F%2e%2e%2Fuser003%2Foutput%2Fx.png", 400),
    ("filename=%2Fetc%2Fpasswd", 400),
    ("filename=x.png%00.txt", 400),
    ("filename=x.png&subfolder=%2e%2e", 403),
    ("filename=x.png&subfolder=%2e%2e%2F%2e%2e%2Fuser003%2Foutput", 403),
    ("filename=x.png%20%5Bmodels%5D", 404),  # not an annotation: just a name that is missing
])
def test_view_refuses_encoded_traversal(ws: Workspace, query: str, status: int) -> None:
    ws.put("output", "x.png", PNG)
    (ws.data_dir / "users/user003/output/x.png").write_bytes(b"THEIRS")
    r = ws.client.get(f"{U2}/api/view?{query}", headers=ws.auth)
    assert r.status_code == status, r.text
    assert "THEIRS" not in r.text


@pytest.mark.parametrize("name", ["page.html", "page.htm", "app.js", "style.css", "feed.xml",
                                  "doc.xhtml", "pic.svg"])
def test_view_sends_active_types_as_downloads(ws: Workspace, name: str) -> None:
    ws.put("output", name, b"<script>alert(1)</script>")
    r = ws.view(filename=name)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"


def test_view_svg_shown_inline_only_as_an_image(ws: Workspace) -> None:
    ws.put("output", "pic.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    r = ws.client.get(f"{U2}/api/view", params={"filename": "pic.svg"},
                      headers={**ws.auth, "Sec-Fetch-Dest": "image"})
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert r.headers["content-disposition"].startswith("inline")
    assert r.headers["vary"] == "Sec-Fetch-Dest"
    r = ws.client.get(f"{U2}/api/view", params={"filename": "pic.svg"},
                      headers={**ws.auth, "Sec-Fetch-Dest": "document"})
    assert r.headers["content-type"] == "application/octet-stream"


def test_view_refuses_a_planted_symlink(ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"SECRET")
    ws.root.joinpath("output").mkdir(parents=True, exist_ok=True)
    os.symlink(outside, ws.root / "output/link")
    os.symlink(outside / "secret.png", ws.root / "output/secret.png")
    assert ws.view(filename="secret.png", subfolder="link").status_code == 403
    assert ws.view(filename="secret.png").status_code == 403
    assert ws.view(filename="link/secret.png").status_code == 403


# --------------------------------------------------------------------------- internal files


def test_internal_files_newest_first(ws: Workspace) -> None:
    for name, mtime in [("old.png", 1_000), ("new.png", 3_000), ("mid.mp4", 2_000)]:
        os.utime(ws.put("input", name, PNG), (mtime, mtime))
    ws.put("input", ".DS_Store", b"x")
    ws.put("input", "pasted/deep.png", PNG)
    r = ws.client.get(f"{U2}/internal/files/input", headers=ws.auth)
    assert r.json() == ["new.png [input]", "mid.mp4 [input]", "old.png [input]"]
    r = ws.client.get(f"{U2}/internal/files/temp", headers=ws.auth)
    assert r.status_code == 200 and r.json() == []
    for kind in ("userdata", "models", ".."):
        r = ws.client.get(f"{U2}/internal/files/{kind}", headers=ws.auth)
        assert r.status_code in (400, 404), kind


# --------------------------------------------------------------------------- upload


def test_upload_names_like_comfyui(ws: Workspace) -> None:
    r = ws.upload()
    assert r.status_code == 200 and r.json() == {"name": "photo.png", "subfolder": "",
                                                 "type": "input"}
    assert (ws.root / "input/photo.png").read_bytes() == PNG
    # Same bytes: the existing name, nothing written.
    assert ws.upload().json()["name"] == "photo.png"
    # Other bytes: the next free ' (n)' name.
    assert ws.upload(OTHER_PNG).json()["name"] == "photo (1).png"
    assert ws.upload(b"third").json()["name"] == "photo (2).png"
    assert ws.upload(OTHER_PNG).json()["name"] == "photo (1).png"
    assert sorted(p.name for p in (ws.root / "input").iterdir()) == [
        "photo (1).png", "photo (2).png", "photo.png"]
    # Overwrite replaces in place.
    r = ws.upload(b"new", overwrite="true")
    assert r.json()["name"] == "photo.png"
    assert (ws.root / "input/photo.png").read_bytes() == b"new"
    assert ws.upload(b"newer", overwrite="1").json()["name"] == "photo.png"
    # Counter-style names are not renumbered (unlike job outputs).
    ws.upload(b"a", name="ComfyUI_00001_.png")
    assert ws.upload(b"b", name="ComfyUI_00001_.png").json()["name"] == "ComfyUI_00001_ (1).png"
    assert ws.upload(b"c", name="README").json()["name"] == "README"
    assert ws.upload(b"d", name="README").json()["name"] == "README (1)"


def test_upload_subfolder_temp_and_unicode(ws: Workspace) -> None:
    r = ws.upload(name="clip é 1.png", subfolder="pasted", type="input")
    assert r.json() == {"name": "clip é 1.png", "subfolder": "pasted", "type": "input"}
    assert (ws.root / "input/pasted/clip é 1.png").read_bytes() == PNG
    r = ws.upload(subfolder="a/b", type="temp")
    assert r.json() == {"name": "photo.png", "subfolder": "a/b", "type": "temp"}
    assert (ws.root / "temp/a/b/photo.png").exists()
    r = ws.view(filename="clip é 1.png", subfolder="pasted", type="input")
    assert r.content == PNG


@pytest.mark.parametrize(("fields", "name", "status"), [
    ({"type": "output"}, "x.png", 400),
    ({"type": "userdata"}, "comfy.settings.json", 400),
    ({"type": "models"}, "x.png", 400),
    ({"subfolder": ".."}, "x.png", 400),
    ({"subfolder": "../../user003/input"}, "x.png", 400),
    ({"subfolder": "/tmp"}, "x.png", 400),
    ({"subfolder": "a\x00b"}, "x.png", 400),
    ({}, "../x.png", 400),
    ({}, "..", 400),
    ({}, ".", 400),
    ({}, "a\\..\\x.png", 400),
])
def test_upload_refusals(ws: Workspace, fields: dict[str, str], name: str, status: int) -> None:
    before = files_under(ws.data_dir)
    r = ws.upload(name=name, **fields)
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert files_under(ws.data_dir) == before


def test_upload_needs_a_multipart_image(ws: Workspace) -> None:
    url = f"{U2}/api/upload/image"
    r = ws.client.post(url, headers=ws.auth, data={"subfolder": "x"})
    assert r.status_code == 400
    r = ws.client.post(url, headers=ws.auth, content=b"raw")
    assert r.status_code == 400
    r = ws.client.post(url, headers=ws.auth, files={"image": ("", b"x", "image/png")})
    assert r.status_code == 400
    r = ws.client.post(url, headers={**ws.auth, "Content-Type": "multipart/form-data"},
                       content=b"no boundary")
    assert r.status_code == 400
    r = ws.client.post(url, headers={**ws.auth,
                                     "Content-Type": "multipart/form-data; boundary=xx"},
                       content=b"--xx\r\nbroken")
    assert r.status_code == 400
    r = ws.client.post(url, headers=ws.auth, files={"image": ("a.png", b"x", "image/png"),
                                                    "subfolder": ("s.txt", b"x", "text/plain")})
    assert r.status_code == 400


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "comfymultitestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ninput\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_oversized_upload_is_413_and_leaves_no_file(make_hub) -> None:
    limit = 4096
    harness = make_hub(files={"max_upload_bytes": limit})
    with TestClient(harness.app) as client:
        ws = Workspace(harness, client)
        before = files_under(ws.data_dir)
        # File over the limit, body within the multipart allowance.
        r = ws.upload(b"x" * (limit + 1), name="big.png")
        assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
        # Declared body far over the limit: refused before reading.
        r = ws.upload(b"x" * (limit + 100_000), name="big.png")
        assert r.status_code == 413
        # No Content-Length (chunked): cut off while streaming.
        body, ctype = multipart("big.png", b"x" * (limit + 100_000))
        chunks = [body[i:i + 8192] for i in range(0, len(body), 8192)]
        r = client.post(f"{U2}/api/upload/image", content=iter(chunks),
                        headers={**ws.auth, "Content-Type": ctype})
        assert r.status_code == 413
        r = ws.upload(b"x" * 2000, name="big.png", route="mask",
                      original_ref=json.dumps({"filename": "nope.png"}))
        assert r.status_code == 404
        assert files_under(ws.data_dir) == before
        assert list((ws.data_dir / "tmp").glob("*")) == []
        assert ws.upload(b"x" * limit, name="fits.png").status_code == 200
        body, ctype = multipart("chunked.png", b"y" * 1000)
        r = client.post(f"{U2}/api/upload/image", content=iter([body[:100], body[100:]]),
                        headers={**ws.auth, "Content-Type": ctype})
        assert r.status_code == 200 and r.json()["name"] == "chunked.png"
        assert (ws.root / "input/chunked.png").read_bytes() == b"y" * 1000


def test_upload_into_a_planted_symlink_is_refused(ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    ws.root.joinpath("input").mkdir(parents=True, exist_ok=True)
    os.symlink(outside, ws.root / "input/link")
    os.symlink(outside / "victim.png", ws.root / "input/victim.png")
    assert ws.upload(subfolder="link").status_code == 403
    assert ws.upload(name="victim.png", overwrite="true").status_code == 403
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- mask


def test_mask_without_pillow_stores_the_uploaded_image(ws: Workspace,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    ws.put("input", "clipspace/orig.png", PNG)
    ref = json.dumps({"filename": "orig.png", "subfolder": "clipspace", "type": "input"})
    r = ws.upload(OTHER_PNG, name="mask.png", route="mask", subfolder="clipspace",
                  original_ref=ref)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "mask.png", "subfolder": "clipspace", "type": "input"}
    assert (ws.root / "input/clipspace/mask.png").read_bytes() == OTHER_PNG
    assert (ws.root / "input/clipspace/orig.png").read_bytes() == PNG


class FakeImage:
    """Just enough of PIL.Image for the mask route: records what was combined."""

    def __init__(self, data: bytes, mode: str = "P", text: dict[str, str] | None = None) -> None:
        self.data, self.mode, self.text, self.alpha = data, mode, text or {}, b""

    def __enter__(self) -> FakeImage:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def convert(self, mode: str) -> FakeImage:
        return FakeImage(self.data, mode, self.text)

    def getchannel(self, name: str) -> bytes:
        assert self.mode == "RGBA" and name == "A"
        return b"alpha-of:" + self.data

    def putalpha(self, alpha: bytes) -> None:
        self.alpha = alpha

    def save(self, out: io.BytesIO, format: str, compress_level: int, pnginfo: Any) -> None:
        assert format == "PNG" and self.mode == "RGBA"
        out.write(b"|".join([self.data, self.alpha, json.dumps(pnginfo.texts).encode()]))


def fake_pillow() -> types.ModuleType:
    image_mod = types.ModuleType("PIL.Image")

    def open_(source: Any) -> FakeImage:
        if isinstance(source, (str, Path)):
            return FakeImage(Path(source).read_bytes(), text={"prompt": "{}"})
        data = source.read()
        if data == b"not an image":
            raise OSError("cannot identify image file")
        return FakeImage(data)

    class DecompressionBombError(Exception):
        pass

    class PngInfo:
        def __init__(self) -> None:
            self.texts: dict[str, str] = {}

        def add_text(self, key: str, value: str) -> None:
            self.texts[key] = value

    image_mod.open = open_  # type: ignore[attr-defined]
    image_mod.DecompressionBombError = DecompressionBombError  # type: ignore[attr-defined]
    png_mod = types.ModuleType("PIL.PngImagePlugin")
    png_mod.PngInfo = PngInfo  # type: ignore[attr-defined]
    pil = types.ModuleType("PIL")
    pil.Image = image_mod  # type: ignore[attr-defined]
    pil.PngImagePlugin = png_mod  # type: ignore[attr-defined]
    return pil


def test_mask_with_pillow_puts_the_alpha_on_the_original(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "PIL", fake_pillow())
    ws.put("output", "render.png", b"ORIGINAL")
    ref = json.dumps({"filename": "render.png [output]", "subfolder": ""})
    r = ws.upload(b"MASK", name="render-mask.png", route="mask", subfolder="clipspace",
                  original_ref=ref)
    assert r.status_code == 200, r.text
    stored = (ws.root / "input/clipspace/render-mask.png").read_bytes()
    assert stored == b'ORIGINAL|alpha-of:MASK|{"prompt": "{}"}'
    # Not an image: 400, nothing stored.
    r = ws.upload(b"not an image", name="bad.png", route="mask", original_ref=ref)
    assert r.status_code == 400
    assert not (ws.root / "input/bad.png").exists()


@pytest.mark.parametrize(("ref", "status"), [
    (None, 400),
    ("{broken", 400),
    ("[]", 400),
    (json.dumps({"subfolder": ""}), 400),
    (json.dumps({"filename": 5}), 400),
    (json.dumps({"filename": "x.png", "type": "userdata"}), 400),
    (json.dumps({"filename": "../x.png"}), 400),
    (json.dumps({"filename": "/etc/passwd"}), 400),
    (json.dumps({"filename": "x.png", "subfolder": "../../user003/output"}), 403),
    (json.dumps({"filename": "missing.png"}), 404),
])
def test_mask_original_ref_refusals(ws: Workspace, ref: str | None, status: int) -> None:
    ws.put("output", "x.png", PNG)
    (ws.data_dir / "users/user003/output/x.png").write_bytes(b"THEIRS")
    before = files_under(ws.data_dir)
    fields = {} if ref is None else {"original_ref": ref}
    r = ws.upload(OTHER_PNG, name="m.png", route="mask", **fields)
    assert r.status_code == status, r.text
    assert files_under(ws.data_dir) == before


# --------------------------------------------------------------------------- isolation


def all_routes() -> Iterator[tuple[str, str, dict[str, Any]]]:
    yield "GET", "/api/view?filename=secret.png", {}
    yield "GET", "/api/view?filename=secret.png%20%5Binput%5D", {}
    yield "GET", "/api/view?filename=missing.png", {}
    yield "GET", "/internal/files/output", {}
    yield "GET", "/internal/files/input", {}
    yield "GET", "/internal/files/bogus", {}
    upload = {"files": {"image": ("secret.png", b"EVIL", "image/png")},
              "data": {"overwrite": "true"}}
    yield "POST", "/api/upload/image", upload
    yield "POST", "/api/upload/image", {"content": b"x" * 10}
    yield "POST", "/api/upload/mask", {
        "files": {"image": ("secret.png", b"EVIL", "image/png")},
        "data": {"overwrite": "true", "original_ref": json.dumps({"filename": "secret.png"})}}


@pytest.mark.parametrize("scheme", ["bearer", "basic"])
def test_another_user_gets_404_everywhere_and_changes_nothing(ws: Workspace,
                                                              scheme: str) -> None:
    ws.put("output", "secret.png", b"MINE")
    ws.put("input", "secret.png", b"MINE")
    before = files_under(ws.data_dir)
    intruder = getattr(ws.harness, scheme)("user003")
    for method, path, kw in all_routes():
        r = ws.client.request(method, U2 + path, headers=intruder, **kw)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.json()["error"]["type"] == "not_found"
        assert "MINE" not in r.text and "secret.png" not in r.text
        r = ws.client.request(method, U2 + path, **kw)
        assert r.status_code == 401, (method, path)
    assert files_under(ws.data_dir) == before
    # user003's own upload lands in user003's folder only.
    r = ws.client.post("/u/user003/api/upload/image", headers=intruder,
                       files={"image": ("secret.png", b"THEIRS", "image/png")},
                       data={"overwrite": "true"})
    assert r.status_code == 200
    assert (ws.data_dir / "users/user003/input/secret.png").read_bytes() == b"THEIRS"
    assert (ws.root / "input/secret.png").read_bytes() == b"MINE"
    r = ws.client.get("/u/user003/api/view?filename=secret.png", headers=intruder)
    assert r.status_code == 404  # user003 has no such output; user002's is not visible


def test_oversized_upload_over_real_http(live_hub) -> None:
    import httpx

    harness, url = live_hub(files={"max_upload_bytes": 4096})
    harness.user("user002")
    with httpx.Client(base_url=url, headers=harness.bearer("user002")) as c:
        r = c.post(f"{U2}/api/upload/image", files={"image": ("a.png", b"x" * 50_000)})
        assert r.status_code == 413
        r = c.post(f"{U2}/api/upload/image", files={"image": ("a b é.png", PNG)},
                   data={"subfolder": "pasted"})
        assert r.json() == {"name": "a b é.png", "subfolder": "pasted", "type": "input"}
        r = c.get(f"{U2}/api/view", params={"filename": "a b é.png [input]",
                                            "subfolder": "pasted"})
        assert r.status_code == 200 and r.content == PNG
    data_dir = harness.ctx.settings.data_dir
    assert sorted(p.name for p in (data_dir / "users/user002/input").rglob("*")) == [
        "a b é.png", "pasted"]
