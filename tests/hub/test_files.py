from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from comfymulti.errors import Forbidden, InvalidInput
from comfymulti.userfiles import free_name, is_active, media_type, place, resolve, staging_path


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


def test_place_moves_and_only_overwrites_when_asked(tmp_path: Path) -> None:
    src, target = tmp_path / "src", tmp_path / "target"
    src.write_bytes(b"new")
    place(src, target, overwrite=False)
    assert target.read_bytes() == b"new" and not src.exists()
    src.write_bytes(b"newer")
    with pytest.raises(FileExistsError):
        place(src, target, overwrite=False)
    assert target.read_bytes() == b"new" and src.read_bytes() == b"newer"
    place(src, target, overwrite=True)
    assert target.read_bytes() == b"newer" and not src.exists()


def test_place_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*_args: object, **_kw: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    src, target = tmp_path / "src", tmp_path / "target"
    src.write_bytes(b"a")
    place(src, target, overwrite=False)
    assert target.read_bytes() == b"a" and not src.exists()
    src.write_bytes(b"b")
    with pytest.raises(FileExistsError):
        place(src, target, overwrite=False)
    assert target.read_bytes() == b"a"


def test_staging_paths_are_fresh_and_outside_user_folders(tmp_path: Path) -> None:
    a, b = staging_path(tmp_path, "upload"), staging_path(tmp_path, "upload")
    assert a != b and a.parent == b.parent == tmp_path / "tmp" and a.parent.is_dir()


@pytest.mark.parametrize(("name", "expected", "active"), [
    ("a.png", "image/png", False), ("A.WEBP", "image/webp", False),
    ("v.mp4", "video/mp4", False), ("s.wav", "audio/wav", False),
    ("w.json", "application/json", False), ("x.latent", "application/octet-stream", False),
    ("p.html", "text/html", True), ("j.js", "text/javascript", True),
    ("c.css", "text/css", True), ("i.svg", "image/svg+xml", True),
    ("d.xml", "application/xml", True), ("x.xhtml", "application/xhtml+xml", True),
])
def test_media_types_and_active_types(name: str, expected: str, active: bool) -> None:
    assert media_type(name) == expected
    assert is_active(media_type(name)) is active
    assert is_active("TEXT/HTML; charset=utf-8") and is_active("application/rss+xml")


def test_writers_racing_for_one_output_name_each_get_their_own(tmp_path) -> None:
    """Outputs are filed from several threads at once (and by several workers): two files
    called img_00007_.png must never land on one name."""
    from concurrent.futures import ThreadPoolExecutor

    from comfymulti.userfiles import place_under_free_name

    folder = tmp_path / "out"
    folder.mkdir()
    sources = []
    for i in range(16):
        src = tmp_path / f"tmp-{i}"
        src.write_bytes(f"image {i}".encode())
        sources.append(src)
    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(lambda src: place_under_free_name(src, folder,
                                                                 "img_00007_.png"), sources))
    assert len(set(names)) == 16
    assert sorted(p.read_bytes() for p in folder.iterdir()) == sorted(
        f"image {i}".encode() for i in range(16))
