"""The comfymulti command as a person uses it: real subprocesses, real files."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from comfymulti.config import Settings, render_toml


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    return subprocess.run([sys.executable, "-m", "comfymulti", *args], capture_output=True,
                          text=True, cwd=cwd, env=env)


def test_init_writes_commented_config_with_fresh_secret(tmp_path: Path) -> None:
    r = run("init", str(tmp_path / "site"))
    assert r.returncode == 0, r.stderr
    path = tmp_path / "site" / "comfymulti.toml"
    text = path.read_text()
    data = tomllib.loads(text)
    assert data["data_dir"] == "data" and len(data["hub"]["secret_key"]) > 30
    assert "# Leases a job gets before it fails." in text
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (tmp_path / "site" / "data" / "comfymulti.db").exists()
    second = run("init", str(tmp_path / "site2"))
    assert tomllib.loads((tmp_path / "site2/comfymulti.toml").read_text())["hub"][
        "secret_key"] != data["hub"]["secret_key"]
    assert second.returncode == 0
    assert run("init", str(tmp_path / "site")).returncode != 0  # never overwrites


def test_every_setting_is_in_the_written_config() -> None:
    data = tomllib.loads(render_toml())
    for section, field in Settings.model_fields.items():
        if section == "data_dir":
            assert "data_dir" in data
            continue
        assert set(data[section]) == set(field.annotation.model_fields), section


def test_invalid_config_is_one_line_naming_key_and_file_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[queue]\nlease_seconds = "soon"\n')
    r = run("--config", str(bad), "users", "list")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert str(bad) in r.stderr and "queue.lease_seconds" in r.stderr
    bad.write_text("[queue]\npolcy = 'fair'\n")
    r = run("--config", str(bad), "users", "list")
    assert r.returncode == 2 and "queue.polcy" in r.stderr
    bad.write_text("not toml [")
    assert run("--config", str(bad), "users", "list").returncode == 2
    assert run("--config", str(tmp_path / "missing.toml"), "users", "list").returncode == 2


def test_config_from_env_var_and_secrets_from_environment(tmp_path: Path) -> None:
    import os

    run("init", str(tmp_path))
    env = {**os.environ, "COMFYMULTI_CONFIG": str(tmp_path / "comfymulti.toml"),
           "COMFYMULTI_QUEUE__POLICY": "priority"}
    r = run("queue", "policy", env=env)
    assert r.returncode == 0 and r.stdout.strip() == "priority"


def set_public_url(config: Path, url: str) -> None:
    config.write_text(re.sub(r'(?m)^public_url = ".*"$', f'public_url = "{url}"',
                             config.read_text()))


def test_users_lifecycle_and_credentials_sheet(tmp_path: Path) -> None:
    run("init", str(tmp_path))
    set_public_url(tmp_path / "comfymulti.toml", "https://workshop.example.org")
    cfg = ["--config", str(tmp_path / "comfymulti.toml")]
    r = run(*cfg, "users", "create", "--count", "20", "--prefix", "user")
    assert r.returncode == 0, r.stderr
    sheets = sorted((tmp_path / "data/credentials").glob("credentials-*.csv"))
    rows = list(csv.DictReader(sheets[0].read_text().splitlines()))
    assert [row["user"] for row in rows] == [f"user{i:03d}" for i in range(1, 21)]
    assert {row["url"] for row in rows} == {"https://workshop.example.org/"}
    assert len({row["password"] for row in rows}) == 20
    page = sheets[0].with_suffix(".html").read_text()
    assert page.count('class="card"') == 20 and rows[4]["password"] in page
    assert run(*cfg, "users", "create", "--count", "2").returncode == 1  # exist already
    assert run(*cfg, "users", "add", "teacher", "--role", "instructor").returncode == 0
    listed = run(*cfg, "users", "list").stdout
    assert "user020" in listed and "instructor" in listed
    assert run(*cfg, "users", "disable", "user001").returncode == 0
    assert "disabled" in run(*cfg, "users", "list").stdout
    assert "new password" in run(*cfg, "users", "reset-password", "user002").stdout
    (tmp_path / "data/users/user003/output/keep.png").write_bytes(b"x")
    assert run(*cfg, "users", "remove", "user003").returncode == 0
    assert (tmp_path / "data/users/user003/output/keep.png").exists()
    assert run(*cfg, "users", "remove", "user004", "--delete-files").returncode == 0
    assert not (tmp_path / "data/users/user004").exists()
    assert run(*cfg, "users", "remove", "nobody").returncode == 1
    token = run(*cfg, "users", "token", "user005").stdout.strip()
    assert token.startswith("cmu_")
    assert "revoked 1 token" in run(*cfg, "users", "token", "user005", "--revoke").stdout
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(tmp_path / "data/comfymulti.db")) as db:
        revoked = db.execute("SELECT revoked_at FROM api_tokens").fetchall()
    assert [r[0] is not None for r in revoked] == [True]


def test_worker_tokens(tmp_path: Path) -> None:
    run("init", str(tmp_path))
    cfg = ["--config", str(tmp_path / "comfymulti.toml")]
    token = run(*cfg, "workers", "token", "--name", "gpu-day1").stdout.strip()
    assert token.startswith("cmw_")
    assert "gpu-day1" in run(*cfg, "workers", "list").stdout
    assert run(*cfg, "workers", "revoke", "gpu-day1").returncode == 0
    assert "revoked" in run(*cfg, "workers", "list").stdout
    db = (tmp_path / "data/comfymulti.db").read_bytes()
    assert token.encode() not in db, "worker tokens must be stored hashed"


def test_users_create_hashes_before_it_locks_and_leaves_nothing_when_interrupted(
        tmp_path: Path, monkeypatch) -> None:
    """Hashing 80 passwords takes seconds: the hub's writers must not wait for it, and a run
    stopped halfway leaves no accounts and no folders."""
    import sqlite3

    import pytest
    from typer.testing import CliRunner

    from comfymulti import cli, invocation
    from comfymulti.hub.services import auth, users

    config = tmp_path / "comfymulti.toml"
    config.write_text('data_dir = "data"\n')
    assert run("--config", str(config), "users", "list").returncode == 0  # creates the DB
    db_file = tmp_path / "data" / "comfymulti.db"
    monkeypatch.setattr(invocation.state, "settings", None)
    calls = []

    def hash_while_others_write(password: str, *, generated: bool) -> str:
        other = sqlite3.connect(db_file, timeout=0.05, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # fails if users create held the write lock
        other.execute("ROLLBACK")
        other.close()
        calls.append(password)
        if len(calls) == 3 and interrupt:
            raise RuntimeError("stopped halfway")
        return auth.hash_password(password, generated=generated)

    monkeypatch.setattr(users, "hash_password", hash_while_others_write)
    args = ["--config", str(config), "users", "create", "--count", "5", "--force"]
    interrupt = True
    with pytest.raises(RuntimeError, match="halfway"):
        CliRunner().invoke(cli.app, args, catch_exceptions=False)
    assert not (tmp_path / "data" / "users").exists()
    assert "user001" not in run("--config", str(config), "users", "list").stdout
    interrupt = False
    calls.clear()
    result = CliRunner().invoke(cli.app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(calls) == 5
    assert sorted(p.name for p in (tmp_path / "data" / "users").iterdir()) == [
        f"user00{i}" for i in range(1, 6)]


def test_usage_mistakes_are_the_usage_and_one_line_exit_2(tmp_path: Path) -> None:
    """A mistyped command or a bad value is a person's mistake: usage plus one error line,
    exit 2, never a traceback."""
    for args in (["users", "lst"], ["users", "create", "--count", "abc"],
                 ["queue", "policy", "bogus"], ["--no-such-option"]):
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and "Usage:" in r.stderr, (args, r.stderr)
        assert len([line for line in r.stderr.splitlines() if line.startswith("Error")]) == 1
