"""A participant's userdata (workflows, templates, subgraphs), settings and user.css, served
under /u/<user>/ with ComfyUI's routes and shapes, from DATA_DIR/users/<user>/userdata/.

Userdata names travel as ONE path segment with '/' sent as %2F
(`/api/userdata/workflows%2Fmy%20flow.json`). Starlette decodes %2F before routing, so the
names are read from the raw request path; a name sent with a real '/' is not found, as in
ComfyUI. Files are written to DATA_DIR/tmp first and renamed into place, so a reader never
sees half a file and `overwrite=false` can never clobber a file saved at the same moment.

Deliberately different from ComfyUI:
- a malformed name (`..`, absolute, NUL, backslash) is 400; a symlink leading out is 403;
  ComfyUI answers 403 for both;
- listings skip symlinks; the v2 `path` is decoded once (ComfyUI decodes it twice);
- bodies are limited to `files.max_upload_bytes`, settings included (413 beyond);
- a settings file that is not a JSON object reads as `{}` (logged), so the app still mounts
  (ComfyUI answers 500 and the frontend never starts); NaN/Infinity are refused (400) because
  they would make the stored settings unreadable to the browser.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from comfymulti.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, StorageError
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import templates
from comfymulti.hub.web.access import get_hub, workspace_owner
from comfymulti.hub.web.bodies import read_body, read_json
from comfymulti.hub.web.openapi import ANY_JSON, BINARY, JSON_OBJECT, request_body
from comfymulti.hub.workspaces.router import workspace_router
from comfymulti.models import User
from comfymulti.userfiles import is_active, media_type, place, resolve, staging_path

log = logging.getLogger("comfymulti.hub.userdata")

router = workspace_router()

SETTINGS_FILE = "comfy.settings.json"
USER_CSS = "user.css"
NOSNIFF = {"X-Content-Type-Options": "nosniff"}


# --------------------------------------------------------------------------- paths


def _path(hub: HubContext, me: User, name: str) -> Path:
    """The userdata file `name` (may contain '/'); never the userdata folder itself."""
    path = resolve(hub.settings.data_dir, me.name, "userdata", "", name)
    if path == _root(hub, me):
        raise InvalidInput("a file name is needed")
    return path


def _root(hub: HubContext, me: User) -> Path:
    return resolve(hub.settings.data_dir, me.name, "userdata", "", "")


def _segments(request: Request, user: str) -> list[str]:
    """The decoded segments after /u/<user>/api/userdata/, split on the raw path's real
    slashes only, so that %2F stays inside a name."""
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    try:
        parts = [unquote_to_bytes(p).decode("utf-8") for p in raw.split(b"/")]
    except UnicodeDecodeError:
        raise InvalidInput("the path is not valid UTF-8") from None
    prefix = ["u", user, "api", "userdata"]
    for i in range(len(parts) - len(prefix) + 1):
        if parts[i:i + len(prefix)] == prefix:
            return parts[i + len(prefix):]
    raise NotFound("no such userdata route")


def _one_name(request: Request, user: str) -> str:
    names = _segments(request, user)
    if len(names) != 1 or not names[0]:
        raise NotFound("userdata names are one path segment; send '/' as %2F")
    return names[0]


@contextmanager
def _fs_errors(name: str) -> Iterator[None]:
    """Turn what the file system says about a bad name into our errors."""
    try:
        yield
    except (NotADirectoryError, IsADirectoryError, FileExistsError):
        raise InvalidInput(f"{name!r}: a file and a folder would have the same name") from None
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:  # renaming onto a folder
            raise InvalidInput(f"{name!r} is a folder") from None
        if exc.errno in (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ):
            raise InvalidInput(f"{name!r} is not a valid file name") from None
        raise StorageError(f"could not store {name!r}: {exc.strerror}") from exc


def _store(hub: HubContext, path: Path, data: bytes, overwrite: bool, name: str) -> None:
    """Write `data` to `path` atomically; Conflict if it exists and `overwrite` is false."""
    tmp = staging_path(hub.settings.data_dir, "userdata")
    try:
        with _fs_errors(name):
            path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        _place(tmp, path, overwrite, name)
    finally:
        tmp.unlink(missing_ok=True)


def _place(source: Path, target: Path, overwrite: bool, name: str) -> None:
    with _fs_errors(name):
        try:
            place(source, target, overwrite)
        except FileExistsError:  # only without overwrite: someone saved it first
            raise Conflict(f"{name!r} exists already") from None


def _info(path: Path, relative_to: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": path.relative_to(relative_to).as_posix(), "size": st.st_size,
            "modified": int(st.st_mtime * 1000), "created": int(st.st_ctime * 1000)}


def _saved(path: Path, root: Path, full_info: str) -> Any:
    """What ComfyUI answers after a save or move: file info, or the path as a JSON string."""
    if _flag(full_info):
        return _info(path, root)
    return path.relative_to(root).as_posix()


def _flag(value: str) -> bool:
    return value.lower() == "true"


def _file_response(path: Path, root: Path) -> FileResponse:
    """Userdata is user-supplied content: a download, never rendered in our origin, except
    the user's own user.css, which the page loads as a stylesheet."""
    if path == root / USER_CSS:
        return FileResponse(path, media_type="text/css",
                            headers={**NOSNIFF, "Content-Disposition": "inline"})
    content_type = media_type(path.name)
    if is_active(content_type):
        content_type = "application/octet-stream"
    return FileResponse(path, media_type=content_type, filename=path.name, headers=NOSNIFF)


# --------------------------------------------------------------------------- listings


def _files(top: Path, recurse: bool) -> Iterator[Path]:
    """Files under `top` as ComfyUI's glob finds them (no hidden names), without symlinks."""
    with os.scandir(top) as entries:
        found = sorted(entries, key=lambda e: e.name)
    for entry in found:
        if entry.name.startswith(".") or entry.is_symlink():
            continue
        if entry.is_file():
            yield Path(entry.path)
        elif recurse and entry.is_dir():
            yield from _files(Path(entry.path), recurse)


@router.get("/api/userdata")
async def list_userdata(
    directory: str = Query("", alias="dir"), recurse: str = "", full_info: str = "",
    split: str = "", me: User = Depends(workspace_owner), hub: HubContext = Depends(get_hub),
) -> Any:
    """Files in a userdata folder; 404 when the folder does not exist (the frontend reads
    that as empty)."""
    if not directory:
        raise InvalidInput("dir is required")
    top = resolve(hub.settings.data_dir, me.name, "userdata", directory, "")
    shared = _workshop_templates(hub, directory, top, _flag(recurse))
    if not top.exists() and not shared:
        raise NotFound(f"no folder {directory!r}")
    if top.exists() and not top.is_dir():
        return []
    files = [(p, p.relative_to(top).as_posix())
             for p in (_files(top, _flag(recurse)) if top.exists() else ())]
    result: list[Any] = []
    for path, rel in files + shared:
        if _flag(full_info):
            result.append({**_info(path, path.parent), "path": rel})
            continue
        result.append([rel, *rel.split("/")] if _flag(split) else rel)
    return result


def _workshop_templates(hub: HubContext, directory: str, top: Path, recurse: bool
                        ) -> list[tuple[Path, str]]:
    """Published workshop workflows, listed in `workflows/Workshop/` unless the user saved a
    file of the same name there (their copy wins)."""
    if directory.strip("/") != "workflows" or not recurse:
        return []
    return [(path, f"{templates.FOLDER}/{path.name}")
            for path in templates.list_templates(hub.settings)
            if not (top / templates.FOLDER / path.name).exists()]


@router.get("/api/v2/userdata")
async def list_userdata_v2(path: str = "", me: User = Depends(workspace_owner),
                           hub: HubContext = Depends(get_hub)) -> list[dict[str, Any]]:
    """Everything below `path` (recursively), folders first, then by name."""
    root = _root(hub, me)
    top = resolve(hub.settings.data_dir, me.name, "userdata", path, "")
    if not top.exists():
        if top == root:
            return []
        raise NotFound(f"no folder {path!r}")
    if not top.is_dir():
        raise InvalidInput(f"{path!r} is not a folder")
    result: list[dict[str, Any]] = []
    for here, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(here, d))]
        for name in dirs:
            rel = Path(here, name).relative_to(root).as_posix()
            result.append({"name": name, "path": rel, "type": "directory"})
        for name in files:
            full = Path(here, name)
            if full.is_symlink():
                continue
            st = full.stat()
            result.append({"name": name, "path": full.relative_to(root).as_posix(),
                           "type": "file", "size": st.st_size, "modified": st.st_mtime})
    result.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
    return result


# --------------------------------------------------------------------------- files


@router.get("/api/userdata/{rest:path}", response_class=FileResponse)
async def get_userdata(request: Request, me: User = Depends(workspace_owner),
                       hub: HubContext = Depends(get_hub)) -> FileResponse:
    name = _one_name(request, me.name)
    path = _path(hub, me, name)
    if not path.is_file():
        shared = templates.template_for(hub.settings, name)
        if shared is None:
            raise NotFound(f"no userdata file {name!r}")
        return FileResponse(shared, media_type="application/json", filename=shared.name,
                            headers=NOSNIFF)
    return _file_response(path, _root(hub, me))


@router.post("/api/userdata/{rest:path}",
             openapi_extra=request_body(BINARY, "application/octet-stream"))
async def post_userdata(request: Request, overwrite: str = "true", full_info: str = "false",
                        me: User = Depends(workspace_owner),
                        hub: HubContext = Depends(get_hub)) -> Any:
    """Save the raw body as a file (`…/{file}`), or rename a file (`…/{file}/move/{dest}`).
    Only `overwrite=false` protects an existing file (ComfyUI's default is to overwrite)."""
    names = _segments(request, me.name)
    may_overwrite = overwrite != "false"
    if len(names) == 3 and names[1] == "move" and names[0] and names[2]:
        return _move(hub, me, names[0], names[2], may_overwrite, full_info)
    name = _one_name(request, me.name)
    path = _path(hub, me, name)
    if not may_overwrite and os.path.lexists(path):
        raise Conflict(f"{name!r} exists already")
    body = await read_body(request, hub.settings.files.max_upload_bytes)
    _store(hub, path, body, may_overwrite, name)
    return _saved(path, _root(hub, me), full_info)


def _move(hub: HubContext, me: User, name: str, dest_name: str, overwrite: bool,
          full_info: str) -> Any:
    source = _path(hub, me, name)
    if not source.is_file():
        raise NotFound(f"no userdata file {name!r}")
    dest = _path(hub, me, dest_name)
    if not overwrite and os.path.lexists(dest):
        raise Conflict(f"{dest_name!r} exists already")
    with _fs_errors(dest_name):
        dest.parent.mkdir(parents=True, exist_ok=True)
    _place(source, dest, overwrite, dest_name)
    return _saved(dest, _root(hub, me), full_info)


@router.delete("/api/userdata/{rest:path}", status_code=204)
async def delete_userdata(request: Request, me: User = Depends(workspace_owner),
                          hub: HubContext = Depends(get_hub)) -> Response:
    name = _one_name(request, me.name)
    path = _path(hub, me, name)
    if not path.is_file():
        raise NotFound(f"no userdata file {name!r}")
    path.unlink()
    return Response(status_code=204)


@router.get("/user.css", response_class=FileResponse)
async def user_css(me: User = Depends(workspace_owner),
                   hub: HubContext = Depends(get_hub)) -> FileResponse:
    """The page asks for it on every load; 404 is normal."""
    path = resolve(hub.settings.data_dir, me.name, "userdata", "", USER_CSS)
    if not path.is_file():
        raise NotFound("no user.css")
    return _file_response(path, _root(hub, me))


# --------------------------------------------------------------------------- settings
# Each change is read-modify-write with no await in between, so two changes arriving
# together on the hub's one event loop cannot lose each other.


def _settings_path(hub: HubContext, me: User) -> Path:
    return resolve(hub.settings.data_dir, me.name, "userdata", "", SETTINGS_FILE)


def _load_settings(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("unreadable settings file %s (%s); answering {}", path, exc)
        return {}
    if not isinstance(data, dict):
        log.warning("settings file %s holds no JSON object; answering {}", path)
        return {}
    return data


def _save_settings(hub: HubContext, path: Path, settings: dict[str, Any]) -> None:
    data = json.dumps(settings, indent=4, ensure_ascii=False, allow_nan=False).encode()
    if len(data) > hub.settings.files.max_upload_bytes:
        raise PayloadTooLarge("the settings would grow beyond the upload limit")
    _store(hub, path, data, overwrite=True, name=SETTINGS_FILE)


@router.get("/api/settings")
async def get_settings(me: User = Depends(workspace_owner),
                       hub: HubContext = Depends(get_hub)) -> JSONResponse:
    return JSONResponse(_load_settings(_settings_path(hub, me)))


def setting(hub: HubContext, me: User, setting_id: str) -> Any:
    """One of the user's frontend settings, or None when it was never set."""
    return _load_settings(_settings_path(hub, me)).get(setting_id)


@router.get("/api/settings/{setting_id}")
async def get_setting(setting_id: str, me: User = Depends(workspace_owner),
                      hub: HubContext = Depends(get_hub)) -> JSONResponse:
    """The value, or null when it was never set."""
    return JSONResponse(setting(hub, me, setting_id))


@router.post("/api/settings", response_class=Response,
             openapi_extra=request_body(JSON_OBJECT))
async def post_settings(request: Request, me: User = Depends(workspace_owner),
                        hub: HubContext = Depends(get_hub)) -> Response:
    """Merge an object of settings into the stored ones."""
    new = await read_json(request, hub.settings.files.max_upload_bytes)
    if not isinstance(new, dict):
        raise InvalidInput("body must be a JSON object of settings")
    path = _settings_path(hub, me)
    _save_settings(hub, path, {**_load_settings(path), **new})
    return Response(status_code=200)


@router.post("/api/settings/{setting_id}", response_class=Response,
             openapi_extra=request_body(ANY_JSON))
async def post_setting(setting_id: str, request: Request, me: User = Depends(workspace_owner),
                       hub: HubContext = Depends(get_hub)) -> Response:
    value = await read_json(request, hub.settings.files.max_upload_bytes)
    path = _settings_path(hub, me)
    settings = _load_settings(path)
    settings[setting_id] = value
    _save_settings(hub, path, settings)
    return Response(status_code=200)

