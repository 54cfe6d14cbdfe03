"""Server-side login sessions. The cookie holds a random id and the table only its SHA-256,
so ending a session (logout, disable, password reset, removal) takes effect at once."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Collection

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session

from comfymulti.hub.services.auth import token_hash
from comfymulti.models import LoginSession, User

log = logging.getLogger("comfymulti.hub")

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


class Activity:
    """The sessions used since their last_used_at was last written. Noted on every request
    (in memory) and written for all of them once a TOUCH_EVERY: a write in the lookup made
    the checks of cookies wait for the write lock, and the requests behind them (load bench:
    job-list p99 30-50 s in a burst)."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def note(self, digest: str) -> None:
        self._used.add(digest)

    async def write(self, run: Callable[[Callable[[Session], None]], Awaitable[None]]
                    ) -> None:
        """Write last_used_at of the sessions used since the last write, in one transaction
        (`run` runs it off the loop); a failed write is tried again next time."""
        used, self._used = self._used, set()
        if not used:
            return
        now = time.time()

        def touch(s: Session) -> None:
            s.execute(update(LoginSession).where(LoginSession.token_hash.in_(used))
                      .values(last_used_at=now))

        try:
            await run(touch)
        except Exception:
            self._used |= used
            raise

    async def keep_writing(self, run: Callable[[Callable[[Session], None]], Awaitable[None]]
                           ) -> None:
        while True:
            await asyncio.sleep(TOUCH_EVERY)
            try:
                await self.write(run)
            except Exception:  # the database is busy: next time
                log.exception("could not write when sessions were used",
                              extra={"action": "sessions"})


def end(s: Session, cookie: str) -> None:
    s.execute(delete(LoginSession).where(LoginSession.token_hash == token_hash(cookie)))


def end_all(s: Session, user_id: int) -> None:
    """Every session of the user: after disable, password reset or removal."""
    s.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
