"""Workshop templates: workflows an instructor publishes to every participant.

They live once in the templates folder and appear in each user's workflow list as
`workflows/Workshop/<name>.json`, read-only: saving one saves the user's own copy there.
Beside them, hidden from that list: `.index.json` (order, default workflow, each template's
title and description) and `.thumbnails/<name>.<png|jpg|webp>`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfymulti.config import Settings
from comfymulti.errors import InvalidInput, NotFound

FOLDER = "Workshop"
PREFIX = f"workflows/{FOLDER}/"
INDEX = ".index.json"
THUMBNAILS = ".thumbnails"
MAX_THUMBNAIL_BYTES = 2 * 1024 * 1024
# Image kinds a thumbnail may be, by their first bytes (what the file is, not what it says).
_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpg", b"RIFF": "webp"}


@dataclass(frozen=True)
class Template:
    """A published template as participants' template dialog shows it."""

    name: str  # file name, e.g. "Portrait.json"
    title: str
    description: str
    thumbnail: Path | None


def _check_name(name: str) -> str:
    name = name.strip()
    if not name.endswith(".json"):
        name += ".json"
    if "/" in name or "\\" in name or "\x00" in name or name.startswith(".") or len(name) > 200:
        raise InvalidInput(f"invalid template name {name!r}")
    return name


def list_templates(settings: Settings) -> list[Path]:
    """The template files in the organiser's order (new ones last, by name)."""
    folder = settings.templates_dir
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.iterdir() if p.suffix == ".json" and p.is_file()
                   and not p.is_symlink() and not p.name.startswith("."))
    rank = {name: i for i, name in enumerate(_index(settings)["order"])}
    return sorted(found, key=lambda p: rank.get(p.name, len(rank)))


def describe(settings: Settings) -> list[Template]:
    """Every template with its title, description and thumbnail, in the organiser's order."""
    meta = _index(settings)["meta"]
    return [Template(name=p.name, title=meta.get(p.name, {}).get("title") or p.stem,
                     description=meta.get(p.name, {}).get("description", ""),
                     thumbnail=thumbnail(settings, p.name))
            for p in list_templates(settings)]


def thumbnail(settings: Settings, name: str) -> Path | None:
    """The stored thumbnail image of a template, if it has one."""
    stem = _check_name(name).removesuffix(".json")
    folder = settings.templates_dir / THUMBNAILS
    return next((p for kind in _IMAGE_MAGIC.values()
                 if (p := folder / f"{stem}.{kind}").is_file()), None)


def default_workflow(settings: Settings) -> str | None:
    """The template new participants open with (its file name), if the organiser chose one
    that still exists."""
    chosen = _index(settings).get("default")
    return chosen if chosen in {p.name for p in list_templates(settings)} else None


def set_default(settings: Settings, name: str | None) -> str | None:
    """Choose (or with None, clear) the workflow new participants open with."""
    if name is not None:
        name = _check_name(name)
        if not (settings.templates_dir / name).is_file():
            raise NotFound(f"no template {name!r}")
    _update_index(settings, default=name)
    return name


def reorder(settings: Settings, names: list[str]) -> list[str]:
    """Put the named templates first, in this order; the others follow as they were."""
    checked = [_check_name(n) for n in names]
    current = [p.name for p in list_templates(settings)]
    missing = [n for n in checked if n not in current]
    if missing:
        raise NotFound(f"no template {missing[0]!r}")
    order = list(dict.fromkeys(checked + current))
    _update_index(settings, order=order)
    return order


def _set_details(settings: Settings, name: str, title: str, description: str,
                 thumbnail_file: tuple[bytes, str] | None) -> None:
    """Title, description and (bytes, kind) of a new thumbnail for a template just written."""
    if thumbnail_file is not None:
        data, kind = thumbnail_file
        _drop_thumbnail(settings, name)
        _write_atomic(settings.templates_dir / THUMBNAILS,
                      f"{name.removesuffix('.json')}.{kind}", data)
    meta = _index(settings)["meta"]
    meta[name] = {"title": title.strip(), "description": description.strip()}
    _update_index(settings, meta=meta)


def _image_kind(data: bytes) -> str:
    if len(data) > MAX_THUMBNAIL_BYTES:
        raise InvalidInput(f"thumbnail is larger than {MAX_THUMBNAIL_BYTES} bytes")
    for magic, kind in _IMAGE_MAGIC.items():
        if data.startswith(magic) and (kind != "webp" or data[8:12] == b"WEBP"):
            return kind
    raise InvalidInput("thumbnail must be a PNG, JPEG or WebP image")


def _drop_thumbnail(settings: Settings, name: str) -> None:
    while (old := thumbnail(settings, name)) is not None:
        old.unlink()


def _index(settings: Settings) -> dict[str, Any]:
    """The index file, or an empty one if it is missing or unreadable (then order is by
    name and templates have no details: nothing a participant needs is lost)."""
    empty: dict[str, Any] = {"order": [], "default": None, "meta": {}}
    try:
        data = json.loads((settings.templates_dir / INDEX).read_bytes())
    except (OSError, ValueError):
        return empty
    return {**empty, **data} if isinstance(data, dict) else empty


def _update_index(settings: Settings, **changes: Any) -> None:
    index = {**_index(settings), **changes}
    _write_atomic(settings.templates_dir, INDEX, json.dumps(index, indent=1).encode())


def _write_atomic(folder: Path, name: str, content: bytes) -> Path:
    """Readers see the old file or the new one, never half of it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".publish-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    os.replace(tmp, folder / name)
    return folder / name


def template_for(settings: Settings, userdata_name: str) -> Path | None:
    """The template behind a userdata name like 'workflows/Workshop/x.json', if any."""
    if not userdata_name.startswith(PREFIX):
        return None
    try:
        name = _check_name(userdata_name.removeprefix(PREFIX))
    except InvalidInput:
        return None
    path = settings.templates_dir / name
    return path if path.is_file() and not path.is_symlink() else None


def publish(settings: Settings, name: str, content: bytes, *, title: str | None = None,
            description: str = "", thumbnail_bytes: bytes | None = None) -> Path:
    """Write (or replace) a template atomically; it must be a workflow JSON object. With a
    title, also its details and thumbnail, all checked before anything is written."""
    name = _check_name(name)
    try:
        data = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(f"template is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not ("nodes" in data or "prompt" in data):
        raise InvalidInput("template must be a ComfyUI workflow (a JSON object with 'nodes')")
    image = None if thumbnail_bytes is None else (thumbnail_bytes, _image_kind(thumbnail_bytes))
    path = _write_atomic(settings.templates_dir, name, content)
    if title is not None:
        _set_details(settings, name, title, description, image)
    return path


def remove(settings: Settings, name: str) -> None:
    """Withdraw a template with its thumbnail and details (and as default, if it was)."""
    name = _check_name(name)
    path = settings.templates_dir / name
    if not path.is_file():
        raise NotFound(f"no template {name!r}")
    path.unlink()
    _drop_thumbnail(settings, name)
    index = _index(settings)
    index["meta"].pop(name, None)
    _update_index(settings, meta=index["meta"], order=[n for n in index["order"] if n != name],
                  default=None if index["default"] == name else index["default"])
