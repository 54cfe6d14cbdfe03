"""The `comfymulti` command: thin commands that call services and print; one error exit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from comfymulti import __version__
from comfymulti.config import write_config
from comfymulti.db import make_engine, migrate, session_factory, transaction
from comfymulti.errors import ComfyMultiError
from comfymulti.hub.services import templates
from comfymulti.hub.services import users as user_service
from comfymulti.hub.services import workers as worker_service
from comfymulti.invocation import settings, state
from comfymulti.queue import store
from comfymulti.queue.jobs import Policy, Role, policy_choices
from comfymulti.worker.command import worker

app = typer.Typer(help="ComfyMulti: multi-user ComfyUI for workshops.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
users_app = typer.Typer(help="Participant, instructor and admin accounts.", no_args_is_help=True)
workers_app = typer.Typer(help="GPU worker credentials and status.", no_args_is_help=True)
queue_app = typer.Typer(help="The job queue.", no_args_is_help=True)
templates_app = typer.Typer(help="Workshop workflows every participant sees.",
                            no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(workers_app, name="workers")
app.add_typer(queue_app, name="queue")
app.add_typer(templates_app, name="templates")
backup_app = typer.Typer(help="Backups to S3-compatible storage (R2).", no_args_is_help=True)
app.add_typer(backup_app, name="backup")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@app.callback()
def _root(
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Config file (env: COMFYMULTI_CONFIG).", show_default=False,
    )] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")] = False,
) -> None:
    state.config = config
    state.verbose = verbose


def _factory():  # type: ignore[no-untyped-def]
    cfg = settings()
    engine = make_engine(cfg.database_url)
    migrate(engine)
    return session_factory(engine)


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="Folder for config and data.")]) -> None:
    """Write DIRECTORY/comfymulti.toml (fresh secrets, data folder inside) and create the DB."""
    path = write_config(directory)
    state.config = path
    _factory()
    out.print(f"Wrote {path}. Start the hub with:\n  comfymulti --config {path} serve")


def ensure_admin(factory, url: str) -> None:  # type: ignore[no-untyped-def]
    """On first start, create an admin account and print its password once."""
    from sqlalchemy import select

    from comfymulti.models import User

    with transaction(factory) as s:
        if s.scalar(select(User.id).where(User.role == str(Role.ADMIN))) is not None:
            return
        _, password = user_service.create_user(s, settings().data_dir, "admin", Role.ADMIN)
    out.print(f"\nFirst start: created admin account.\n  URL:      {url}/\n"
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
    application = create_app(cfg)
    ensure_admin(application.state.hub.factory, cfg.public_url)
    out.print(f"ComfyMulti hub on {cfg.public_url}/  (data: {cfg.data_dir})")
    server.serve(application, cfg.hub.host, cfg.hub.port, cfg.hub.header_timeout)


# --- users -----------------------------------------------------------------------------------

@users_app.command("create")
def users_create(
    count: Annotated[int, typer.Option(help="How many accounts.")] = 20,
    prefix: Annotated[str, typer.Option(help="Name prefix: user → user001, user002, …")] = "user",
    role: Annotated[Role, typer.Option(help="Role of the new accounts.")] = Role.PARTICIPANT,
    start: Annotated[int, typer.Option(help="First number.")] = 1,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Where to write the credentials sheet (default: DATA/credentials).")] = None,
) -> None:
    """Create numbered accounts and write a credentials sheet (CSV + printable HTML cards)."""
    cfg = settings()
    names = user_service.numbered_names(count, prefix, start)
    accounts = user_service.prepare_accounts(names, role)  # hashing: before the transaction
    rows = [(a.name, a.password) for a in accounts]
    with transaction(_factory()) as s:
        user_service.add_accounts(s, accounts)
        # Inside the transaction: if the sheet cannot be written, no account is created.
        csv_path, html_path = user_service.write_credentials(
            out_dir or cfg.data_dir / "credentials", rows, cfg.public_url + "/")
    user_service.make_folders(cfg.data_dir, names)
    out.print(f"Created {len(rows)} {role} accounts: {rows[0][0]} … {rows[-1][0]}")
    out.print(f"Credentials: {csv_path}\nPrintable cards: {html_path}")


@users_app.command("add")
def users_add(
    name: str,
    role: Annotated[Role, typer.Option(help="Role.")] = Role.PARTICIPANT,
    password: Annotated[str | None, typer.Option(
        help="Password (default: generated and printed).")] = None,
) -> None:
    """Create one account."""
    with transaction(_factory()) as s:
        _, pw = user_service.create_user(s, settings().data_dir, name, role, password)
    out.print(f"{name} ({role}) created" + ("" if password else f"; password: {pw}"))


@users_app.command("list")
def users_list() -> None:
    """List accounts."""
    with transaction(_factory()) as s:
        rows = [(u.name, u.role, "disabled" if u.disabled else "active")
                for u in user_service.list_users(s)]
    table = Table("user", "role", "status")
    for row in rows:
        table.add_row(*row)
    out.print(table)


@users_app.command("remove")
def users_remove(
    name: str,
    delete_files: Annotated[bool, typer.Option(
        "--delete-files", help="Also delete the user's files (kept by default).")] = False,
) -> None:
    """Delete an account and its job history; its files are kept unless --delete-files."""
    with transaction(_factory()) as s:
        user_service.remove_user(s, settings().data_dir, name, delete_files)
    out.print(f"{name} removed" + (" with files" if delete_files else "; files kept"))


@users_app.command("disable")
def users_disable(name: str) -> None:
    """Block logins and API use for an account."""
    with transaction(_factory()) as s:
        user_service.set_disabled(s, name, True)
    out.print(f"{name} disabled")


@users_app.command("enable")
def users_enable(name: str) -> None:
    """Allow a disabled account again."""
    with transaction(_factory()) as s:
        user_service.set_disabled(s, name, False)
    out.print(f"{name} enabled")


@users_app.command("reset-password")
def users_reset_password(name: str) -> None:
    """Give an account a new generated password and print it."""
    with transaction(_factory()) as s:
        password = user_service.reset_password(s, name)
    out.print(f"{name}: new password {password}")


@users_app.command("token")
def users_token(
    name: str,
    revoke: Annotated[bool, typer.Option("--revoke", help="Revoke all of the user's tokens.")]
    = False,
) -> None:
    """Print a new API token for scripts (Authorization: Bearer …), or revoke them all."""
    with transaction(_factory()) as s:
        if revoke:
            out.print(f"revoked {user_service.revoke_api_tokens(s, name)} token(s) of {name}")
            return
        token = user_service.create_api_token(s, name)
    out.print(token)


# --- workers ---------------------------------------------------------------------------------

@workers_app.command("token")
def workers_token(
    name: Annotated[str, typer.Option(help="A label for the token.")] = "worker",
) -> None:
    """Print a new worker token (shown once; only its hash is kept)."""
    with transaction(_factory()) as s:
        token = worker_service.create_token(s, name)
    out.print(token)


@workers_app.command("list")
def workers_list() -> None:
    """Worker tokens and registered workers."""
    with transaction(_factory()) as s:
        tokens = [(str(t.id), t.name, "revoked" if t.revoked_at else "active")
                  for t in worker_service.list_tokens(s)]
        workers = [(w.name, w.gpu, w.comfyui_version, "draining" if w.draining else "")
                   for w in worker_service.list_workers(s)]
    table = Table("token id", "name", "status", title="Tokens")
    for row in tokens:
        table.add_row(*row)
    out.print(table)
    table = Table("worker", "gpu", "comfyui", "", title="Workers")
    for row in workers:
        table.add_row(*row)
    out.print(table)


@workers_app.command("revoke")
def workers_revoke(token: Annotated[str, typer.Argument(help="Token id or name.")]) -> None:
    """Revoke a worker token; its workers are refused from the next request on."""
    with transaction(_factory()) as s:
        n = worker_service.revoke_token(s, token)
    out.print(f"revoked {n} token(s)")


# --- queue -----------------------------------------------------------------------------------

@queue_app.command("policy")
def queue_policy(
    policy: Annotated[Policy | None, typer.Argument(help=policy_choices())] = None,
) -> None:
    """Show or set the scheduling policy (takes effect at once, also on a running hub)."""
    with transaction(_factory()) as s:
        if policy is not None:
            store.set_policy(s, policy)
        current = store.get_policy(s, settings().queue.policy)
    out.print(current)


# --- templates -------------------------------------------------------------------------------

@templates_app.command("publish")
def templates_publish(
    file: Annotated[Path, typer.Argument(help="A workflow saved from ComfyUI (.json).")],
    name: Annotated[str | None, typer.Option(help="Name shown to participants.")] = None,
) -> None:
    """Publish a workflow to every participant (Workflows/Workshop), replacing one of the
    same name."""
    path = templates.publish(settings(), name or file.name, file.read_bytes())
    out.print(f"published {path.name}: participants see {templates.PREFIX}{path.name}")


@templates_app.command("list")
def templates_list() -> None:
    """List published workshop workflows."""
    for path in templates.list_templates(settings()):
        out.print(path.name)


@templates_app.command("remove")
def templates_remove(name: str) -> None:
    """Withdraw a workshop workflow (participants' own saved copies stay)."""
    templates.remove(settings(), name)
    out.print(f"removed {name}")


# --- backup and restore ----------------------------------------------------------------------

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]


def _print_report(report: Any, as_json: bool, text: str) -> None:
    """A dataclass report: one JSON object for scripts, else a line a person reads."""
    import dataclasses
    import json

    if as_json:
        out.print(json.dumps(dataclasses.asdict(report), ensure_ascii=False), markup=False)
    else:
        out.print(text, markup=False)


@backup_app.command("run")
def backup_run(name: Annotated[str, typer.Argument(help="Backup set ([backup.sets.NAME]).")],
               as_json: JsonOption = False) -> None:
    """Back up a set: upload what changed, then write the run's manifest."""
    from comfymulti.ops.backup.backup import run_backup
    from comfymulti.ops.backup.s3 import ObjectStore

    cfg = settings()
    r = run_backup(cfg, name, ObjectStore(cfg.backup))
    missing = f"; not found: {', '.join(r.missing)}" if r.missing else ""
    _print_report(r, as_json, f"{name}: run {r.run}: {r.files} files, {r.bytes} bytes; "
                  f"uploaded {r.uploaded_files} files, {r.uploaded_bytes} bytes{missing}")


@backup_app.command("verify")
def backup_verify(
    name: Annotated[str, typer.Argument(help="Backup set.")],
    snapshot: Annotated[str | None, typer.Option(help="Run id (default: the latest).")] = None,
    deep: Annotated[bool, typer.Option(help="Download and hash every object.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Check the remote objects against the manifest; exit 1 naming any that do not match."""
    from comfymulti.errors import IntegrityError
    from comfymulti.ops.backup.s3 import ObjectStore
    from comfymulti.ops.backup.verify import verify

    cfg = settings()
    r = verify(ObjectStore(cfg.backup), name, cfg.backup.concurrency, snapshot, deep)
    _print_report(r, as_json, "\n".join([*r.problems, f"{name}: run {r.run}: {r.objects} "
                                          f"objects checked, {len(r.problems)} problem(s)"]))
    if r.problems:
        raise IntegrityError(f"{name}: {len(r.problems)} file(s) do not match the manifest: "
                             + ", ".join(p.split(": ")[0] for p in r.problems[:3]))


@app.command("restore")
def restore_cmd(
    name: Annotated[str, typer.Argument(help="Backup set.")],
    to: Annotated[Path, typer.Option("--to", help="Folder to recreate the set's root in.")],
    tier: Annotated[list[Path] | None, typer.Option(
        "--tier", help="Folder holding copies to take before downloading (repeatable).")] = None,
    snapshot: Annotated[str | None, typer.Option(help="Run id (default: the latest).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a set into a folder: keep matching files, copy from tiers, download the rest."""
    from comfymulti.errors import IntegrityError
    from comfymulti.ops.backup.cache import Cache
    from comfymulti.ops.backup.restore import restore
    from comfymulti.ops.backup.s3 import ObjectStore

    cfg = settings()
    cache = Cache(cfg.backup_cache_dir / "cache.sqlite")
    try:
        r = restore(ObjectStore(cfg.backup), name, to, cache, cfg.backup.concurrency,
                    tier or [], snapshot)
    finally:
        cache.close()
    sources = ", ".join(f"{n} bytes from {src}" for src, n in sorted(r.bytes_from.items()))
    _print_report(r, as_json, "\n".join([*r.problems, f"{name}: run {r.run}: {r.files} files "
                                          f"into {to}: {sources or 'nothing'}"]))
    if r.problems:
        raise IntegrityError(f"{name}: {len(r.problems)} file(s) refused: "
                             + ", ".join(p.split(": ")[0] for p in r.problems[:3]))


app.command("worker")(worker)


def main() -> None:
    """Entry point: run the app and turn our errors into one line and an exit code."""
    try:
        app(standalone_mode=False)
    except ComfyMultiError as exc:
        err.print(f"error: {exc.message}", markup=False, highlight=False)
        if state.verbose:
            err.print_exception()
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: a line and the usage, exit 2
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
