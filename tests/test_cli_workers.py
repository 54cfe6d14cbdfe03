"""`comfymulti workers list` tells online from offline with a last-seen time, and `workers
forget` removes offline entries only: real subprocesses on a real config and database."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from comfymulti.config import load_settings
from comfymulti.db import make_engine, migrate, session_factory, transaction
from comfymulti.hub.services import workers
from comfymulti.protocol import RegisterRequest
from tests.test_cli import run

WIDE = {**os.environ, "COLUMNS": "200"}  # rich wraps tables to the terminal's width


def _sessions(config: Path) -> sessionmaker[Session]:
    engine = make_engine(load_settings(config).database_url)
    migrate(engine)
    return session_factory(engine)


def _register(config: Path, name: str, *, seen_ago: float, draining: bool) -> None:
    with transaction(_sessions(config)) as s:
        token = workers.authenticate(s, workers.create_token(s, f"token-{name}"))
        assert token is not None
        worker, _ = workers.register(s, token, RegisterRequest(name=name, gpu="H100"))
        worker.last_seen = time.time() - seen_ago
        worker.draining = draining


def test_workers_list_shows_offline_with_last_seen_and_forget_takes_offline_only(
        tmp_path: Path) -> None:
    config = tmp_path / "comfymulti.toml"
    config.write_text('data_dir = "data"\n')
    # Drained and stopped an hour ago (or deleted without SIGTERM): offline, not "draining".
    _register(config, "gpu-gone", seen_ago=3600, draining=True)
    _register(config, "gpu-up", seen_ago=5, draining=False)
    cfg = ["--config", str(config)]
    listing = run(*cfg, "workers", "list", env=WIDE)
    assert listing.returncode == 0, listing.stderr
    rows = {line.split("│")[1].strip(): line for line in listing.stdout.splitlines()
            if "gpu-" in line}
    assert "offline" in rows["gpu-gone"] and "draining" not in rows["gpu-gone"]
    assert "60 min ago" in rows["gpu-gone"]
    assert "online" in rows["gpu-up"] and "s ago" in rows["gpu-up"]
    refused = run(*cfg, "workers", "forget", "gpu-up")
    assert refused.returncode != 0 and refused.stderr.count("\n") == 1
    assert "online" in refused.stderr and "Traceback" not in refused.stderr
    forgot = run(*cfg, "workers", "forget")
    assert forgot.returncode == 0 and "forgot 1 offline worker(s): gpu-gone" in forgot.stdout
    with transaction(_sessions(config)) as s:
        assert [w.name for w in workers.list_workers(s)] == ["gpu-up"]
