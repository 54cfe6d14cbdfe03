"""What the organiser's dashboard shows, read in one pass: health, queue, workers, users,
templates and announcements. Times are Unix seconds; the page shows them as a person reads
them ("12 s ago") and keeps them current on its own clock, so the hub sends a new view only
when something changed (or every TICK, for what time alone changes: a worker going offline).
"""

from __future__ import annotations

import datetime
import shutil
import time
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from comfymulti import __version__
from comfymulti.db import transaction
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import announcements, templates
from comfymulti.models import ApiToken, Job, LoginSession, User, Worker
from comfymulti.queue import fleet, store
from comfymulti.queue.jobs import HELD, JobState

# Longest a dashboard goes without a fresh view: workers go offline by time alone.
TICK = 10.0


def _midnight(now: float) -> float:
    """Start of today in the hub's local time: 'today' in the panels."""
    day = datetime.datetime.fromtimestamp(now).date()
    return datetime.datetime.combine(day, datetime.time()).timestamp()


def snapshot(hub: HubContext) -> dict[str, Any]:
    """The whole view (in a thread: it reads the database and the disk)."""
    now = time.time()
    order = hub.queue.order()
    etas = hub.queue.etas()
    today = _midnight(now)
    window = hub.online_window
    with transaction(hub.factory) as s:
        names = dict(s.execute(select(User.id, User.name)).all())
        workers = list(s.scalars(select(Worker).order_by(Worker.name)))
        held = list(s.scalars(select(Job).where(Job.state.in_([str(x) for x in HELD]))
                              .order_by(Job.leased_at)))
        queued_at = dict(s.execute(select(Job.id, Job.created_at)
                                   .where(Job.state == str(JobState.QUEUED))).all())
        health = _health(hub, s, workers, queued_at, now)
        if not health["workers_online"]:
            etas = {}  # no GPU to run anything: an ETA would be a guess
        view = {
            "now": now,
            "health": health,
            "queue": _queue(names, workers, held, order, etas, queued_at),
            "workers": _workers(s, workers, held, names, window, today, now),
            "users": _users(s, today),
            "announcements": announcements.recent(s),
        }
    view["templates"] = {
        "default": templates.default_workflow(hub.settings),
        "items": [{"name": t.name, "title": t.title, "description": t.description,
                   "thumbnail": t.thumbnail is not None}
                  for t in templates.describe(hub.settings)]}
    return view


def _health(hub: HubContext, s: Session, workers: list[Worker], queued_at: dict[str, float],
            now: float) -> dict[str, Any]:
    return {
        "version": __version__,
        "database": "ok",  # the reads above went through
        "disk_free": shutil.disk_usage(hub.settings.data_dir).free,
        "workers_online": sum(fleet.is_online(w, hub.online_window, now) for w in workers),
        "queue_depth": len(queued_at),
        "oldest_waiting": min(queued_at.values(), default=None),
        "policy": str(store.get_policy(s, hub.settings.queue.policy)),
        "paused": store.dispatch_paused(s),
        "backup_age": None,  # filled by the backup step
        "billing": None,  # filled by the cloud step
    }


def _queue(names: dict[int, str], workers: list[Worker], held: list[Job],
           order: list[Any], etas: dict[str, tuple[int, float]],
           queued_at: dict[str, float]) -> list[dict[str, Any]]:
    """Running (and leased) jobs first, then the waiting ones in expected run order."""
    worker_names = {w.id: w.name for w in workers}
    rows = [{"id": j.id, "user": names.get(j.user_id), "state": j.state, "position": None,
             "eta_seconds": None, "worker": worker_names.get(j.worker_id or ""),
             "created_at": j.created_at, "cancel_requested": j.cancel_requested}
            for j in held]
    for position, c in enumerate(order, 1):
        rows.append({"id": c.job_id, "user": names.get(c.user_id), "state": "queued",
                     "position": position, "eta_seconds": round(etas[c.job_id][1], 1)
                     if c.job_id in etas else None, "worker": None,
                     "created_at": queued_at.get(c.job_id), "cancel_requested": False})
    return rows


def _workers(s: Session, workers: list[Worker], held: list[Job], names: dict[int, str],
             window: float, today: float, now: float) -> list[dict[str, Any]]:
    done = dict(s.execute(select(Job.worker_id, func.count()).where(
        Job.state == str(JobState.SUCCEEDED), Job.finished_at >= today)
        .group_by(Job.worker_id)).all())
    current = {j.worker_id: {"id": j.id, "user": names.get(j.user_id)} for j in held}
    return [{"id": w.id, "name": w.name, "gpu": w.gpu, "vram_total": w.vram_total,
             "state": fleet.state(w, window, now), "last_seen": w.last_seen,
             "current_job": current.get(w.id), "jobs_today": done.get(w.id, 0),
             "draining": w.draining} for w in workers]


def _users(s: Session, today: float) -> list[dict[str, Any]]:
    jobs = {uid: (last, n_today or 0, gpu or 0.0) for uid, last, n_today, gpu in s.execute(
        select(Job.user_id, func.max(Job.created_at),
               func.sum(case((Job.created_at >= today, 1), else_=0)),
               func.sum(Job.finished_at - Job.started_at))
        .group_by(Job.user_id))}
    seen = dict(s.execute(select(LoginSession.user_id, func.max(LoginSession.last_used_at))
                          .group_by(LoginSession.user_id)).all())
    tokens = dict(s.execute(select(ApiToken.user_id, func.count())
                            .where(ApiToken.revoked_at.is_(None))
                            .group_by(ApiToken.user_id)).all())
    rows = []
    for u in s.scalars(select(User).order_by(User.name)):
        last_job, jobs_today, gpu = jobs.get(u.id, (None, 0, 0.0))
        activity = [t for t in (last_job, seen.get(u.id)) if t is not None]
        rows.append({"name": u.name, "role": u.role, "disabled": u.disabled,
                     "last_activity": max(activity, default=None), "jobs_today": jobs_today,
                     "gpu_seconds": round(gpu, 1), "tokens": tokens.get(u.id, 0)})
    return rows
