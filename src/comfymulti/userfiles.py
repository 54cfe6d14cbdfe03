"""Per-user files. `resolve` is the one function that turns a user's request into a path.

Layout: DATA_DIR/users/<user>/{input,output,temp,userdata}/...
"""

from __future__ import annotations

import errno
import mimetypes
import os
import re
import shutil
import uuid
from pathlib import Path, PurePosixPath

from comfymulti.errors import Forbidden, InvalidInput

KINDS = ("input", "output", "temp", "userdata")
# What file systems allow for one name, leaving room for a ' (12)' counter; and a whole path.
MAX_NAME_BYTES = 240
MAX_PATH_BYTES = 1024
USER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def user_root(data_dir: Path, user: str) -> Path:
    if not USER_NAME.match(user):
        raise InvalidInput(f"invalid user name {user!r}")
    return data_dir / "users" / user


def _clean_parts(value: str, what: str) -> list[str]:
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL byte")
    if "\\" in value:
        raise InvalidInput(f"{what} contains a backslash")
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise InvalidInput(f"{what} must be relative")
    parts = [p for p in PurePosixPath(value).parts if p not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(f"{what} may not contain '..'")
    if any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
        raise InvalidInput(f"{what} has a name longer than {MAX_NAME_BYTES} bytes")
    if len(value.encode()) > MAX_PATH_BYTES:
        raise InvalidInput(f"{what} is longer than {MAX_PATH_BYTES} bytes")
    return parts


def resolve(data_dir: Path, user: str, kind: str, subfolder: str, filename: str) -> Path:
    """The path of (user, kind, subfolder, filename), refusing anything outside that folder.

    Refuses NUL bytes, backslashes, absolute paths, '..' and symlinks that lead out.
    `filename` may be empty to name the folder itself.
    """
    if kind not in KINDS:
        raise InvalidInput(f"unknown file type {kind!r}; use one of {', '.join(KINDS)}")
    base = user_root(data_dir, user) / kind
    parts = _clean_parts(subfolder, "subfolder") + _clean_parts(filename, "filename")
    candidate = base.joinpath(*parts)
    real_base = os.path.realpath(base)
    real = os.path.realpath(candidate)
    if real != real_base and not real.startswith(real_base + os.sep):
        raise Forbidden("path leaves the user's folder")
    return candidate


_COUNTER = re.compile(r"^(?P<stem>.*_)(?P<n>\d{5})_(?P<ext>\.[^.]*)?$")


def free_name(directory: Path, filename: str) -> str:
    """A name in `directory` that is not taken: ComfyUI-style counters continue
    (x_00001_.png → x_00002_.png), other names get ' (1)', ' (2)', …"""
    if not (directory / filename).exists():
        return filename
    m = _COUNTER.match(filename)
    if m:
        n = int(m["n"])
        while True:
            n += 1
            name = f"{m['stem']}{n:05d}_{m['ext'] or ''}"
            if not (directory / name).exists():
                return name
    stem, dot, ext = filename.rpartition(".")
    if not dot or not stem:
        stem, ext = filename, ""
    i = 1
    while True:
        name = f"{stem} ({i}).{ext}" if ext else f"{stem} ({i})"
        if not (directory / name).exists():
            return name
        i += 1


def staging_path(data_dir: Path, purpose: str) -> Path:
    """A fresh path in DATA_DIR/tmp to write a file before `place` files it: readers never
    see half a file, and a failed write leaves nothing in the user's folder."""
    tmp_dir = data_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return tmp_dir / f"{purpose}-{uuid.uuid4().hex}"


# File systems without hard links; `place` falls back to check-then-rename there.
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


def place(source: Path, target: Path, overwrite: bool) -> None:
    """Move `source` to `target` in one step (rename, same file system).

    Without `overwrite` an existing target is never replaced, not even by a writer racing
    this one: the file is hard-linked to the new name, which fails if the name is taken,
    and the old name is removed after. Raises FileExistsError then.
    """
    if overwrite:
        os.replace(source, target)
        return
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "file exists", str(target)) from None
        os.replace(source, target)
        return
    os.unlink(source)


def place_under_free_name(source: Path, folder: Path, filename: str) -> str:
    """Move `source` into `folder` under `filename` or the next free variant of it (see
    `free_name`); writers racing for one name (threads, two workers) each get their own."""
    while True:
        name = free_name(folder, filename)
        try:
            place(source, folder / name, overwrite=False)
        except FileExistsError:
            continue  # taken between the look and the move: look again
        return name


# Types a browser may run or render as a document in our origin (stored XSS). Files of
# these types are only ever sent as downloads.
ACTIVE_TYPES = frozenset({
    "text/html", "application/xhtml+xml", "text/javascript", "application/javascript",
    "application/x-javascript", "application/ecmascript", "text/css", "image/svg+xml",
    "application/xml", "text/xml", "message/rfc822",
})
_MEDIA_TYPES = {  # the same answer on every machine, whatever /etc/mime.types says
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
    ".gif": "image/gif", ".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime",
    ".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg",
    ".opus": "audio/ogg", ".json": "application/json", ".glb": "model/gltf-binary",
}


def media_type(name: str) -> str:
    """The Content-Type for a file name; unknown types are plain bytes."""
    suffix = PurePosixPath(name).suffix.lower()
    return _MEDIA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def is_active(content_type: str) -> bool:
    """True if a browser could execute or render this type inline (any XML dialect too)."""
    base = content_type.split(";", 1)[0].strip().lower()
    return base in ACTIVE_TYPES or base.endswith(("+xml", "/xml"))


def ensure_user_dirs(data_dir: Path, user: str) -> None:
    for kind in KINDS:
        (user_root(data_dir, user) / kind).mkdir(parents=True, exist_ok=True)


def remove_user_dirs(data_dir: Path, user: str) -> None:
    shutil.rmtree(user_root(data_dir, user), ignore_errors=True)
