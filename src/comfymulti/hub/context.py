"""HubContext: everything a running hub holds, built once by create_app and passed down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from comfymulti import backup_status
from comfymulti.backup_status import SetHealth
from comfymulti.blocking import Offload
from comfymulti.config import Settings
from comfymulti.db import transaction
from comfymulti.events import EventBus
from comfymulti.group_commit import GroupCommit
from comfymulti.group_read import GroupRead
from comfymulti.hub.services import sessions, workers
from comfymulti.hub.services.activity import Activity
from comfymulti.hub.services.auth import PasswordChecks
from comfymulti.hub.services.credentials import Credentials
from comfymulti.hub.web.ratelimit import RateLimiter
from comfymulti.hub.web.viewcache import ViewCache
from comfymulti.metrics import Metrics
from comfymulti.models import User
from comfymulti.queue.service import JobQueue

if TYPE_CHECKING:
    from comfymulti.hub.workspaces.run_api import JobPage

T = TypeVar("T")


@dataclass
class HubContext:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    bus: EventBus
    metrics: Metrics
    queue: JobQueue
    secret: str
    login_limiter: RateLimiter
    password_checks: PasswordChecks
    run: Offload  # `await hub.run(fn, *args)`: blocking work (database, hashing) off the loop
    work: Offload  # the GPU workers' requests: never queued behind participants' work
    polls: Offload  # job-list reads: never waiting for a thread behind writers
    logins: Offload  # password logins' database work, apart from the workspaces those
    # logins open at once (in `run`, lookups waited there up to 3.4 s in a 300-login rush)
    login_users: GroupRead[str, User]  # the accounts of names logging in together, one query
    new_sessions: GroupCommit  # sessions of logins made together, started in one transaction
    probe: Offload  # /health's own threads, so it answers even when `run`'s are all waiting
    job_lists: ViewCache[bytes]  # participants' job-list answers, reused between changes
    job_pages: ViewCache[JobPage]  # the same without positions and ETAs, between the user's changes
    credentials: Credentials  # who cookies and API tokens stand for, between changes
    session_activity: Activity[str] = field(default_factory=lambda: Activity(
        "sessions", sessions.touch, sessions.TOUCH_EVERY))  # cookie hashes used lately
    worker_activity: Activity[str] = field(default_factory=lambda: Activity(
        "workers", workers.touch, workers.SEEN_EVERY))  # GPU workers that asked lately
    # (worker token id, worker id) → when its registration was last checked
    # (time.monotonic()), and that check; see access.current_worker.
    workers_seen: dict[tuple[int, str], tuple[float, asyncio.Future[None]]] = field(
        default_factory=dict)

    async def tx(self, fn: Callable[[Session], T], pool: Offload | None = None) -> T:
        """`fn(session)` in one transaction, in a thread of `pool` (default: `run`)."""
        def in_transaction() -> T:
            with transaction(self.factory) as s:
                return fn(s)

        return await (pool or self.run)(in_transaction)

    def backups(self) -> dict[str, SetHealth]:
        """Each backup set's last success and age, from the status files `backup run` writes
        in the data folder (never from the object store)."""
        intervals = {name: s.interval for name, s in self.settings.backup.sets.items()}
        return backup_status.overview(self.settings.data_dir, intervals, time.time())

    @property
    def online_window(self) -> float:
        """A worker counts as online if seen within this many seconds."""
        return self.settings.queue.online_window
