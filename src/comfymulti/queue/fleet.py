"""The GPU workers as the queue sees them: which are online, and the one rule for that.

A worker is online if the hub heard from it within the online window (a lease period plus a
long-poll). Every count, list and catalog union asks here, so they all agree.
"""

from __future__ import annotations

import time

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from comfymulti.models import Worker


def online(window: float, now: float | None = None) -> ColumnElement[bool]:
    """SQL condition: the worker was seen within `window` seconds of `now`."""
    return Worker.last_seen >= (time.time() if now is None else now) - window


def is_online(worker: Worker, window: float, now: float | None = None) -> bool:
    """The same rule for a worker row already loaded."""
    return worker.last_seen >= (time.time() if now is None else now) - window


def state(worker: Worker, window: float, now: float | None = None) -> str:
    """What a person is shown: offline (not heard from, whatever it was doing: a machine
    deleted without SIGTERM, a drained worker that stopped), else draining or online."""
    if not is_online(worker, window, now):
        return "offline"
    return "draining" if worker.draining else "online"


def online_count(s: Session, window: float) -> int:
    return s.scalar(select(func.count()).select_from(Worker).where(online(window))) or 0


def online_workers(s: Session, window: float) -> list[Worker]:
    return list(s.scalars(select(Worker).where(online(window)).order_by(Worker.name)))


def online_catalog_hashes(s: Session, window: float) -> list[str]:
    return sorted(s.scalars(select(Worker.catalog_hash).distinct().where(
        Worker.catalog_hash != "", online(window))))


def last_catalog_hash(s: Session) -> str | None:
    """The catalog of the worker seen most recently, online or not."""
    return s.scalar(select(Worker.catalog_hash).where(Worker.catalog_hash != "")
                    .order_by(Worker.last_seen.desc()).limit(1))
