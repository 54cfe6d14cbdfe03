"""backup install-timer: systemd units that systemd itself accepts, or a crontab line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from comfymulti.errors import InvalidInput
from comfymulti.ops.timers import crontab_line
from tests.ops.test_backup import cli, write_config


def test_install_timer_writes_units_systemd_verifies(
        tmp_path: Path, backup_config: dict[str, Any]) -> None:
    config = write_config(tmp_path, backup_config, tmp_path / "src")
    units = tmp_path / "units"
    r = cli(config, "backup", "install-timer", "files", "--every", "1h", "--dir", str(units))
    assert r.returncode == 0, r
    service = units / "comfymulti-backup-files.service"
    timer = units / "comfymulti-backup-files.timer"
    text = service.read_text()
    assert f'"--config" "{config}" "backup" "run" "files"' in text
    assert backup_config["secret_access_key"] not in text + timer.read_text()
    assert "OnUnitActiveSec=1h" in timer.read_text()
    check = subprocess.run(["systemd-analyze", "verify", "--man=no", str(service), str(timer)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and not check.stderr.strip(), check

    r = cli(config, "backup", "install-timer", "files", "--every", "15m", "--cron")
    assert r.returncode == 0, r
    assert r.stdout == f"*/15 * * * * {sys.executable} -m comfymulti --config {config} " \
                       "backup run files\n"
    r = cli(config, "backup", "install-timer", "files", "--every", "soon")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--every 'soon'" in r.stderr, r


@pytest.mark.parametrize(("every", "when"), [
    ("1m", "*/1 * * * *"), ("30m", "*/30 * * * *"), ("1h", "7 */1 * * *"),
    ("6h", "7 */6 * * *"), ("1d", "7 3 * * *"), ("1w", "7 3 * * 0")])
def test_crontab_lines_repeat_at_the_interval(every: str, when: str) -> None:
    assert crontab_line(["x"], every) == f"{when} x"


@pytest.mark.parametrize("every", ["90m", "5h", "2d", "0h", ""])
def test_intervals_cron_cannot_express_are_refused(every: str) -> None:
    with pytest.raises(InvalidInput):
        crontab_line(["x"], every)
