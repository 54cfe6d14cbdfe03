"""Workshop templates: workflows an instructor publishes to every participant.

They live once in the templates folder and appear in each user's workflow list as
`workflows/Workshop/<name>.json`, read-only: saving one saves the user's own copy there.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

from comfymulti.config import Settings
from comfymulti.errors import InvalidInput, NotFound

FOLDER = "Workshop"
PREFIX = f"workflows/{FOLDER}/"


def _check_name(name: str) -> str:
    name = name.strip()
    if not name.endswith(".json"):
        name += ".json"
    if "/" in name or "\\" in name or "\x00" in name or name.startswith(".") or len(name) > 200:
        raise InvalidInput(f"invalid template name {name!r}")
    return name


def list_templates(settings: Settings) -> list[Path]:
    folder = settings.templates_dir
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".json" and p.is_file()
                  and not p.is_symlink())


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


def publish(settings: Settings, name: str, content: bytes) -> Path:
    """Write (or replace) a template atomically; it must be a workflow JSON object."""
    name = _check_name(name)
    try:
        data = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(f"template is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not ("nodes" in data or "prompt" in data):
        raise InvalidInput("template must be a ComfyUI workflow (a JSON object with 'nodes')")
    folder = settings.templates_dir
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".publish-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    os.replace(tmp, folder / name)
    return folder / name


def remove(settings: Settings, name: str) -> None:
    path = settings.templates_dir / _check_name(name)
    if not path.is_file():
        raise NotFound(f"no template {name!r}")
    path.unlink()


# ---------------------------------------------------------------- the frontend's template dialog

THUMBNAILS = (".webp", ".png", ".jpg", ".jpeg")
_DEFAULT_FILE = ".default"  # the default workflow's file name; not a .json, so never listed


class Card(NamedTuple):
    """One template as the frontend's template dialog shows it."""

    slug: str  # the name in the dialog's URLs (`?template=`): letters, digits, `_.-` only
    path: Path
    title: str
    description: str
    thumbnail: Path | None


def slug(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)


def card(path: Path) -> Card:
    """Title and description from the workflow's own `extra` (as published), else its name;
    the thumbnail is an image of the same name beside it."""
    try:
        extra = json.loads(path.read_bytes()).get("extra") or {}
    except (OSError, ValueError, AttributeError):
        extra = {}
    extra = extra if isinstance(extra, dict) else {}
    title = extra.get("title") if isinstance(extra.get("title"), str) else path.stem
    description = extra.get("description")
    thumbnail = next((p for ext in THUMBNAILS if (p := path.with_suffix(ext)).is_file()
                      and not p.is_symlink()), None)
    return Card(slug(path), path, title, description if isinstance(description, str) else "",
                thumbnail)


def cards(settings: Settings) -> list[Card]:
    return [card(p) for p in list_templates(settings)]


def by_slug(settings: Settings, name: str) -> Card | None:
    """Only the matching template is read (the dialog asks once per thumbnail)."""
    return next((card(p) for p in list_templates(settings) if slug(p) == name), None)


def default_workflow(settings: Settings) -> str | None:
    """The template file new participants open with, if the organiser chose one that exists."""
    marker = settings.templates_dir / _DEFAULT_FILE
    if not marker.is_file():
        return None
    name = marker.read_text().strip()
    return name if (settings.templates_dir / name).is_file() else None


def default_slug(settings: Settings) -> str | None:
    """The default workflow by its name in the template dialog's URLs."""
    name = default_workflow(settings)
    return slug(settings.templates_dir / name) if name else None


def set_default(settings: Settings, name: str) -> None:
    path = settings.templates_dir / _check_name(name)
    if not path.is_file():
        raise NotFound(f"no template {name!r}")
    (settings.templates_dir / _DEFAULT_FILE).write_text(path.name + "\n")
