"""User accounts: one service for the CLI and the admin API alike."""

from __future__ import annotations

import csv
import html
import ipaddress
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from comfymulti.config import Settings
from comfymulti.errors import Conflict, InvalidInput, NotFound
from comfymulti.hub.services import sessions
from comfymulti.hub.services.auth import (
    USER_TOKEN_PREFIX,
    generate_password,
    hash_password,
    new_token,
)
from comfymulti.models import ApiToken, User
from comfymulti.queue import store
from comfymulti.queue.jobs import Role
from comfymulti.userfiles import USER_NAME, ensure_user_dirs, remove_user_dirs


def get_user(s: Session, name: str) -> User:
    user = s.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return user


def users_named(s: Session, names: list[str]) -> dict[str, User]:
    """The accounts among `names`, by name (the names logging in at once, in one query)."""
    return {u.name: u for u in s.scalars(select(User).where(User.name.in_(names)))}


def list_users(s: Session) -> list[User]:
    return list(s.scalars(select(User).order_by(User.name)))


@dataclass(frozen=True)
class NewAccount:
    """An account ready to insert: its password hashed already, so that the slow part
    (argon2) never runs while a transaction holds the database."""

    name: str
    role: Role
    password: str
    password_hash: str


def prepare_accounts(names: list[str], role: Role = Role.PARTICIPANT,
                     password: str | None = None) -> list[NewAccount]:
    """Check names and hash fresh passwords (or the one given: see `hash_password` for why
    the two get different strengths). No database work."""
    bad = [n for n in names if not USER_NAME.match(n)]
    if bad:
        raise InvalidInput(
            f"invalid user name {bad[0]!r}: lowercase letters, digits, '.', '_', '-' (max 64)")
    accounts = []
    for name in names:
        secret = password or generate_password()
        accounts.append(NewAccount(name, Role(role), secret,
                                   hash_password(secret, generated=not password)))
    return accounts


def add_accounts(s: Session, accounts: list[NewAccount]) -> list[User]:
    """Insert prepared accounts; refuses (nothing added) if any name is taken. Folders are
    made after the commit (`make_folders`), so an aborted run leaves none behind."""
    names = [a.name for a in accounts]
    taken = set(s.scalars(select(User.name).where(User.name.in_(names))))
    if taken:
        raise Conflict(f"these users exist already: {', '.join(sorted(taken))}"
                       if len(taken) > 1 else f"user {taken.pop()!r} exists already")
    users = [User(name=a.name, role=str(a.role), password_hash=a.password_hash,
                  disabled=False, created_at=time.time(), last_dispatch=0) for a in accounts]
    s.add_all(users)
    s.flush()
    return users


def make_folders(data_dir: Path, names: list[str]) -> None:
    for name in names:
        ensure_user_dirs(data_dir, name)


def numbered_names(count: int, prefix: str, start: int = 1) -> list[str]:
    """user001…userNNN (at least three digits)."""
    if count < 1:
        raise InvalidInput("count must be at least 1")
    width = max(3, len(str(start + count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(start, start + count)]


def create_user(s: Session, data_dir: Path, name: str, role: Role = Role.PARTICIPANT,
                password: str | None = None) -> tuple[User, str]:
    """One new account and its password (generated unless given), folders included."""
    account, = prepare_accounts([name], role, password)
    user, = add_accounts(s, [account])
    make_folders(data_dir, [name])
    return user, account.password


def remove_user(s: Session, data_dir: Path, name: str, delete_files: bool = False) -> None:
    """Delete the account, its jobs and tokens; its files stay unless `delete_files`."""
    user = get_user(s, name)
    store.delete_user_jobs(s, user.id)  # a worker running one finds its lease lost
    s.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
    sessions.end_all(s, user.id)
    s.delete(user)
    if delete_files:
        remove_user_dirs(data_dir, name)


def set_disabled(s: Session, name: str, disabled: bool) -> None:
    """Disabling also ends every session; the hub closes the user's sockets within seconds."""
    user = get_user(s, name)
    user.disabled = disabled
    if disabled:
        sessions.end_all(s, user.id)


def reset_password(s: Session, name: str, password: str | None = None) -> str:
    """A new password ends every session of the account."""
    account, = prepare_accounts([name], password=password)
    apply_passwords(s, [account])
    return account.password


def apply_passwords(s: Session, accounts: list[NewAccount]) -> None:
    """Give existing accounts their prepared new passwords (hashed beforehand, outside the
    transaction); each loses every session."""
    for account in accounts:
        user = get_user(s, account.name)
        user.password_hash = account.password_hash
        sessions.end_all(s, user.id)


def card_url_problem(settings: Settings) -> str | None:
    """Why hub.public_url would make cards no participant can use, or None when it is fine."""
    if not settings.hub.public_url:
        return (f"hub.public_url is not set, so cards would say {settings.public_url}/, "
                "which only this machine can open")
    host = urlsplit(settings.hub.public_url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        local = host == "localhost" or host.endswith(".localhost")
    else:
        local = address.is_loopback or address.is_unspecified
    if local or not host:
        return (f"hub.public_url is {settings.hub.public_url}, an address participants' "
                "laptops cannot open")
    return None


def create_api_token(s: Session, name: str, label: str = "script") -> str:
    user = get_user(s, name)
    token, digest = new_token(USER_TOKEN_PREFIX)
    s.add(ApiToken(user_id=user.id, name=label, token_hash=digest, created_at=time.time()))
    return token


def revoke_api_tokens(s: Session, name: str) -> int:
    user = get_user(s, name)
    tokens = s.scalars(select(ApiToken).where(ApiToken.user_id == user.id,
                                              ApiToken.revoked_at.is_(None))).all()
    for token in tokens:
        token.revoked_at = time.time()
    return len(tokens)


_CARD = """<section class="card"><h2>ComfyMulti</h2>
<p>Open <b>{url}</b></p><dl><dt>User</dt><dd>{name}</dd><dt>Password</dt><dd>{password}</dd></dl>
</section>"""

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>ComfyMulti logins</title>
<style>
body {{ font-family: sans-serif; margin: 0; }}
.card {{ display: inline-block; width: 85mm; height: 50mm; box-sizing: border-box;
  border: 1px dashed #999; padding: 6mm; margin: 2mm; vertical-align: top;
  page-break-inside: avoid; }}
.card h2 {{ margin: 0 0 3mm; font-size: 14pt; }}
dt {{ font-size: 9pt; color: #555; }} dd {{ margin: 0 0 2mm; font: bold 14pt monospace; }}
</style></head><body>
{cards}
</body></html>
"""


def write_credentials(directory: Path, rows: list[tuple[str, str]], url: str) -> tuple[Path, Path]:
    """A CSV and a printable HTML page (one card per participant), readable by the owner only."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    csv_path = directory / f"credentials-{stamp}.csv"
    html_path = directory / f"credentials-{stamp}.html"
    with open(csv_path, "w", newline="", encoding="utf-8", opener=_private) as fh:
        writer = csv.writer(fh)
        writer.writerow(["user", "password", "url"])
        writer.writerows((name, password, url) for name, password in rows)
    with open(html_path, "w", encoding="utf-8", opener=_private) as fh:
        fh.write(cards_page(rows, url))
    return csv_path, html_path


def cards_page(rows: list[tuple[str, str]], url: str) -> str:
    """A printable HTML page with one login card per (name, password)."""
    cards = "\n".join(
        _CARD.format(url=html.escape(url), name=html.escape(n), password=html.escape(p))
        for n, p in rows
    )
    return _PAGE.format(cards=cards)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)
