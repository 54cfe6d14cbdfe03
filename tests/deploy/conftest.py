"""Real nginx (Debian's package) and a self-signed certificate for the deployment tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port


def require(tool: str) -> str:
    """The path of a system tool the tests need; scripts/test installs it when run as root."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    assert path, f"{tool} is missing: run scripts/test as root (it installs it) or apt-get it"
    return path


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and ::1 (openssl), and its key."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,IP:::1"],
                   check=True, capture_output=True)
    return cert, key


def wrapper_config(prefix: Path, site: Path) -> Path:
    """A minimal nginx.conf around the generated site, standing in for Debian's, with every
    path inside `prefix` (no daemon, so the test owns the process)."""
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    temp = "\n".join(f"    {kind}_temp_path {prefix}/tmp/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(f"""daemon off;
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/logs/access.log;
{temp}
    include {site};
}}
""")
    return conf


def nginx_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require("nginx"), "-t", "-p", str(conf.parent), "-c", str(conf)],
                          capture_output=True, text=True)


@pytest.fixture
def run_nginx() -> Iterator[callable]:  # type: ignore[valid-type]
    started: list[subprocess.Popen[bytes]] = []

    def run(conf: Path, port: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([require("nginx"), "-p", str(conf.parent), "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(proc)
        wait_for_port(port, proc)
        return proc

    yield run
    for proc in started:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def wait_for_port(port: int, proc: subprocess.Popen[Any] | None = None,
                  seconds: float = 10) -> None:
    """Until something accepts connections on 127.0.0.1:port (and `proc` is still alive)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            assert proc is None or proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.05)


@contextlib.contextmanager
def tls_server(folder: Path) -> Iterator[tuple[str, Path]]:
    """A real TLS server with a self-signed certificate (`openssl s_server -www`): its URL
    and the certificate (the CA to trust it)."""
    cert, key = self_signed(folder)
    port = free_port()
    server = subprocess.Popen([require("openssl"), "s_server", "-quiet", "-accept", str(port),
                               "-cert", str(cert), "-key", str(key), "-www"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, server)
        yield f"https://127.0.0.1:{port}", cert
    finally:
        server.terminate()
        server.wait(10)
