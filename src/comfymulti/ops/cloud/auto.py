"""The autopilot ([cloud] auto = true): the hub starts and ends days by the timetable, ends an
idle day, and adds or removes GPUs by the queue's backlog, within max_gpus and the budget.

`decide` is the whole policy, a pure function of a few facts; `Autopilot.tick` gathers the facts,
and carries out the same plans the commands show (day-start refuses past the daily budget, and
that refusal is logged as the reason nothing started).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from datetime import time as clock
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from comfymulti.config import CloudSettings
from comfymulti.db import transaction
from comfymulti.errors import ComfyMultiError
from comfymulti.models import CloudResource, Job
from comfymulti.ops.cloud import state
from comfymulti.ops.cloud.day import day_end, day_start, our_instances, scale
from comfymulti.ops.cloud.plan import Cloud, carry_out
from comfymulti.queue import fleet
from comfymulti.queue.eta import Estimator
from comfymulti.queue.jobs import HELD, JobState

log = logging.getLogger("comfymulti.cloud.auto")


@dataclass(frozen=True)
class Facts:
    now: datetime  # in the timetable's zone
    gpus: int  # our instances that exist
    queued: int
    held: int  # leased or running
    backlog_minutes: float  # queued work spread over the online workers
    idle_minutes: float  # since the last job was submitted or finished (0 while busy)
    started_today: bool  # a day was already started today (a manual day-end is not undone)


@dataclass(frozen=True)
class Decision:
    action: str  # day-start | day-end | scale
    gpus: int
    why: str


def _at(value: str) -> clock | None:
    return clock(int(value[:2]), int(value[3:])) if value else None


def decide(cfg: CloudSettings, f: Facts) -> Decision | None:
    start, end = _at(cfg.day_start), _at(cfg.day_end)
    now = f.now.time()
    in_day = start is not None and end is not None and start <= now < end
    if f.gpus == 0:
        if in_day and not f.started_today:
            return Decision("day-start", cfg.day_gpus, f"timetable: the day starts {start}")
        return None
    idle = f.queued == 0 and f.held == 0 and f.idle_minutes >= cfg.idle_minutes
    if end is not None and not in_day and now >= end and idle:
        return Decision("day-end", 0, f"after {end} and idle {f.idle_minutes:.0f} min")
    if (cfg.scale_up_minutes and f.backlog_minutes > cfg.scale_up_minutes
            and f.gpus < cfg.max_gpus):
        return Decision("scale", f.gpus + 1, f"queue backlog {f.backlog_minutes:.0f} min")
    if f.gpus > 1 and f.queued == 0 and f.held < f.gpus and f.idle_minutes >= cfg.idle_minutes:
        wanted = max(1, f.held)
        return Decision("scale", wanted, f"{f.gpus - wanted} GPU(s) idle")
    return None


class Autopilot:
    """One look at a time; `now` is injectable so tests can stand at any hour."""

    def __init__(self, cloud: Cloud, now: Callable[[], float] = time.time) -> None:
        self.cloud, self._now = cloud, now

    def facts(self) -> Facts:
        c = self.cloud
        now = self._now()
        local = datetime.fromtimestamp(now, ZoneInfo(c.cfg.timezone))
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        gpus = len(our_instances(c))
        with transaction(c.factory) as s:
            queued = list(s.scalars(select(Job.requirements).where(
                Job.state == str(JobState.QUEUED))))
            held = s.scalar(select(func.count()).select_from(Job).where(
                Job.state.in_([str(x) for x in HELD]))) or 0
            last = s.scalar(select(func.max(func.coalesce(Job.finished_at, Job.created_at))))
            online = fleet.online_count(s, c.settings.queue.online_window)
            estimate = Estimator(s)
            started = s.scalar(select(func.count()).select_from(CloudResource).where(
                CloudResource.role == state.GPU, CloudResource.created_at >= midnight)) or 0
        backlog = sum(estimate.seconds(r) for r in queued) / max(1, online) / 60
        busy = bool(queued or held)
        idle = 0.0 if busy else (now - last) / 60 if last is not None else float("inf")
        return Facts(local, gpus, len(queued), held, backlog, idle, started > 0)

    def tick(self) -> Decision | None:
        """Look once and act; a refusal (budget, capacity, a failed backup) is logged."""
        c = self.cloud
        try:
            decision = decide(c.cfg, self.facts())
            if decision is None:
                return None
            log.info("autopilot: %s (%s)", decision.action, decision.why)
            if decision.action == "day-start":
                plan = day_start(c, decision.gpus)
            elif decision.action == "day-end":
                plan = day_end(c)
            else:
                plan = scale(c, decision.gpus)
            carry_out(plan, False, True, log.info)
            return decision
        except ComfyMultiError as exc:
            log.warning("autopilot: nothing done: %s", exc.message)
            return None
