"""Per-user files. `resolve` is the one function that turns a user's request into a path.

Layout: DATA_DIR/users/<user>/{input,output,temp,userdata}/...
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path, PurePosixPath

from comfymulti.errors import Forbidden, InvalidInput

KINDS = ("input", "output", "temp", "userdata")
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


def ensure_user_dirs(data_dir: Path, user: str) -> None:
    for kind in KINDS:
        (user_root(data_dir, user) / kind).mkdir(parents=True, exist_ok=True)


def remove_user_dirs(data_dir: Path, user: str) -> None:
    shutil.rmtree(user_root(data_dir, user), ignore_errors=True)
