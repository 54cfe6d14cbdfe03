"""The `comfymulti` command: thin commands that call services and print; one error exit.

Each group of commands lives in its own module and is added to `app` here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from comfymulti import __version__
from comfymulti.cli.accounts import queue_app, templates_app, users_app, workers_app
from comfymulti.cli.backup import backup_app, restore_cmd
from comfymulti.cli.cloud import cloud_app
from comfymulti.cli.console import err, factory, out
from comfymulti.cli.deploy import deploy
from comfymulti.cli.doctor import doctor
from comfymulti.cli.node import node_app
from comfymulti.cli.reference import docs
from comfymulti.config import write_config
from comfymulti.db import transaction
from comfymulti.errors import ComfyMultiError
from comfymulti.hub.services import users as user_service
from comfymulti.invocation import refuse_root_in_service_folder, settings, state
from comfymulti.queue.jobs import Role
from comfymulti.worker.command import worker

app = typer.Typer(help="ComfyMulti: multi-user ComfyUI for workshops.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(users_app, name="users")
app.add_typer(workers_app, name="workers")
app.add_typer(queue_app, name="queue")
app.add_typer(templates_app, name="templates")
app.add_typer(backup_app, name="backup")
app.add_typer(cloud_app, name="cloud")
app.command("restore")(restore_cmd)
app.add_typer(node_app, name="node")
app.command("worker")(worker)
app.command("deploy")(deploy)
app.command("doctor")(doctor)
app.command("docs")(docs)


def _print_version(value: bool) -> None:
    if value:
        out.print(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Config file (env: COMFYMULTI_CONFIG).", show_default=False,
    )] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")] = False,
    _version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", is_eager=True,
        callback=_print_version)] = False,
) -> None:
    state.config = config
    state.verbose = verbose


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="Folder for config and data.")]) -> None:
    """Write DIRECTORY/comfymulti.toml (fresh secrets, data folder inside), create the DB and
    the admin account (its password is printed here once, never by the service)."""
    refuse_root_in_service_folder(directory)
    path = write_config(directory)
    state.config = path
    out.print(f"Wrote {path}.")
    ensure_admin(factory(), settings().public_url)
    out.print(f"Start the hub with:\n  comfymulti --config {path} serve")


def ensure_admin(factory, url: str) -> None:  # type: ignore[no-untyped-def]
    """If there is no admin account yet (init, or serve on defaults), create one and print
    its password once."""
    from sqlalchemy import select

    from comfymulti.models import User

    with transaction(factory) as s:
        if s.scalar(select(User.id).where(User.role == str(Role.ADMIN))) is not None:
            return
        _, password = user_service.create_user(s, settings().data_dir, "admin", Role.ADMIN)
    out.print(f"\nCreated the admin account.\n  URL:      {url}/\n"
              f"  user:     admin\n  password: {password}\n"
              "This password is shown only now; reset it with "
              "'comfymulti users reset-password admin'.\n")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address (config: hub.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (config: hub.port).")] = None,
) -> None:
    """Run the hub in the foreground; stops cleanly on SIGTERM or Ctrl-C."""
    from comfymulti import log
    from comfymulti.hub import server
    from comfymulti.hub.app import create_app

    cfg = settings()
    if host:
        cfg.hub.host = host
    if port:
        cfg.hub.port = port
    log.setup(state.verbose)
    sock = server.bind(cfg.hub.host, cfg.hub.port)
    application = create_app(cfg)
    ensure_admin(application.state.hub.factory, cfg.public_url)
    out.print(f"ComfyMulti hub on {cfg.public_url}/  (data: {cfg.data_dir})")
    server.serve(application, sock, cfg.hub.header_timeout)


def main() -> None:
    """Entry point: run the app and turn every error into one line and an exit code; a
    traceback only with --verbose (else it goes to a log file the line names)."""
    try:
        code = app(standalone_mode=False)  # typer.Exit(n) comes back as n here
    except ComfyMultiError as exc:
        err.print(f"error: {exc.message}", markup=False, highlight=False)
        if state.verbose:
            err.print_exception()
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: a line and the usage, exit 2
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except Exception as exc:  # a bug or an unforeseen condition: one line and where to look
        from comfymulti import log

        if state.verbose:
            err.print_exception()
        data = state.settings.data_dir if state.settings is not None else None
        where = log.write_traceback(data)
        first = (str(exc).strip().splitlines() or [""])[0]
        err.print(f"error: unexpected {type(exc).__name__}: {log.redact(first)}; "
                  f"details in {where} (or run again with --verbose)",
                  markup=False, highlight=False)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)
