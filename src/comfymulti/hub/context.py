"""HubContext: everything a running hub holds, built once by create_app and passed down."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from comfymulti.config import Settings
from comfymulti.events import EventBus
from comfymulti.hub.services.auth import PasswordChecks
from comfymulti.hub.web.ratelimit import RateLimiter
from comfymulti.metrics import Metrics
from comfymulti.queue.service import JobQueue


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

    @property
    def online_window(self) -> float:
        """A worker counts as online if seen within this many seconds."""
        return self.settings.queue.online_window
