"""`comfymulti doctor` on a fresh install and on broken ones: each problem is named with the
command that fixes it, and the exit code says whether anything failed."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from time import time
from typing import Any

import pytest

from comfymulti.config import load_settings
from comfymulti.hub.app import create_app
from tests.conftest import LiveServer, free_port
from tests.deploy.conftest import tls_server
from tests.test_cli import run


def doctor(config: Path, **env: str) -> tuple[int, dict[str, dict[str, Any]]]:
    r = run("--config", str(config), "doctor", "--json", env={**os.environ, **env})
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, {c["name"]: c for c in json.loads(r.stdout)}


@pytest.fixture
def install(tmp_path: Path) -> Path:
    assert run("init", str(tmp_path / "site")).returncode == 0
    config = tmp_path / "site" / "comfymulti.toml"
    config.write_text(config.read_text().replace("port = 8080", f"port = {free_port()}"))
    return config


@pytest.fixture
def running(install: Path) -> Iterator[Path]:
    cfg = load_settings(install)
    server = LiveServer(create_app(cfg), port=cfg.hub.port).start()
    yield install
    server.stop()


def test_fresh_install_with_the_hub_running(running: Path) -> None:
    code, checks = doctor(running)
    assert {n: c["status"] for n, c in checks.items()} == {
        "config": "ok", "ownership": "ok", "public URL": "warn", "database": "ok",
        "disk": "ok", "workers": "warn", "nginx/TLS": "skip", "clock": "skip"}
    assert code == 0
    assert "hub.public_url" in checks["public URL"]["found"]
    assert "comfymulti worker" in checks["workers"]["fix"]
    text = run("--config", str(running), "doctor")
    assert text.returncode == 0 and "fix: " in text.stdout


def test_broken_installs_are_named_with_their_fix(install: Path, tmp_path: Path) -> None:
    data = install.parent / "data"
    install.chmod(0o644)
    (data / "users").mkdir(exist_ok=True)
    stray = data / "users" / "left-by-root.txt"
    stray.write_text("x")
    os.chown(stray, 65534, 65534)  # nobody
    db = data / "comfymulti.db"
    db.rename(tmp_path / "moved.db")
    code, checks = doctor(install)
    assert code == 1
    assert checks["config"]["status"] == "FAIL"
    assert checks["config"]["fix"] == f"chmod 600 {install}"
    assert checks["ownership"]["status"] == "FAIL" and "left-by-root.txt" in checks[
        "ownership"]["found"] and checks["ownership"]["fix"].startswith("chown -R root: ")
    assert checks["public URL"]["status"] == "FAIL"  # nothing serves it
    assert "comfymulti serve" in checks["public URL"]["fix"]
    assert checks["database"]["status"] == "FAIL" and "no database" in checks["database"]["found"]
    assert not db.exists()  # the doctor only looks
    (tmp_path / "moved.db").write_bytes(b"garbage" * 100)
    (tmp_path / "moved.db").rename(db)
    _, checks = doctor(install)
    assert checks["database"]["status"] == "FAIL" and "cannot read" in checks["database"]["found"]


def test_untrusted_certificate_in_front(install: Path, tmp_path: Path) -> None:
    with tls_server(tmp_path) as (url, cert):
        install.write_text(install.read_text().replace('public_url = ""',
                                                       f'public_url = "{url}"'))
        code, checks = doctor(install)
        assert code == 1 and checks["nginx/TLS"]["status"] == "FAIL"
        assert "not trusted" in checks["nginx/TLS"]["found"]
        assert checks["nginx/TLS"]["fix"].startswith("certbot certonly --webroot")
        _, checks = doctor(install, SSL_CERT_FILE=str(cert))  # a private CA, trusted
    assert checks["nginx/TLS"]["status"] == "warn"  # valid for 2 days: renew soon
    assert "certbot renew" in checks["nginx/TLS"]["fix"]


class _SkewedDate(BaseHTTPRequestHandler):
    skew = 0.0

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.end_headers()

    def date_time_string(self, timestamp: float | None = None) -> str:
        return formatdate(time() + self.skew, usegmt=True)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("skew", "status"), [(0.0, "ok"), (600.0, "FAIL")])
def test_clock_against_the_storage_date(install: Path, skew: float, status: str) -> None:
    handler = type("Handler", (_SkewedDate,), {"skew": skew})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        _, checks = doctor(install, COMFYMULTI_BACKUP__ENDPOINT_URL=url)
    finally:
        server.shutdown()
        server.server_close()
    assert checks["clock"]["status"] == status, checks["clock"]
    if status == "FAIL":
        assert "behind" in checks["clock"]["found"] and "set-ntp" in checks["clock"]["fix"]
