"""The documentation cannot drift: the admin reference is regenerated and compared, and every
shell command shown in docs/ and README.md is executed here (in a scratch folder, blocks of a
file in order) unless its block is marked as an example the test cannot run.

Marker convention: a ```bash block right after the line `<!-- example: REASON -->` (invisible
once rendered), with REASON one of EXAMPLE_REASONS. A line ending in `# runs until stopped`
(e.g. `comfymulti serve`) is run for a few seconds, must still be running then, and must stop
cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from comfymulti.cli import app
from comfymulti.cli.reference import render
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE_REASONS = {
    "needs real cloud credentials",
    "needs a Debian host with systemd as init, as root",
    "needs the hub running under systemd",
    "needs a GPU machine with ComfyUI",
    "installs software and runs the whole test suite (minutes)",
    "runs for minutes (benchmarks)",
}
_BLOCK = re.compile(r"^(?:<!-- example: (.+?) -->\n)?```(?:bash|sh|shell|console)\n(.*?)^```",
                    re.S | re.M)
_LONG = re.compile(r"^(.*?)\s+#.*runs until stopped.*$", re.M)


def blocks(path: Path) -> list[tuple[str, str]]:
    """Each shell block as (its example reason or "", its text)."""
    return _BLOCK.findall(path.read_text(encoding="utf-8"))


def test_reference_is_generated_from_the_code() -> None:
    committed = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert committed == render(app), "docs/reference.md is stale: run 'comfymulti docs'"
    for command in ("comfymulti users create", "comfymulti deploy", "comfymulti doctor"):
        assert f"### `{command}" in committed
    assert "`COMFYMULTI_FILES__MAX_UPLOAD_BYTES`" in committed


def test_every_example_block_says_why() -> None:
    examples = 0
    for path in DOCS:
        for reason, block in blocks(path):
            if reason:
                assert reason in EXAMPLE_REASONS, (path.name, reason)
                examples += 1
            assert "example:" not in block, (path.name, "the marker goes before the block")
    assert examples >= 5


def _sandbox(tmp: Path) -> dict[str, str]:
    """A scratch folder with `comfymulti` on PATH (this checkout), a venv's activate script
    for the README, and a workshop workflow as flow.json; /srv/comfymulti maps inside it."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "comfymulti"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m comfymulti "$@"\n')
    wrapper.chmod(0o755)
    (tmp / ".venv" / "bin").mkdir(parents=True)
    (tmp / ".venv" / "bin" / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    workflow = next((ROOT / "tests" / "data" / "workflows").glob("*.json"))
    shutil.copy(workflow, tmp / "flow.json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMULTI_")}
    env.update(PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}", HOME=str(tmp),
               PYTHONPATH=str(ROOT / "src"), COMFYMULTI_HUB__PORT=str(free_port()))
    return env


def _script(text: str, tmp: Path) -> str:
    text = text.replace("/srv/comfymulti", f"{tmp}/srv/comfymulti")
    return _LONG.sub(lambda m: f"timeout -s TERM 8 {m.group(1)} || [ $? -eq 124 ]", text)


def test_every_shell_command_in_the_docs_runs(tmp_path: Path) -> None:
    ran = 0
    for path in DOCS:
        runnable = [b for reason, b in blocks(path) if not reason]
        if not runnable:
            continue
        tmp = tmp_path / path.stem
        env = _sandbox(tmp)
        script = _script("\n".join(runnable), tmp)
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{path.name}:\n{script}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr
        ran += sum(1 for b in runnable for line in b.splitlines()
                   if line.strip() and not line.lstrip().startswith("#"))
    assert ran >= 20
