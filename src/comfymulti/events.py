"""Per-user event bus: what workers relay reaches that user's open sockets, and no one else's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from comfymulti.blocking import on_loop

Message = dict[str, Any]


class Subscription:
    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize)
        self.overflowed = False

    async def get(self) -> Message:
        return await self.queue.get()


class EventBus:
    """In-process fan-out by user id. Durable state lives in the database; a subscriber that
    falls too far behind is marked overflowed and should reconnect and re-read the state."""

    def __init__(self, maxsize: int = 2000) -> None:
        self._subs: dict[int, set[Subscription]] = {}
        self._maxsize = maxsize
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the subscribers live on; publishing from other threads goes through it."""
        self._loop = loop

    @contextmanager
    def subscribe(self, user_id: int) -> Iterator[Subscription]:
        sub = Subscription(self._maxsize)
        self._subs.setdefault(user_id, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self._subs.get(user_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[user_id]

    def publish(self, user_id: int, message: Message) -> None:
        """Deliver to the user's subscribers; safe from any thread, order kept per thread."""
        on_loop(self._loop, self._publish, user_id, message)

    def broadcast(self, message: Message) -> None:
        """Deliver to every subscriber of every user (announcements); safe from any thread."""
        on_loop(self._loop, self._broadcast, message)

    def _broadcast(self, message: Message) -> None:
        for user_id in list(self._subs):
            self._publish(user_id, message)

    def _publish(self, user_id: int, message: Message) -> None:
        for sub in self._subs.get(user_id, ()):
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:
                sub.overflowed = True

    def subscribers(self, user_id: int) -> int:
        return len(self._subs.get(user_id, ()))
