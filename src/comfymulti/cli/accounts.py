"""Accounts, worker credentials, the queue policy and workshop templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from comfymulti.cli.console import ago, err, factory, out
from comfymulti.config import CONFIG_NAME, find_config
from comfymulti.db import transaction
from comfymulti.errors import ConfigError
from comfymulti.hub.services import templates
from comfymulti.hub.services import users as user_service
from comfymulti.hub.services import workers as worker_service
from comfymulti.invocation import refuse_root_in_service_folder, settings, state
from comfymulti.queue import fleet, store
from comfymulti.queue.jobs import Policy, Role, policy_choices

users_app = typer.Typer(help="Participant, instructor and admin accounts.", no_args_is_help=True)
workers_app = typer.Typer(help="GPU worker credentials and status.", no_args_is_help=True)
queue_app = typer.Typer(help="The job queue.", no_args_is_help=True)
templates_app = typer.Typer(help="Workshop workflows every participant sees.",
                            no_args_is_help=True)


# --- users -----------------------------------------------------------------------------------

OutDir = Annotated[Path | None, typer.Option(
    "--out", help="Where to write the credentials sheet (default: DATA/credentials).")]
Force = Annotated[bool, typer.Option(
    "--force", help="Write cards even when hub.public_url is unset or only reachable here.")]


def _card_url(force: bool) -> str:
    """hub.public_url for the cards; refused when participants could not open it."""
    cfg = settings()
    if problem := user_service.card_url_problem(cfg):
        if not force:
            where = find_config(state.config) or CONFIG_NAME
            raise ConfigError(f"{problem}. Set public_url under [hub] in {where} (e.g. "
                              "https://workshop.example.org), or pass --force")
        err.print(f"warning: {problem}")
    return cfg.public_url + "/"


@users_app.command("create")
def users_create(
    count: Annotated[int, typer.Option(help="How many accounts.")] = 20,
    prefix: Annotated[str, typer.Option(help="Name prefix: user → user001, user002, …")] = "user",
    role: Annotated[Role, typer.Option(help="Role of the new accounts.")] = Role.PARTICIPANT,
    start: Annotated[int, typer.Option(help="First number.")] = 1,
    out_dir: OutDir = None,
    force: Force = False,
) -> None:
    """Create numbered accounts and write a credentials sheet (CSV + printable HTML cards)."""
    cfg = settings()
    url = _card_url(force)
    names = user_service.numbered_names(count, prefix, start)
    accounts = user_service.prepare_accounts(names, role)  # hashing: before the transaction
    rows = [(a.name, a.password) for a in accounts]
    with transaction(factory()) as s:
        user_service.add_accounts(s, accounts)
        # Inside the transaction: if the sheet cannot be written, no account is created.
        csv_path, html_path = user_service.write_credentials(
            out_dir or cfg.data_dir / "credentials", rows, url)
    user_service.make_folders(cfg.data_dir, names)
    out.print(f"Created {len(rows)} {role} accounts: {rows[0][0]} … {rows[-1][0]}")
    out.print(f"Credentials: {csv_path}\nPrintable cards: {html_path}")


@users_app.command("cards")
def users_cards(
    names: Annotated[list[str], typer.Argument(help="The accounts to reprint cards for.")],
    out_dir: OutDir = None,
    force: Force = False,
) -> None:
    """Reprint cards for these accounts with new passwords (only theirs change; their open
    sessions end)."""
    cfg = settings()
    url = _card_url(force)
    # Hashing before the transaction; a name given twice gets one card.
    accounts = user_service.prepare_accounts(list(dict.fromkeys(names)))
    rows = [(a.name, a.password) for a in accounts]
    with transaction(factory()) as s:
        user_service.apply_passwords(s, accounts)
        csv_path, html_path = user_service.write_credentials(
            out_dir or cfg.data_dir / "credentials", rows, url)
    out.print(f"New passwords for {', '.join(names)}")
    out.print(f"Credentials: {csv_path}\nPrintable cards: {html_path}")


@users_app.command("add")
def users_add(
    name: str,
    role: Annotated[Role, typer.Option(help="Role.")] = Role.PARTICIPANT,
    password: Annotated[str | None, typer.Option(
        help="Password (default: generated and printed).")] = None,
) -> None:
    """Create one account."""
    with transaction(factory()) as s:
        _, pw = user_service.create_user(s, settings().data_dir, name, role, password)
    out.print(f"{name} ({role}) created" + ("" if password else f"; password: {pw}"))


@users_app.command("list")
def users_list() -> None:
    """List accounts."""
    with transaction(factory()) as s:
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
    with transaction(factory()) as s:
        user_service.remove_user(s, settings().data_dir, name, delete_files)
    out.print(f"{name} removed" + (" with files" if delete_files else "; files kept"))


@users_app.command("disable")
def users_disable(name: str) -> None:
    """Block logins and API use for an account."""
    with transaction(factory()) as s:
        user_service.set_disabled(s, name, True)
    out.print(f"{name} disabled")


@users_app.command("enable")
def users_enable(name: str) -> None:
    """Allow a disabled account again."""
    with transaction(factory()) as s:
        user_service.set_disabled(s, name, False)
    out.print(f"{name} enabled")


@users_app.command("reset-password")
def users_reset_password(name: str) -> None:
    """Give an account a new generated password and print it."""
    with transaction(factory()) as s:
        password = user_service.reset_password(s, name)
    out.print(f"{name}: new password {password}")


@users_app.command("token")
def users_token(
    name: str,
    revoke: Annotated[bool, typer.Option("--revoke", help="Revoke all of the user's tokens.")]
    = False,
) -> None:
    """Print a new API token for scripts (Authorization: Bearer …), or revoke them all."""
    with transaction(factory()) as s:
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
    with transaction(factory()) as s:
        token = worker_service.create_token(s, name)
    out.print(token)


@workers_app.command("list")
def workers_list() -> None:
    """Worker tokens and registered workers: online, draining or offline, and last seen."""
    window = settings().queue.online_window
    with transaction(factory()) as s:
        tokens = [(str(t.id), t.name, "revoked" if t.revoked_at else "active")
                  for t in worker_service.list_tokens(s)]
        workers = [(w.name, w.gpu, w.comfyui_version, fleet.state(w, window), ago(w.last_seen))
                   for w in worker_service.list_workers(s)]
    table = Table("token id", "name", "status", title="Tokens")
    for row in tokens:
        table.add_row(*row)
    out.print(table)
    table = Table("worker", "gpu", "comfyui", "state", "last seen", title="Workers")
    for row in workers:
        table.add_row(*row)
    out.print(table)


@workers_app.command("revoke")
def workers_revoke(token: Annotated[str, typer.Argument(help="Token id or name.")]) -> None:
    """Revoke a worker token; its workers are refused from the next request on."""
    with transaction(factory()) as s:
        n = worker_service.revoke_token(s, token)
    out.print(f"revoked {n} token(s)")


@workers_app.command("forget")
def workers_forget(
    worker: Annotated[str | None, typer.Argument(
        help="Worker name or id; without it, every offline worker.", show_default=False)] = None,
) -> None:
    """Remove offline workers from the list (an online one is refused)."""
    with transaction(factory()) as s:
        names = worker_service.forget(s, settings().queue.online_window, worker)
    out.print(f"forgot {len(names)} offline worker(s){': ' if names else ''}{', '.join(names)}")


# --- queue -----------------------------------------------------------------------------------

@queue_app.command("policy")
def queue_policy(
    policy: Annotated[Policy | None, typer.Argument(help=policy_choices())] = None,
) -> None:
    """Show or set the scheduling policy (takes effect at once, also on a running hub)."""
    with transaction(factory()) as s:
        if policy is not None:
            store.set_policy(s, policy)
        current = store.get_policy(s, settings().queue.policy)
    out.print(current)


# --- templates -------------------------------------------------------------------------------

@templates_app.command("publish")
def templates_publish(
    file: Annotated[Path, typer.Argument(
        help="A workflow saved from ComfyUI (.json).", exists=True, dir_okay=False,
        readable=True)],
    name: Annotated[str | None, typer.Option(help="Name shown to participants.")] = None,
) -> None:
    """Publish a workflow to every participant (Workflows/Workshop), replacing one of the
    same name."""
    refuse_root_in_service_folder(settings().templates_dir)
    path = templates.publish(settings(), name or file.name, file.read_bytes())
    out.print(f"published {path.name}: participants see {templates.PREFIX}{path.name}")


@templates_app.command("list")
def templates_list() -> None:
    """List published workshop workflows."""
    for path in templates.list_templates(settings()):
        out.print(path.name)


@templates_app.command("default")
def templates_default(name: str) -> None:
    """The workflow participants open on their first visit (instead of a blank canvas)."""
    templates.set_default(settings(), name)
    out.print(f"new participants open {name}")


@templates_app.command("remove")
def templates_remove(name: str) -> None:
    """Withdraw a workshop workflow (participants' own saved copies stay)."""
    refuse_root_in_service_folder(settings().templates_dir)
    templates.remove(settings(), name)
    out.print(f"removed {name}")
