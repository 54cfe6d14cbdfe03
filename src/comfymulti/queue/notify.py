"""How the queue tells others that something changed: workers waiting in a long-poll, a
worker whose commands changed, a user's open sockets (one `status` per burst of changes,
counted once) and the organiser's open dashboards. Safe to call from the threads that do
the database work: everything that touches the event loop is handed to it."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict
from collections.abc import Callable

from comfymulti.blocking import Offload, on_loop
from comfymulti.events import EventBus
from comfymulti.group_read import GroupRead

log = logging.getLogger("comfymulti.queue")

# Queue changes within this many seconds reach a user's sockets as one `status`.
STATUS_DELAY = 0.05


class Notifier:
    def __init__(self, bus: EventBus, offload: Offload,
                 remaining_of: Callable[[list[int]], dict[int, int]]) -> None:
        self.bus = bus
        # Users' unfinished jobs, counted in a thread: in a burst, the users whose statuses
        # are due together in one query (each took a thread of `offload` of its own).
        self._remaining = GroupRead(remaining_of, offload)
        self.work = asyncio.Event()  # set (and replaced) when there may be work for workers
        self.dashboards = asyncio.Event()  # set (and replaced) when what they show changed
        self._worker_signals: dict[str, asyncio.Event] = {}
        self._status_due: set[int] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Bumped by every change this hub makes to the queue; cached views are keyed by it.
        self.changes = 0
        # A fresh stamp on every change to a user's jobs: views of them are cached against
        # it. Stamps are unique (not `+= 1`, which two threads can turn into one increment),
        # so a view cached before any change never matches again.
        self.user_versions: defaultdict[int, int] = defaultdict(int)
        self._stamps = itertools.count(1)

    def jobs_changed(self, user_id: int) -> None:
        """The user's jobs changed: cached views of them are stale. Safe from any thread."""
        self.user_versions[user_id] = next(self._stamps)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The hub's loop: long-polls wait on it, and notifications from the threads that do
        the database work are handed to it."""
        self._loop = loop
        self.bus.bind(loop)

    def changed(self) -> None:
        """Something the dashboards show changed (jobs, workers, accounts, templates): count
        it and wake every open dashboard. Safe from any thread."""
        self.changes += 1
        on_loop(self._loop, self._wake_dashboards)

    def _wake_dashboards(self) -> None:
        self.dashboards.set()
        self.dashboards = asyncio.Event()

    def wake_workers(self) -> None:
        """Wake every long-polling lease request: there may be work for it now."""
        self.changed()
        on_loop(self._loop, self._wake)

    def _wake(self) -> None:
        self.work.set()
        self.work = asyncio.Event()

    def user(self, user_id: int) -> None:
        """Send the user's sockets a `status` with their queue size, computed once for all of
        them and once per burst of changes (a batch submit, a reap): STATUS_DELAY after the
        first change, so thousands of sockets never mean thousands of counts. Safe from any
        thread."""
        self.changed()
        self.jobs_changed(user_id)
        on_loop(self._loop, self._schedule_status, user_id)

    def _schedule_status(self, user_id: int) -> None:
        if self._loop is None or user_id in self._status_due \
                or not self.bus.subscribers(user_id):
            return
        self._status_due.add(user_id)
        self._loop.call_later(STATUS_DELAY, self._send_status, user_id)

    def _send_status(self, user_id: int) -> None:
        self._status_due.discard(user_id)
        if self.bus.subscribers(user_id):
            task = asyncio.ensure_future(self._publish_status(user_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _publish_status(self, user_id: int) -> None:
        try:
            remaining = await self._remaining(user_id) or 0
        except Exception:  # a busy database: the next change sends a fresh status
            log.warning("queue status for user %s not sent", user_id, exc_info=True)
            return
        self.bus.publish(user_id, {"type": "status", "client_id": "", "data": {
            "status": {"exec_info": {"queue_remaining": remaining}}}})

    def worker_signal(self, worker_id: str) -> asyncio.Event:
        """Set when this worker's commands change (cancel, drain) or the hub stops."""
        event = self._worker_signals.setdefault(worker_id, asyncio.Event())
        if self.closing:
            event.set()
        return event

    def close(self) -> None:
        """The hub is stopping: answer every open long-poll now (leases with "no work",
        commands with what they are), so shutdown never waits for them."""
        self.closing = True
        self.wake_workers()
        for event in self._worker_signals.values():
            event.set()
        self._worker_signals.clear()

    def signal_worker(self, worker_id: str | None) -> None:
        if worker_id:
            on_loop(self._loop, self._signal, worker_id)

    def _signal(self, worker_id: str) -> None:
        if event := self._worker_signals.pop(worker_id, None):
            event.set()
