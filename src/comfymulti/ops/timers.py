"""Running a command on a schedule: systemd service + timer units, or a crontab line.

The units carry no secret: the service reads an optional environment file (for
COMFYMULTI_BACKUP__SECRET_ACCESS_KEY) that only root can read.
"""

from __future__ import annotations

import re
import shlex

from comfymulti.config import duration_seconds
from comfymulti.errors import InvalidInput
from comfymulti.ops.unitfiles import command_line

_UNIT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _check(name: str, every: str) -> int:
    if not _UNIT_NAME.match(name):
        raise InvalidInput(f"{name!r}: a unit name may hold only letters, digits, _ . and -")
    try:
        return duration_seconds(every)
    except ValueError as exc:
        raise InvalidInput(f"--every {exc}") from None


def systemd_units(name: str, description: str, command: list[str], every: str,
                  env_file: str) -> dict[str, str]:
    """NAME.service (oneshot, low priority) and NAME.timer (every EVERY, first 5 min after
    boot, missed runs caught up by OnUnitActiveSec counting from the last one)."""
    _check(name, every)
    service = f"""[Unit]
Description={description}
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
EnvironmentFile=-{env_file}
ExecStart={command_line(*command)}
Nice=10
IOSchedulingClass=idle
"""
    timer = f"""[Unit]
Description={description} every {every}

[Timer]
OnBootSec=5min
OnUnitActiveSec={every}
RandomizedDelaySec=60
Unit={name}.service

[Install]
WantedBy=timers.target
"""
    return {f"{name}.service": service, f"{name}.timer": timer}


def crontab_line(command: list[str], every: str) -> str:
    """A crontab(5) line; cron counts within the hour, day or week, so the interval must fit."""
    seconds = _check("cron", every)
    minutes = seconds // 60
    if seconds % 60 == 0 and minutes < 60 and 60 % minutes == 0:
        when = f"*/{minutes} * * * *"
    elif minutes % 60 == 0 and minutes < 24 * 60 and (24 * 60) % minutes == 0:
        when = f"7 */{minutes // 60} * * *"
    elif minutes == 24 * 60:
        when = "7 3 * * *"
    elif minutes == 7 * 24 * 60:
        when = "7 3 * * 0"
    else:
        raise InvalidInput(f"--every {every}: cron cannot repeat that; use a divisor of an hour "
                           "or a day, 1d or 1w, or the systemd timer (drop --cron)")
    return f"{when} {shlex.join(command)}"
