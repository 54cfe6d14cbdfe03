"""The hub as an unprivileged service user, set up by root with the documented commands
(docs/deploy.md): root's own writes into the service user's folders are refused with the
command to run instead, and the generated systemd units pass `systemd-analyze verify`."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.deploy.conftest import require

pytestmark = pytest.mark.slow

# The service user cannot enter /root, where the test venv's interpreter lives: it runs
# Debian's python3.11 (the same version) on the venv's packages, as an installed venv would.
SITE_PACKAGES = Path(sys.prefix) / "lib" / "python3.11" / "site-packages"
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def service_user() -> Iterator[str]:
    name = f"cmt{uuid.uuid4().hex[:8]}"
    subprocess.run([require("useradd"), "--system", "--no-create-home", "--shell",
                    "/usr/sbin/nologin", name], check=True)
    yield name
    subprocess.run([require("userdel"), name], check=True)


@pytest.fixture
def srv(service_user: str) -> Iterator[Path]:
    """Like /srv: a folder anyone may enter (pytest's tmp_path is root's only)."""
    base = Path(tempfile.mkdtemp(prefix="cm-srv-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def as_user(user: str | None, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{SRC}:{SITE_PACKAGES}", **extra}
    prefix = [require("runuser"), "-u", user, "--"] if user else []
    return subprocess.run([*prefix, "/usr/bin/python3.11", "-m", "comfymulti", *args],
                          capture_output=True, text=True, env=env, cwd="/")


def test_root_sets_up_the_hub_for_its_service_user(service_user: str, srv: Path) -> None:
    site = srv / "comfymulti"
    config = site / "comfymulti.toml"
    # docs/deploy.md: install -d -o comfymulti -g comfymulti /srv/comfymulti
    subprocess.run([require("install"), "-d", "-o", service_user, "-g", service_user,
                    str(site)], check=True)
    # As root, without runuser: refused, naming the command to run instead.
    refused = as_user(None, "init", str(site))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"runuser -u {service_user} -- " in refused.stderr and not config.exists()
    # The documented commands.
    init = as_user(service_user, "init", str(site))
    assert init.returncode == 0, init.stderr
    assert "password:" in init.stdout  # the admin's, printed here rather than by the service
    port = free_port()
    config.write_text(config.read_text().replace("port = 8080", f"port = {port}").replace(
        'public_url = ""', 'public_url = "https://hub.example.org"'))  # cards carry it
    refused = as_user(None, "--config", str(config), "users", "create", "--count", "3")
    assert refused.returncode == 2
    assert f"runuser -u {service_user} -- " in refused.stderr
    assert "users create --count 3" in refused.stderr
    # A config the user may not read is one line (with the usage for --config), no traceback.
    root_only = srv / "root-only.toml"
    root_only.write_text('data_dir = "data"\n')
    root_only.chmod(0o600)
    unreadable = as_user(service_user, "--config", str(root_only), "queue", "policy")
    assert unreadable.returncode == 2 and "Traceback" not in unreadable.stderr
    assert "is not readable" in unreadable.stderr
    unreadable = as_user(service_user, "queue", "policy", COMFYMULTI_CONFIG=str(root_only))
    assert unreadable.returncode == 2 and unreadable.stderr.count("\n") == 1
    assert "cannot read it (Permission denied)" in unreadable.stderr
    made = as_user(service_user, "--config", str(config), "users", "create", "--count", "3")
    assert made.returncode == 0, made.stderr
    uid = int(subprocess.run(["id", "-u", service_user], capture_output=True, text=True,
                             check=True).stdout)
    for path in [site, *site.rglob("*")]:
        assert path.stat().st_uid == uid, f"{path} is not the service user's"

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{SRC}:{SITE_PACKAGES}",
           "COMFYMULTI_CONFIG": str(config)}
    # As systemd would run the unit: the hub itself is the process (setpriv execs, so SIGTERM
    # reaches the hub, not a runuser session in between).
    hub = subprocess.Popen([require("setpriv"), f"--reuid={service_user}",
                            f"--regid={service_user}", "--init-groups", "--",
                            "/usr/bin/python3.11", "-m", "comfymulti", "serve"], env=env, cwd="/",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert hub.poll() is None and time.monotonic() < deadline, hub.communicate()
            time.sleep(0.2)
        sheet = next((site / "data" / "credentials").glob("credentials-*.csv"))
        first = next(csv.DictReader(sheet.read_text().splitlines()))
        r = httpx.post(f"{url}/login", data={"username": first["user"],
                                            "password": first["password"]})
        assert r.status_code == 303, r.text
    finally:
        hub.terminate()
        out, err = hub.communicate(timeout=30)
    assert hub.returncode == 0, err
    assert "PermissionError" not in err and "password:" not in out  # nothing for the journal


def test_generated_units_pass_systemd_analyze_verify(service_user: str, srv: Path,
                                                     tmp_path: Path) -> None:
    from tests.test_cli import run

    site = srv / "comfymulti"
    run("init", str(site))
    config = site / "comfymulti.toml"
    config.write_text(config.read_text().replace(
        'service_user = "comfymulti"', f'service_user = "{service_user}"').replace(
        'public_url = ""', 'public_url = "https://hub.example.org"'))
    r = run("--config", str(config), "deploy", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    units = [tmp_path / "comfymulti-hub.service", tmp_path / "comfymulti-worker.service"]
    hub_unit = units[0].read_text()
    assert f"Environment=COMFYMULTI_CONFIG={config}" in hub_unit
    assert f"ReadWritePaths={site / 'data'}" in hub_unit and f"User={service_user}" in hub_unit
    assert '"worker" "--hub" "https://hub.example.org"' in units[1].read_text()
    verify = subprocess.run([require("systemd-analyze"), "verify", *map(str, units)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    # ...and it does fail on a unit whose command does not exist.
    broken = tmp_path / "broken.service"
    broken.write_text(hub_unit.replace("ExecStart=", "ExecStart=/nonexistent/bin/x "))
    assert subprocess.run([require("systemd-analyze"), "verify", str(broken)],
                          capture_output=True).returncode != 0
