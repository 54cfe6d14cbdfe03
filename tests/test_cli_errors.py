"""Every mistake a person can make on the command line is one line saying what to do, never a
traceback: for every command the typer app has (whatever modules add), and for config files,
the environment, busy ports and a command run from the wrong folder."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from comfymulti import __version__, cli, invocation
from tests.test_cli import run


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the app, groups included (typer bundles its own click classes)."""
    found = [path]
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            found += _commands(sub, (*path, name))
    return found


def _run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              args: list[str]) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["comfymulti", *args])
    monkeypatch.setattr(invocation, "state", invocation.Invocation())
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


def test_every_command_with_a_wrong_argument_is_usage_and_one_line_exit_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    paths = _commands(typer.main.get_command(cli.app))
    assert ("users", "create") in paths and ("serve",) in paths and len(paths) > 20
    for path in paths:
        code, stderr = _run_main(monkeypatch, capsys, [*path, "--no-such-option"])
        assert code == 2, (path, stderr)
        assert "Traceback" not in stderr and "Usage:" in stderr, (path, stderr)
        errors = [line for line in stderr.splitlines() if "Error" in line or "error" in line]
        assert len(errors) == 1, (path, stderr)
    assert not list(tmp_path.iterdir())  # nothing was created on the way


def test_version_option_and_command() -> None:
    for args in (["--version"], ["version"]):
        r = run(*args)
        assert r.returncode == 0 and r.stdout.strip() == __version__


def test_an_unexpected_error_is_one_line_naming_the_log(tmp_path: Path) -> None:
    config = tmp_path / "comfymulti.toml"
    config.write_text('data_dir = "data"\n')
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "comfymulti.db").write_bytes(b"not a database, " * 100)
    r = run("--config", str(config), "users", "list")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    log = tmp_path / "data" / "logs" / "errors.log"
    assert str(log) in r.stderr and "Traceback" in log.read_text()
    verbose = run("--verbose", "--config", str(config), "users", "list")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_config_that_is_a_folder_or_unreadable_and_a_missing_template_are_one_line(
        tmp_path: Path) -> None:
    r = run("--config", str(tmp_path), "users", "list")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"--config {tmp_path / 'comfymulti.toml'}" in r.stderr
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    r = run("--config", str(binary), "users", "list")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot read" in r.stderr
    run("init", str(tmp_path / "site"))
    r = run("--config", str(tmp_path / "site/comfymulti.toml"), "templates", "publish",
            str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "does not exist" in r.stderr


def test_environment_errors_name_the_variable(tmp_path: Path) -> None:
    import os

    run("init", str(tmp_path))
    cfg = ["--config", str(tmp_path / "comfymulti.toml")]
    for key, value in (("COMFYMULTI_QUEUE__LEASE_SECONDS", "soon"),
                       ("COMFYMULTI_HUB__TRUSTED_PROXIES", "127.0.0.1")):
        r = run(*cfg, "queue", "policy", env={**os.environ, key: value})
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert f"environment variable {key}" in r.stderr
        assert "comfymulti.toml" not in r.stderr  # not the file's fault


def test_which_config_and_data_folder_unless_given_and_no_new_empty_database(
        tmp_path: Path) -> None:
    import os

    run("init", str(tmp_path / "site"))
    config = tmp_path / "site" / "comfymulti.toml"
    explicit = run("--config", str(config), "queue", "policy")
    assert explicit.returncode == 0 and explicit.stderr == ""
    here = run("queue", "policy", cwd=tmp_path / "site")
    assert here.returncode == 0
    assert here.stderr == f"config: {config} (from this folder); data: {tmp_path}/site/data\n"
    env = run("queue", "policy", cwd=tmp_path, env={**os.environ, "COMFYMULTI_CONFIG": str(config)})
    assert "(from $COMFYMULTI_CONFIG)" in env.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lost = run("users", "list", cwd=elsewhere)
    assert lost.returncode == 2 and "Traceback" not in lost.stderr
    assert "config: none found" in lost.stderr and "comfymulti init DIR" in lost.stderr
    assert "COMFYMULTI_CONFIG" in lost.stderr.splitlines()[-1]
    assert not list(elsewhere.iterdir())  # no new empty database


def test_serve_on_a_busy_port_says_so_before_ready(tmp_path: Path) -> None:
    run("init", str(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run("--config", str(tmp_path / "comfymulti.toml"), "serve", "--port", str(port))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr
    assert f"comfymulti serve --port {port + 1}" in r.stderr
    assert "hub ready" not in r.stderr + r.stdout and "password" not in r.stdout
