"""`comfymulti doctor`: each check looks at one thing a running workshop needs and says what it
found and, when something is wrong, the command that fixes it.

Checks only read (the database is opened, never created or migrated), so running the doctor
on a broken install changes nothing. They talk to the hub over HTTP like any client.
"""

from __future__ import annotations

import email.utils
import os
import pwd
import shutil
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from comfymulti.config import Settings
from comfymulti.db import current_revision, database_file, head_revision, make_engine
from comfymulti.queue import fleet

# Below either, the disk check fails: outputs, uploads and the database stop being written.
MIN_FREE_BYTES = 2 * 1024**3
MIN_FREE_FRACTION = 0.05
CERT_WARN_DAYS = 14
MAX_CLOCK_SKEW = 30.0
TIMEOUT = 5.0


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"  # worth knowing, not broken (e.g. no worker online outside workshop hours)
    FAIL = "FAIL"
    SKIP = "skip"  # does not apply to this install


@dataclass
class Check:
    name: str
    status: Status
    found: str
    fix: str = ""


@dataclass
class Install:
    """What the checks look at: the settings and the config file they came from."""

    settings: Settings
    config_file: Path | None


def config(inst: Install) -> Check:
    path = inst.config_file
    if path is None:
        return Check("config", Status.FAIL, "no config file; the embedded defaults are in use",
                     "comfymulti init DIR, then --config DIR/comfymulti.toml")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check("config", Status.FAIL, f"{path} is readable by others (mode {mode:o}); "
                     "it holds the session secret", f"chmod 600 {path}")
    if not inst.settings.hub.secret_key.get_secret_value() and not (
            inst.settings.data_dir / "secret_key").exists():
        return Check("config", Status.WARN, f"{path}: no hub.secret_key yet; the hub makes one "
                     "on first start")
    return Check("config", Status.OK, f"{path} (mode {mode:o})")


def ownership(inst: Install) -> Check:
    data = inst.settings.data_dir
    if not data.exists():
        return Check("ownership", Status.FAIL, f"no data folder {data}",
                     f"comfymulti init {data.parent}")
    user = inst.settings.deploy.service_user
    owner = _user(data.stat().st_uid)
    try:
        service_uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        service_uid = None
    want = owner if service_uid is None else user
    strays = [p for p in _walk(data) if _user(p.lstat().st_uid) != want]
    if inst.config_file is not None and _user(inst.config_file.stat().st_uid) != want:
        strays.insert(0, inst.config_file)
    if strays:
        where = f"{data}" if inst.config_file is None else f"{inst.config_file.parent}"
        return Check("ownership", Status.FAIL, f"{len(strays)} file(s) not owned by {want}, "
                     f"e.g. {strays[0]} ({_user(strays[0].lstat().st_uid)}); the hub running "
                     f"as {want} cannot use them", f"chown -R {want}: {where}")
    note = "" if service_uid is not None else f" (no user {user} here: run by hand)"
    return Check("ownership", Status.OK, f"{data} and its files belong to {want}{note}")


def public_url(inst: Install) -> Check:
    cfg = inst.settings
    url = cfg.public_url
    try:
        r = httpx.get(f"{url}/health", timeout=TIMEOUT, verify=_tls_context())
    except httpx.HTTPError as exc:
        return Check("public URL", Status.FAIL, f"{url}/health does not answer ({_reason(exc)})",
                     "systemctl start comfymulti-hub (or comfymulti serve); check "
                     "hub.public_url and the firewall")
    if r.status_code != 200:
        return Check("public URL", Status.FAIL, f"{url}/health answers {r.status_code}",
                     "journalctl -u comfymulti-hub -n 50")
    if not cfg.hub.public_url:
        return Check("public URL", Status.WARN, f"{url} answers, but hub.public_url is not set: "
                     "participants get this local address", 'set hub.public_url = '
                     '"https://HOST" in the config, then comfymulti deploy')
    if url.startswith("https:") and not cfg.hub.trusted_proxies:
        return Check("public URL", Status.WARN, f"{url} answers, but hub.trusted_proxies is "
                     "empty: behind nginx every participant looks like one address",
                     'set hub.trusted_proxies = ["127.0.0.1"]')
    return Check("public URL", Status.OK, f"{url}/health answers 200")


def database(inst: Install) -> Check:
    url = inst.settings.database_url
    path = database_file(url)
    if path is not None and not path.exists():
        return Check("database", Status.FAIL, f"no database at {path}",
                     "comfymulti init DIR (or restore it: comfymulti restore user-files --to "
                     f"{inst.settings.data_dir})")
    if path is not None and not os.access(path, os.R_OK | os.W_OK):
        return Check("database", Status.FAIL, f"{path} is not writable by {_user(os.geteuid())}",
                     f"chown {inst.settings.deploy.service_user}: {path}")
    engine = make_engine(url)
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        return Check("database", Status.FAIL, f"cannot read {path or 'the database'}: "
                     f"{_reason(exc)}", "comfymulti restore user-files --to DIR (from backup)")
    finally:
        engine.dispose()
    head = head_revision()
    if current != head:
        return Check("database", Status.WARN, f"schema {current}, this version wants {head}",
                     "systemctl restart comfymulti-hub (the hub migrates on start)")
    return Check("database", Status.OK, f"{path or url.split('@')[-1]}: schema {current}")


def disk(inst: Install) -> Check:
    folder = inst.settings.data_dir
    while not folder.exists():
        folder = folder.parent
    usage = shutil.disk_usage(folder)
    found = f"{usage.free / 1024**3:.1f} GiB free of {usage.total / 1024**3:.1f} GiB at {folder}"
    if usage.free < MIN_FREE_BYTES or usage.free < MIN_FREE_FRACTION * usage.total:
        return Check("disk", Status.FAIL, found, f"free space: du -sh {folder}/users/*/output "
                     "| sort -h | tail (back up first: comfymulti backup run user-files)")
    return Check("disk", Status.OK, found)


def workers(inst: Install) -> Check:
    path = database_file(inst.settings.database_url)
    if path is not None and not path.exists():
        return Check("workers", Status.SKIP, "no database")
    engine = make_engine(inst.settings.database_url)
    try:
        with Session(engine) as s:
            online = [w.name for w in fleet.online_workers(s, inst.settings.queue.online_window)]
    except SQLAlchemyError as exc:
        return Check("workers", Status.SKIP, f"database unreadable ({_reason(exc)})")
    finally:
        engine.dispose()
    if not online:
        return Check("workers", Status.WARN, "no GPU worker online (fine outside workshop "
                     "hours)", "start them: comfymulti cloud day-start --gpus 2, or comfymulti "
                     "worker on a GPU machine")
    return Check("workers", Status.OK, f"{len(online)} online: {', '.join(online)}")


def tls(inst: Install) -> Check:
    url = urlsplit(inst.settings.public_url)
    if url.scheme != "https" or not url.hostname:
        return Check("nginx/TLS", Status.SKIP, "hub.public_url is not https: no TLS in front")
    host, port = url.hostname, url.port or 443
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as raw, \
                _tls_context().wrap_socket(raw, server_hostname=host) as conn:
            cert = conn.getpeercert() or {}
    except ssl.SSLCertVerificationError as exc:
        return Check("nginx/TLS", Status.FAIL, f"{host}:{port}: certificate not trusted "
                     f"({exc.verify_message})", f"certbot certonly --webroot -w "
                     f"{inst.settings.deploy.acme_webroot} -d {host} && systemctl reload nginx")
    except OSError as exc:
        return Check("nginx/TLS", Status.FAIL, f"{host}:{port}: no TLS answer ({_reason(exc)})",
                     "comfymulti deploy, install the site, then nginx -t && "
                     "systemctl reload nginx")
    days = (ssl.cert_time_to_seconds(str(cert["notAfter"])) - time.time()) / 86400
    found = f"{host}:{port}: certificate valid for {days:.0f} more days"
    if nginx_error := _nginx_config_error():
        return Check("nginx/TLS", Status.FAIL, f"{found}, but nginx -t fails: {nginx_error}",
                     "comfymulti deploy, then nginx -t && systemctl reload nginx")
    if days < CERT_WARN_DAYS:
        return Check("nginx/TLS", Status.WARN, found, "certbot renew && systemctl reload nginx")
    return Check("nginx/TLS", Status.OK, found)


def clock(inst: Install) -> Check:
    """The local clock against NTP's word (timedatectl) or the backup storage's Date header;
    a skewed clock breaks TLS, S3 signatures and lease expiry."""
    if shutil.which("timedatectl"):
        done = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                              capture_output=True, text=True, timeout=TIMEOUT)
        if done.returncode == 0 and done.stdout.strip() in ("yes", "no"):
            if done.stdout.strip() == "yes":
                return Check("clock", Status.OK, "synchronised by NTP")
            return Check("clock", Status.FAIL, "not synchronised by NTP",
                         "timedatectl set-ntp true")
    endpoint = inst.settings.backup.endpoint_url
    if not endpoint:
        return Check("clock", Status.SKIP, "no timedatectl here and no backup endpoint to "
                     "compare with")
    try:
        before = time.time()
        r = httpx.head(endpoint, timeout=TIMEOUT)
        local = (before + time.time()) / 2
        remote = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        return Check("clock", Status.SKIP, f"{endpoint} gave no usable Date ({_reason(exc)})")
    skew = local - remote
    found = f"{abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} {endpoint}"
    if abs(skew) > MAX_CLOCK_SKEW:
        return Check("clock", Status.FAIL, found, "timedatectl set-ntp true (or install "
                     "systemd-timesyncd / chrony)")
    return Check("clock", Status.OK, found)


CHECKS: list[Callable[[Install], Check]] = [config, ownership, public_url, database, disk,
                                            workers, tls, clock]


def run_all(inst: Install) -> list[Check]:
    """Every check, in order; a check that breaks reports that instead of stopping the rest."""
    results = []
    for check in CHECKS:
        try:
            results.append(check(inst))
        except OSError as exc:
            results.append(Check(check.__name__, Status.FAIL, _reason(exc)))
    return results


def _tls_context() -> ssl.SSLContext:
    """System CAs, plus SSL_CERT_FILE when set (a private CA)."""
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE"))


def _nginx_config_error() -> str:
    """nginx -t's first complaint, when nginx is installed here and we may run it."""
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None or os.geteuid() != 0:
        return ""
    done = subprocess.run([binary, "-t"], capture_output=True, text=True, timeout=TIMEOUT)
    if done.returncode == 0:
        return ""
    return next((line for line in done.stderr.splitlines() if "emerg" in line),
                done.stderr.strip())


def _walk(folder: Path, limit: int = 20000) -> list[Path]:
    found = [folder]
    for root, dirs, files in os.walk(folder):
        found += [Path(root) / n for n in dirs + files]
        if len(found) > limit:
            break
    return found


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

