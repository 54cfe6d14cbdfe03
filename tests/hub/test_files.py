from __future__ import annotations

import os
from pathlib import Path

import pytest

from comfymulti.errors import Forbidden, InvalidInput
from comfymulti.hub.files import free_name, resolve


def test_resolve_inside_user_folder(tmp_path: Path) -> None:
    p = resolve(tmp_path, "user002", "output", "video", "a b é.mp4")
    assert p == tmp_path / "users/user002/output/video/a b é.mp4"


@pytest.mark.parametrize(("sub", "name"), [
    ("", "../x"), ("..", "x"), ("a/../..", "x"), ("", "/etc/passwd"), ("/abs", "x"),
    ("", "x\x00y"), ("", "..\\x"), ("C:", "x"),
])
def test_resolve_refuses_escapes(tmp_path: Path, sub: str, name: str) -> None:
    with pytest.raises(InvalidInput):
        resolve(tmp_path, "user002", "input", sub, name)


def test_resolve_refuses_symlinks_that_leave(tmp_path: Path) -> None:
    base = tmp_path / "users/user002/input"
    base.mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", base / "link")
    with pytest.raises(Forbidden):
        resolve(tmp_path, "user002", "input", "link", "x")
    os.symlink(tmp_path / "users/user002/input", base / "self")  # stays inside: fine
    resolve(tmp_path, "user002", "input", "self", "x")


def test_resolve_refuses_other_kinds_and_bad_user_names(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        resolve(tmp_path, "user002", "models", "", "x")
    with pytest.raises(InvalidInput):
        resolve(tmp_path, "../user003", "input", "", "x")


def test_free_name_never_overwrites(tmp_path: Path) -> None:
    assert free_name(tmp_path, "ComfyUI_00001_.png") == "ComfyUI_00001_.png"
    (tmp_path / "ComfyUI_00001_.png").touch()
    (tmp_path / "ComfyUI_00002_.png").touch()
    assert free_name(tmp_path, "ComfyUI_00001_.png") == "ComfyUI_00003_.png"
    (tmp_path / "photo.jpg").touch()
    assert free_name(tmp_path, "photo.jpg") == "photo (1).jpg"
    (tmp_path / "README").touch()
    assert free_name(tmp_path, "README") == "README (1)"
