"""Import rules as code: arrows point down. The hub sits on top; the queue, the worker agent
and the operations commands never import it (the worker and ops talk to the hub over HTTP),
shared concepts import none of the parts, and production code never imports the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "comfymulti"
SHARED = ("blocking", "catalog", "events", "userfiles", "models", "db", "errors", "protocol", "log",
          "metrics", "config", "invocation", "backup_status", "group_commit", "group_read",
          "loopread")

# package (or shared module) -> what it may never import
FORBIDDEN = {
    "queue": ("comfymulti.hub", "comfymulti.worker", "comfymulti.ops", "comfymulti.cli"),
    "worker": ("comfymulti.hub", "comfymulti.queue.service", "comfymulti.queue.store",
               "comfymulti.ops", "comfymulti.cli"),
    "ops": ("comfymulti.hub", "comfymulti.worker", "comfymulti.cli"),
    **{name: ("comfymulti.hub", "comfymulti.worker", "comfymulti.ops", "comfymulti.cli",
              "comfymulti.queue.service", "comfymulti.queue.store")
       for name in SHARED},
    "hub": ("comfymulti.cli",),
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports would hide where an arrow points
                found.append((node.lineno, "." * node.level + (node.module or "")))
            else:
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def part_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def test_the_rules_cover_every_part() -> None:
    parts = {part_of(p) for p in _sources()}
    assert parts - set(FORBIDDEN) <= {"__init__", "__main__", "cli"}, parts - set(FORBIDDEN)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_arrows_point_down(path: Path) -> None:
    banned = FORBIDDEN.get(part_of(path), ())
    for line, name in imports_of(path):
        assert not name.startswith("."), f"{path}:{line}: relative import {name}"
        assert not name.startswith("tests"), f"{path}:{line}: production code imports {name}"
        for prefix in banned:
            assert name != prefix and not name.startswith(prefix + "."), (
                f"{path.relative_to(SRC)}:{line} imports {name}, but {part_of(path)}/ may "
                f"not import {prefix}")


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    from comfymulti.hub import app\n")
    assert (2, "comfymulti.hub.app") in imports_of(sample)
