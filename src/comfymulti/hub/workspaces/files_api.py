"""A participant's input/output/temp files under /u/<user>/, with ComfyUI's routes: /api/view,
/api/upload/image, /api/upload/mask and /internal/files/{type}.

Every path goes through `files.resolve` for the logged-in user only. Uploads are streamed to
DATA_DIR/tmp under a size limit and renamed into place, so a refused or broken upload leaves
nothing in the user's folder.

Deliberately different from ComfyUI:
- /api/view ignores `preview=` and `channel=` and always sends the original file: the hub does
  not depend on Pillow to re-encode (the frontend shows any image type it gets);
- /api/view keeps a folder part in `filename` (ComfyUI drops it and serves the base name from
  the folder above); a malformed name is 400 and a symlink leading out is 403;
- uploads go to `input` or `temp` only: `output` holds what jobs produced and the hub keeps
  the record of it, so an upload there is refused (400);
- /api/upload/mask copies the mask's alpha onto the original only when Pillow is importable;
  without it the uploaded mask image is stored as the result. A missing original is 404
  (ComfyUI answers with a name but writes nothing).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import anyio
from fastapi import Depends, Query, Request
from fastapi.responses import FileResponse
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from comfymulti.errors import Forbidden, InvalidInput, NotFound, PayloadTooLarge
from comfymulti.hub.context import HubContext
from comfymulti.hub.web import bodies
from comfymulti.hub.web.access import get_hub, workspace_owner
from comfymulti.hub.web.openapi import BINARY, request_body
from comfymulti.hub.workspaces.router import workspace_router
from comfymulti.models import User
from comfymulti.userfiles import is_active, media_type, place, resolve, staging_path

router = workspace_router()

VIEW_TYPES = ("output", "input", "temp")
UPLOAD_TYPES = ("input", "temp")
MULTIPART_SLACK = 64 * 1024  # form fields and part headers around the file
_ANNOTATED = re.compile(r"^(?P<name>.*?) ?\[(?P<type>input|output|temp)\]$")
_CHUNK = 1024 * 1024
_UPLOAD_FIELDS: dict[str, Any] = {
    "image": BINARY, "type": {"type": "string", "enum": list(UPLOAD_TYPES)},
    "subfolder": {"type": "string"}, "overwrite": {"type": "string", "enum": ["true", "false"]},
}


def _split_annotation(filename: str, default_type: str) -> tuple[str, str]:
    """'name.png [output]' → ('name.png', 'output'): the annotation picks the folder."""
    m = _ANNOTATED.match(filename)
    return (m["name"], m["type"]) if m else (filename, default_type)


def _locate(hub: HubContext, me: User, kind: str, subfolder: str, filename: str) -> Path:
    """A file named in a request, with ComfyUI's status codes: 400 for a bad name or type,
    403 for a subfolder that climbs out."""
    if not filename:
        raise InvalidInput("filename is required")
    if kind not in VIEW_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(VIEW_TYPES)}")
    if subfolder.startswith("/") or ".." in PurePosixPath(subfolder).parts:
        raise Forbidden("subfolder leaves the user's folder")
    path = resolve(hub.settings.data_dir, me.name, kind, subfolder, filename)
    if path == resolve(hub.settings.data_dir, me.name, kind, subfolder, ""):
        raise InvalidInput("filename is required")
    return path


@router.get("/api/view", response_class=FileResponse)
async def view(request: Request, filename: str = "", kind: str = Query("output", alias="type"),
               subfolder: str = "", me: User = Depends(workspace_owner),
               hub: HubContext = Depends(get_hub)) -> FileResponse:
    """One of the user's files. `preview`/`channel` are accepted and ignored: the original
    is sent. Active types (HTML, JS, CSS, XML, SVG) only as downloads; never sniffed."""
    name, kind = _split_annotation(filename, kind)
    path = _locate(hub, me, kind, subfolder, name)
    if not path.is_file():
        raise NotFound(f"no {kind} file {name!r}")
    content_type = media_type(path.name)
    headers = {"X-Content-Type-Options": "nosniff"}
    disposition = "inline"
    if is_active(content_type):
        # The answer depends on Sec-Fetch-Dest: no cache may replay it to another kind of fetch.
        headers.update({"Vary": "Sec-Fetch-Dest", "Cache-Control": "no-store"})
        svg_as_image = (content_type == "image/svg+xml"
                        and request.headers.get("sec-fetch-dest") == "image")
        if not svg_as_image:  # an <img> runs no script; a document would
            content_type, disposition = "application/octet-stream", "attachment"
    return FileResponse(path, media_type=content_type, filename=path.name, headers=headers,
                        content_disposition_type=disposition)


@router.get("/internal/files/{kind}")
async def list_files(kind: str, me: User = Depends(workspace_owner),
                     hub: HubContext = Depends(get_hub)) -> list[str]:
    """Top-level files of one folder as 'name [type]', newest first (hidden files left out)."""
    if kind not in VIEW_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(VIEW_TYPES)}")
    folder = resolve(hub.settings.data_dir, me.name, kind, "", "")
    if not folder.is_dir():
        return []
    with os.scandir(folder) as it:
        found = [(e.stat().st_mtime, e.name) for e in it
                 if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]
    found.sort(key=lambda f: (-f[0], f[1]))
    return [f"{name} [{kind}]" for _, name in found]


# --------------------------------------------------------------------------- uploads


async def _read_form(request: Request, limit: int) -> FormData:
    """The multipart form, refused with 413 as soon as the body outgrows the limit (the file
    parts are spooled to temporary files that the caller closes)."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise InvalidInput("send the upload as multipart/form-data")
    async with aclosing(bodies.stream(request, limit + MULTIPART_SLACK, "upload")) as stream:
        parser = MultiPartParser(request.headers, stream, max_files=4, max_fields=16)
        try:
            return await parser.parse()
        except MultiPartException as exc:
            raise InvalidInput(f"bad multipart form: {exc.message}") from None


def _field(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a text field")
    return value


class _Upload:
    """Where one upload goes, checked before any byte is stored."""

    def __init__(self, hub: HubContext, me: User, form: FormData) -> None:
        image = form.get("image")
        if not isinstance(image, UploadFile) or not image.filename:
            raise InvalidInput("the form needs a file field 'image' with a file name")
        if image.size is not None and image.size > hub.settings.files.max_upload_bytes:
            raise PayloadTooLarge(f"uploads are limited to {hub.settings.files.max_upload_bytes}"
                                  " bytes")
        self.file = image.file
        self.filename = image.filename
        self.kind = _field(form, "type") or "input"
        self.subfolder = _field(form, "subfolder")
        self.overwrite = _field(form, "overwrite") in ("true", "1")
        if self.kind not in UPLOAD_TYPES:
            raise InvalidInput("uploads go to type 'input' or 'temp'; 'output' is written by jobs")
        if "/" in self.filename:
            raise InvalidInput("the file name may not contain '/'; use subfolder")
        self.data_dir = hub.settings.data_dir
        self.user = me.name
        self.folder = resolve(self.data_dir, me.name, self.kind, self.subfolder, "")
        if self.path(self.filename) == self.folder:
            raise InvalidInput(f"{self.filename!r} is not a file name")

    def path(self, name: str) -> Path:
        return resolve(self.data_dir, self.user, self.kind, self.subfolder, name)

    def answer(self, name: str) -> dict[str, str]:
        return {"name": name, "subfolder": self.subfolder, "type": self.kind}


def _candidates(filename: str) -> Iterator[str]:
    """ComfyUI's names for an upload whose name is taken: 'a.png', 'a (1).png', …"""
    yield filename
    stem, ext = os.path.splitext(filename)
    i = 1
    while True:
        yield f"{stem} ({i}){ext}"
        i += 1


def _sha256(fh: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _store_upload(up: _Upload, source: BinaryIO) -> str:
    """Store `source` as the upload (blocking; run in a thread) and return its final name."""
    tmp = staging_path(up.data_dir, "upload")
    try:
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        try:
            up.folder.mkdir(parents=True, exist_ok=True)
            if up.overwrite:
                place(tmp, up.path(up.filename), overwrite=True)
                return up.filename
            return _place_new(up, tmp, digest.hexdigest())
        except (NotADirectoryError, IsADirectoryError, FileExistsError):
            raise InvalidInput("a file and a folder would have the same name") from None
    finally:
        tmp.unlink(missing_ok=True)


def _place_new(up: _Upload, tmp: Path, digest: str) -> str:
    """Without overwrite: the same bytes under a taken name reuse that name (nothing is
    written); other bytes get the first free 'name (n).ext'."""
    names = _candidates(up.filename)
    while True:
        name = next(names)
        target = up.path(name)
        if target.is_file():
            with target.open("rb") as fh:
                if _sha256(fh) == digest:
                    return name
        if os.path.lexists(target):
            continue
        try:
            place(tmp, target, overwrite=False)
        except FileExistsError:  # saved by someone else just now: next name
            continue
        return name


@router.post("/api/upload/image", openapi_extra=request_body(
    {"type": "object", "required": ["image"], "properties": _UPLOAD_FIELDS}, "multipart/form-data"))
async def upload_image(request: Request, me: User = Depends(workspace_owner),
                       hub: HubContext = Depends(get_hub)) -> dict[str, str]:
    """Multipart `image`, `type` (input|temp), `subfolder`, `overwrite` → {name, subfolder,
    type}."""
    form = await _read_form(request, hub.settings.files.max_upload_bytes)
    try:
        up = _Upload(hub, me, form)
        name = await anyio.to_thread.run_sync(_store_upload, up, up.file)
    finally:
        await form.close()
    return up.answer(name)


def _original(hub: HubContext, me: User, form: FormData) -> Path:
    """The image `original_ref` ({filename, subfolder, type}) names; it must exist."""
    ref = bodies.parse_json(_field(form, "original_ref").encode())
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise InvalidInput("original_ref must be JSON {filename, subfolder, type}")
    subfolder, kind = ref.get("subfolder") or "", ref.get("type") or "output"
    if not isinstance(subfolder, str) or not isinstance(kind, str):
        raise InvalidInput("original_ref subfolder and type must be strings")
    name, kind = _split_annotation(ref["filename"], kind)
    path = _locate(hub, me, kind, subfolder, name)
    if not path.is_file():
        raise NotFound(f"the original {kind} file {name!r} does not exist")
    return path


def _with_mask_alpha(original: Path, mask: BinaryIO) -> bytes | None:
    """The original as PNG (its text chunks kept) with the mask's alpha channel, or None when
    Pillow is not installed: the hub does not depend on it."""
    try:
        from PIL import Image, PngImagePlugin
    except ImportError:
        return None
    try:
        with Image.open(original) as orig, Image.open(mask) as alpha_source:
            info = PngImagePlugin.PngInfo()
            for key, value in getattr(orig, "text", {}).items():
                info.add_text(key, value)
            result = orig.convert("RGBA")
            result.putalpha(alpha_source.convert("RGBA").getchannel("A"))
            out = io.BytesIO()
            result.save(out, format="PNG", compress_level=4, pnginfo=info)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput(f"cannot put the mask on the original: {exc}") from None
    return out.getvalue()


def _store_mask(up: _Upload, original: Path) -> str:
    combined = _with_mask_alpha(original, up.file)
    if combined is None:
        up.file.seek(0)
        return _store_upload(up, up.file)
    return _store_upload(up, io.BytesIO(combined))


@router.post("/api/upload/mask", openapi_extra=request_body(
    {"type": "object", "required": ["image", "original_ref"],
     "properties": {**_UPLOAD_FIELDS, "original_ref": {
         "type": "string", "description": 'JSON {"filename", "subfolder", "type"}'}}},
    "multipart/form-data"))
async def upload_mask(request: Request, me: User = Depends(workspace_owner),
                      hub: HubContext = Depends(get_hub)) -> dict[str, str]:
    """Like upload/image, plus `original_ref`: the stored file is the original with the
    uploaded image's alpha as its mask (see the module notes without Pillow)."""
    form = await _read_form(request, hub.settings.files.max_upload_bytes)
    try:
        up = _Upload(hub, me, form)
        original = _original(hub, me, form)
        name = await anyio.to_thread.run_sync(_store_mask, up, original)
    finally:
        await form.close()
    return up.answer(name)

