"""Each backup set's last outcome, in a small file per set in the data folder.

`backup run` writes it; `backup status`, /health and /metrics read it, so none of them has to
ask the object store (and a dead schedule shows even when the store is unreachable).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FOLDER = "backup-status"


@dataclass
class SetStatus:
    set: str
    last_run: str = ""  # the run id of the last attempt
    last_attempt: float = 0.0  # Unix time
    last_success: float | None = None
    last_success_run: str = ""
    files: int = 0  # of the last successful run
    bytes: int = 0
    error: str = ""  # of the last attempt; "" if it succeeded

    def age(self, now: float) -> float | None:
        """Seconds since the last success; None if there never was one."""
        return None if self.last_success is None else max(0.0, now - self.last_success)

    def stale(self, interval: int | None, now: float) -> bool:
        """A scheduled set whose last success is older than twice its schedule (or missing)."""
        if interval is None:
            return False
        age = self.age(now)
        return age is None or age > 2 * interval


def _path(data_dir: Path, set_name: str) -> Path:
    return data_dir / FOLDER / f"{set_name}.json"


def read(data_dir: Path, set_name: str) -> SetStatus:
    try:
        body = json.loads(_path(data_dir, set_name).read_text(encoding="utf-8"))
        return SetStatus(**body)
    except (OSError, ValueError, TypeError):
        return SetStatus(set_name)


def record(data_dir: Path, set_name: str, run: str, error: str = "", files: int = 0,
           size: int = 0) -> SetStatus:
    """Record one attempt (atomically: readers never see half a file)."""
    status = read(data_dir, set_name)
    now = time.time()
    status.last_run, status.last_attempt, status.error = run, now, error
    if not error:
        status.last_success, status.last_success_run = now, run
        status.files, status.bytes = files, size
    path = _path(data_dir, set_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(status)), encoding="utf-8")
    os.replace(tmp, path)
    return status


@dataclass(frozen=True)
class SetHealth:
    last_success: float | None  # Unix time
    age_seconds: float | None
    stale: bool  # scheduled, and no success for twice the schedule
    error: str  # of the last attempt


def overview(data_dir: Path, intervals: dict[str, int | None], now: float
             ) -> dict[str, SetHealth]:
    """What /health and /metrics show of each set: read from the files, nothing remote."""
    found = {}
    for name, interval in sorted(intervals.items()):
        status = read(data_dir, name)
        found[name] = SetHealth(status.last_success, status.age(now),
                                status.stale(interval, now), status.error)
    return found
