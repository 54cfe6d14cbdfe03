"""The open workspace sockets: who holds them, with which credential, under which caps.

A socket lives as long as the credential it was opened with: logout closes the sockets of
that session at once, and `watch` re-checks every open socket's credential every few seconds
in one query, so what the CLI does in its own process (disable, reset, remove, revoke tokens)
reaches the hub's sockets too.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import WebSocket

from comfymulti.errors import ComfyMultiError
from comfymulti.hub.context import HubContext
from comfymulti.hub.web.access import Credential, identity_of, still_valid
from comfymulti.models import User

log = logging.getLogger("comfymulti.hub")

RECHECK_SECONDS = 2.0
# Close code for a socket whose login ended (policy violation, as for a refused upgrade).
ENDED = 1008


class SocketLimit(Exception):
    """Too many open sockets (for this user, or for the hub)."""


@dataclass(frozen=True)
class _Open:
    ws: WebSocket
    credential: Credential


class Sockets:
    """Open sockets by (user id, sid): a reconnect with the same id replaces the old one."""

    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self._open: dict[tuple[int, str], _Open] = {}
        self._count: Counter[int] = Counter()
        # Caps reported full (a user id, or None for the hub): logged once until relieved.
        self._reported: set[int | None] = set()

    def full(self) -> bool:
        """The hub-wide cap; cheap, so it is checked before authenticating."""
        if len(self._open) < self.total:
            return False
        self._report(None, f"hub has {self.total} open sockets (hub.max_sockets_total)")
        return True

    async def enter(self, ws: WebSocket, hub: HubContext, sid: str,
                    check: Callable[[User], User | Awaitable[User]]
                    ) -> tuple[User, WebSocket | None] | None:
        """Admit a socket before its upgrade: under the caps, authenticated (with the CSRF
        rule), and passing `check` (which returns the user or raises). Returns the user and
        the socket this one replaces; None when refused, the handshake then answered 403."""
        try:
            if self.full():
                raise SocketLimit()
            found, credential = await identity_of(ws, hub)
            me = check(found)
            if inspect.isawaitable(me):
                me = await me
            return me, self.admit(me.id, sid, ws, credential)
        except (ComfyMultiError, SocketLimit):
            await ws.close(code=ENDED)
            return None

    async def release(self, user_id: int, sid: str, ws: WebSocket) -> None:
        """A socket's handler ended: forget it and close it if it is still open."""
        self.unregister(user_id, sid, ws)
        with contextlib.suppress(Exception):
            await ws.close()

    def admit(self, user_id: int, sid: str, ws: WebSocket,
              credential: Credential) -> WebSocket | None:
        """Register a socket; returns the one it replaces (to be closed), if any.
        Raises SocketLimit past either cap."""
        old = self._open.get((user_id, sid))
        if old is None:
            if self.full():
                raise SocketLimit()
            if self._count[user_id] >= self.per_user:
                self._report(user_id, f"user id {user_id} has {self.per_user} open sockets "
                             "(hub.max_sockets_per_user)")
                raise SocketLimit()
            self._count[user_id] += 1
        self._open[(user_id, sid)] = _Open(ws, credential)
        return old.ws if old else None

    def _report(self, scope: int | None, what: str) -> None:
        if scope not in self._reported:
            self._reported.add(scope)
            log.warning("refusing new sockets: %s", what, extra={"action": "socket_limit"})

    def unregister(self, user_id: int, sid: str, ws: WebSocket) -> None:
        entry = self._open.get((user_id, sid))
        if entry is None or entry.ws is not ws:
            return
        del self._open[(user_id, sid)]
        self._count[user_id] -= 1
        if not self._count[user_id]:
            del self._count[user_id]
        self._reported.discard(user_id)
        self._reported.discard(None)

    async def close_credential(self, credential: Credential) -> None:
        """Close every socket opened with this credential (its login just ended)."""
        await _close([o.ws for o in self._open.values() if o.credential == credential])

    async def recheck(self, hub: HubContext) -> int:
        """Close the sockets whose credential no longer authenticates; returns how many."""
        credentials = {o.credential for o in self._open.values()}
        if not credentials:
            return 0
        valid = await hub.tx(lambda s: still_valid(s, credentials))
        # Only those checked: sockets opened while the query ran are not in `credentials`.
        ended = [o.ws for o in self._open.values()
                 if o.credential in credentials and o.credential not in valid]
        await _close(ended)
        return len(ended)

    async def watch(self, hub: HubContext) -> None:
        """Run `recheck` every RECHECK_SECONDS until cancelled."""
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            try:
                await self.recheck(hub)
            except Exception:  # a busy database must not stop the watch
                log.exception("socket recheck failed", extra={"action": "socket_recheck"})


async def _close(sockets: list[WebSocket]) -> None:
    for ws in sockets:
        with contextlib.suppress(Exception):
            await ws.close(code=ENDED, reason="login ended")
