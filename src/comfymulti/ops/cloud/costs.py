"""What the recorded resources cost: per resource, per UTC day, per job and per user.

A resource costs its price per hour for every second from its creation to its deletion (both on
the provider's clock), which is how Verda bills pay-as-you-go time once the unused part of its
prepaid 10-minute steps is refunded. A job costs the GPU-seconds it ran times the price of the
machine that ran it (the instance whose hostname is the worker's name at that time).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from comfymulti.models import CloudResource, Job, User, Worker


@dataclass
class CostReport:
    total: float = 0.0
    per_resource: dict[str, float] = field(default_factory=dict)  # "name (id)"
    per_day: dict[str, float] = field(default_factory=dict)  # YYYY-MM-DD (UTC)
    per_job: dict[str, float] = field(default_factory=dict)
    per_user: dict[str, float] = field(default_factory=dict)
    gpu_seconds: dict[str, float] = field(default_factory=dict)  # per user


def cost(row: CloudResource, now: float, start: float | None = None,
         end: float | None = None) -> float:
    """Cost of `row` between start and end (default: its whole life until now)."""
    lo = max(row.created_at, start if start is not None else row.created_at)
    hi = min(row.ended_at if row.ended_at is not None else now, end if end is not None else now)
    return max(0.0, hi - lo) * row.price_per_hour / 3600


def day_of(at: float) -> str:
    """The UTC day costs are booked under."""
    return datetime.fromtimestamp(at, UTC).date().isoformat()


def _days(row: CloudResource, now: float) -> dict[str, float]:
    out: dict[str, float] = {}
    day = datetime.fromtimestamp(row.created_at, UTC).replace(hour=0, minute=0, second=0,
                                                              microsecond=0)
    last = row.ended_at if row.ended_at is not None else now
    while day.timestamp() < last:
        nxt = day + timedelta(days=1)
        out[day.date().isoformat()] = cost(row, now, day.timestamp(), nxt.timestamp())
        day = nxt
    return out


def spend(s: Session, now: float) -> tuple[float, float]:
    """Spent so far on everything recorded, and the hourly rate of what still exists."""
    rows = list(s.scalars(select(CloudResource)))
    return (sum(cost(r, now) for r in rows),
            sum(r.price_per_hour for r in rows if r.ended_at is None))


def _machine(rows: list[CloudResource], name: str, at: float) -> CloudResource | None:
    return next((r for r in rows if r.kind == "instance" and r.name == name
                 and r.created_at <= at and (r.ended_at is None or at <= r.ended_at)), None)


def report(s: Session, now: float) -> CostReport:
    rows = list(s.scalars(select(CloudResource).order_by(CloudResource.created_at)))
    out = CostReport()
    per_day: dict[str, float] = defaultdict(float)
    for row in rows:
        out.per_resource[f"{row.name} ({row.id})"] = cost(row, now)
        for day, amount in _days(row, now).items():
            per_day[day] += amount
    out.total = sum(out.per_resource.values())
    out.per_day = dict(sorted(per_day.items()))
    jobs = s.execute(select(Job.id, User.name, Worker.name, Job.started_at, Job.finished_at)
                     .join(User, User.id == Job.user_id).join(Worker, Worker.id == Job.worker_id)
                     .where(Job.started_at.is_not(None), Job.finished_at.is_not(None)))
    per_user: dict[str, float] = defaultdict(float)
    seconds: dict[str, float] = defaultdict(float)
    for job_id, user, worker, started, finished in jobs:
        machine = _machine(rows, worker, started)
        if machine is None:  # ran on a machine we did not rent (e.g. a local GPU)
            continue
        out.per_job[job_id] = (finished - started) * machine.price_per_hour / 3600
        per_user[user] += out.per_job[job_id]
        seconds[user] += finished - started
    out.per_user, out.gpu_seconds = dict(per_user), dict(seconds)
    return out
