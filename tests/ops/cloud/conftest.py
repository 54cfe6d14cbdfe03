"""A workshop site for the cloud tests: the Verda test server, a hub database, backups on the
real S3 server (SeaweedFS), a folder standing in for the mounted SFS, and workers that register
with the hub when their instance boots (as `comfymulti worker` would)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from comfymulti.cli import main
from comfymulti.config import Settings, load_settings
from comfymulti.db import make_engine, migrate, session_factory, transaction
from comfymulti.invocation import state
from comfymulti.models import Job, User, Worker, WorkerToken
from comfymulti.ops.cloud.plan import Cloud, carry_out
from comfymulti.ops.cloud.verda import Verda
from tests.fakes.verda import CLIENT_ID, CLIENT_SECRET, FakeVerda, VerdaServer

WORKER_TOKEN = "cmw_test-worker-token"


def cloud_config(base_url: str) -> dict[str, Any]:
    return {"base_url": base_url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "poll_seconds": 0.02, "api_timeout": 2.0, "ready_minutes": 0.5,
            "drain_minutes": 0.5, "sfs_size_gb": 100, "scratch_size_gb": 50}


def register(factory: sessionmaker[Session], name: str) -> None:
    """What a worker's registration leaves in the hub database."""
    now = time.time()
    with transaction(factory) as s:
        token = s.scalar(select(WorkerToken)) or WorkerToken(
            name="cloud", token_hash="0" * 64, created_at=now)
        s.add(token)
        s.flush()
        worker = s.scalar(select(Worker).where(Worker.name == name)) or Worker(
            id=f"w-{name}", token_id=token.id, name=name, registered_at=now)
        worker.last_seen, worker.draining = now, False
        s.add(worker)


def add_job(factory: sessionmaker[Session], worker: str, state: str, user: str = "user001"
            ) -> str:
    now = time.time()
    with transaction(factory) as s:
        owner = s.scalar(select(User).where(User.name == user)) or User(
            name=user, role="participant", password_hash="x", created_at=now)
        s.add(owner)
        s.flush()
        job_id = f"job-{now}"
        s.add(Job(id=job_id, user_id=owner.id, state=state, prompt="{}", created_at=now,
                  worker_id=f"w-{worker}", started_at=now, leased_at=now))
    return job_id


@dataclass
class Site:
    settings: Settings
    server: VerdaServer
    factory: sessionmaker[Session]
    sfs: Path
    said: list[str] = field(default_factory=list)

    @property
    def fake(self) -> FakeVerda:
        return self.server.fake

    def cloud(self) -> Cloud:
        return Cloud(self.settings, Verda(self.settings.cloud), self.factory, self.said.append)

    def do(self, build: Callable[..., Any], *args: Any) -> None:
        """Build a plan against the current state and carry it out (as --yes does)."""
        carry_out(build(self.cloud(), *args), False, True, self.said.append)

    def env(self) -> dict[str, str]:
        """The same site for a `comfymulti` subprocess, through the environment."""
        cfg = self.settings.cloud
        return {**os.environ, "COMFYMULTI_DATA_DIR": str(self.settings.data_dir),
                "COMFYMULTI_CLOUD__BASE_URL": cfg.base_url,
                "COMFYMULTI_CLOUD__CLIENT_ID": cfg.client_id,
                "COMFYMULTI_CLOUD__CLIENT_SECRET": cfg.client_secret.get_secret_value(),
                "COMFYMULTI_CLOUD__POLL_SECONDS": "0.02",
                "COMFYMULTI_CLOUD__API_TIMEOUT": "2",
                "COMFYMULTI_CLOUD__SFS_MOUNT": cfg.sfs_mount,
                "COMFYMULTI_WORKER__TOKEN": WORKER_TOKEN,
                **{f"COMFYMULTI_BACKUP__{key.upper()}": str(value) for key, value in
                   self.settings.backup.model_dump(mode="json", exclude={"sets"}).items()},
                "COMFYMULTI_BACKUP__SECRET_ACCESS_KEY":
                    self.settings.backup.secret_access_key.get_secret_value(),
                "COMFYMULTI_BACKUP__SETS": json.dumps(
                    self.settings.backup.model_dump(mode="json")["sets"])}


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
            ) -> Callable[..., Ran]:
    """`comfymulti cloud ARGS` in this process, through the CLI's own entry point (one error
    exit), on the given settings."""

    def run(settings: Settings, *args: str) -> Ran:
        monkeypatch.setattr(state, "settings", settings)
        monkeypatch.setattr(sys, "argv", ["comfymulti", "cloud", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


@pytest.fixture
def verda_server() -> Iterator[VerdaServer]:
    server = VerdaServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def site(tmp_path: Path, verda_server: VerdaServer, backup_config: dict[str, Any]) -> Site:
    sfs, node = tmp_path / "sfs", tmp_path / "node"
    (node / "etc/ssh").mkdir(parents=True)
    (node / "etc/ssh/ssh_host_ed25519_key").write_text("host key\n")
    sets = {"user-files": {"paths": ["comfymulti.db"]},
            "node-state": {"root": str(node), "paths": ["etc/ssh"]},
            "models": {"root": str(sfs / "models")}}
    settings = load_settings(None, data_dir=str(tmp_path / "data"),
                             cloud={**cloud_config(verda_server.base_url),
                                    "sfs_mount": str(sfs)},
                             backup={**backup_config, "sets": sets},
                             worker={"token": WORKER_TOKEN})
    engine = make_engine(settings.database_url)
    migrate(engine)
    factory = session_factory(engine)
    verda_server.fake.on_running = lambda inst: register(factory, inst["hostname"])
    return Site(settings, verda_server, factory, sfs)
