"""Server-side login sessions. The cookie holds a random id and the table only its SHA-256,
so ending a session (logout, disable, password reset, removal) takes effect at once."""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session

from comfymulti.hub.services.auth import token_hash
from comfymulti.models import LoginSession, User

MAX_AGE = 7 * 24 * 3600
# last_used_at is informational: the sessions used are written this often, all at once.
TOUCH_EVERY = 60.0


def live(hashes: Collection[str]) -> list[ColumnElement[bool]]:
    """The one rule for a session that still counts (the caller also checks the user)."""
    return [LoginSession.token_hash.in_(hashes), LoginSession.expires_at > time.time()]


def start(s: Session, user: User) -> str:
    """A new session for `user`; returns the cookie value (shown once, never stored)."""
    now = time.time()
    s.execute(delete(LoginSession).where(LoginSession.expires_at <= now))
    value = secrets.token_urlsafe(32)
    s.add(LoginSession(user_id=user.id, token_hash=token_hash(value), created_at=now,
                       last_used_at=now, expires_at=now + MAX_AGE))
    return value


def lookup(s: Session, digest: str) -> tuple[User, float] | None:
    """The active user of the live session with this cookie hash, and when it expires."""
    row = s.execute(select(LoginSession, User).join(User)
                    .where(*live([digest]), User.disabled.is_(False))).first()
    if row is None:
        return None
    session, user = row
    return user, session.expires_at


def touch(s: Session, digests: set[str], now: float) -> None:
    """Note that these sessions were used (see `activity.Activity`)."""
    s.execute(update(LoginSession).where(LoginSession.token_hash.in_(digests))
              .values(last_used_at=now))


def end(s: Session, cookie: str) -> None:
    s.execute(delete(LoginSession).where(LoginSession.token_hash == token_hash(cookie)))


def end_all(s: Session, user_id: int) -> None:
    """Every session of the user: after disable, password reset or removal."""
    s.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
