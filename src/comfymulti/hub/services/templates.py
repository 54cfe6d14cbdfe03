"""Workshop templates: workflows an instructor publishes to every participant.

They live once in the templates folder and appear in each user's workflow list as
`workflows/Workshop/<name>.json`, read-only: saving one saves the user's own copy there.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

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
