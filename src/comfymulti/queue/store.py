"""The only code that writes job rows (and their events and output records).

Every state change is a conditional UPDATE on (id, expected states[, lease]) that must hit
exactly one row; otherwise the caller gets Conflict/LeaseLost and nothing changed. Each change
is written to job_events and logged with an action name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, Update, delete, func, insert, select, update
from sqlalchemy.orm import Session

from comfymulti.db import insert_new, insert_new_rows
from comfymulti.errors import Conflict, InvalidInput, LeaseLost, NotFound
from comfymulti.models import HubState, Job, JobEvent, Output, User
from comfymulti.queue.jobs import (
    HELD,
    TERMINAL,
    TRANSITIONS,
    CancelOutcome,
    IllegalTransition,
    JobState,
    Policy,
)
from comfymulti.queue.scheduler import Candidate

log = logging.getLogger("comfymulti.queue")

# Events are written through the table, not the ORM class: no event object is ever needed
# back, and Core statements given their rows as parameters are compiled once.
_EVENTS: Table = JobEvent.__table__  # type: ignore[assignment]


def _events(s: Session, job_id: str, attempt: int,
            rows: Sequence[tuple[int | None, str, dict[str, Any]]], now: float) -> None:
    """Job events (seq, type, data) of one attempt, with a statement compiled once (rows
    given to `.values()` were compiled afresh for every report: a third of the report
    writer's CPU time)."""
    s.execute(insert(_EVENTS), _event_rows(job_id, attempt, rows, now))


def _event_rows(job_id: str, attempt: int,
                rows: Sequence[tuple[int | None, str, dict[str, Any]]], now: float
                ) -> list[dict[str, Any]]:
    return [{"job_id": job_id, "attempt": attempt, "seq": seq, "type": type_,
             "data": json.dumps(data), "created_at": now} for seq, type_, data in rows]


def _event(s: Session, job: Job | str, attempt: int, type_: str, data: dict[str, Any],
           now: float) -> None:
    _events(s, job if isinstance(job, str) else job.id, attempt, [(None, type_, data)], now)


def _transition(
    s: Session,
    job_id: str,
    from_states: Iterable[JobState],
    to: JobState,
    *,
    now: float,
    reason: str,
    lease_id: str | None = None,
    worker_id: str | None = None,
    values: dict[str, Any] | None = None,
) -> Job:
    """Move one job from one of `from_states` to `to`, or raise without changing anything.
    With `lease_id` (and `worker_id`) the move happens only under that lease."""
    from_states = frozenset(from_states)
    bad = sorted(str(f) for f in from_states if to not in TRANSITIONS[f])
    if bad:
        raise IllegalTransition(f"job {job_id}: {', '.join(bad)} -> {to} is not allowed")
    stmt = update(Job).where(Job.id == job_id, Job.state.in_([str(f) for f in from_states]))
    if lease_id is not None:
        stmt = stmt.where(Job.lease_id == lease_id)
    if worker_id is not None:
        stmt = stmt.where(Job.worker_id == worker_id)
    job = _updated(s, stmt.values(state=str(to), **(values or {})))
    if job is None:
        job = s.scalar(select(Job).where(Job.id == job_id))
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if (lease_id is not None and job.lease_id != lease_id) or (
                worker_id is not None and job.worker_id != worker_id):
            raise LeaseLost(f"job {job_id}: lease is no longer held", state=job.state)
        raise Conflict(f"job {job_id} is {job.state}, cannot become {to}", state=job.state)
    _event(s, job, job.attempts, "state", {"to": str(to), "reason": reason}, now)
    log.info("job %s -> %s", job_id, to, extra={"action": f"job_{to}", "reason": reason})
    return job


def _updated(s: Session, stmt: Update) -> Job | None:
    """Run an UPDATE of at most one job and return the job as it is now (None if no row
    matched), in one statement: the GPU workers' reports are written one after another by one
    thread, and each statement is a wait for the GIL there (load bench: ~20 ms per report)."""
    return s.scalars(stmt.returning(Job), execution_options={
        "synchronize_session": False, "populate_existing": True}).one_or_none()


# --- submit and read -------------------------------------------------------------------------

def insert_job(s: Session, *, job_id: str, user: User, prompt: dict[str, Any],
               extra_data: dict[str, Any], client_id: str, priority: int, instructor: bool,
               requirements: str, now: float) -> Job:
    job = Job(id=job_id, user_id=user.id, state=str(JobState.QUEUED),
              prompt=json.dumps(prompt), extra_data=json.dumps(extra_data),
              client_id=client_id, priority=priority, instructor=instructor,
              requirements=requirements, created_at=now, attempts=0,
              cancel_requested=False, outputs="{}")
    s.add(job)
    s.flush()
    _event(s, job, 0, "state", {"to": "queued", "reason": "submitted"}, now)
    return job


def job_exists(s: Session, job_id: str) -> bool:
    return s.scalar(select(Job.seq).where(Job.id == job_id)) is not None


def count_queued(s: Session, user_id: int | None = None) -> int:
    stmt = select(func.count()).select_from(Job).where(Job.state == str(JobState.QUEUED))
    if user_id is not None:
        stmt = stmt.where(Job.user_id == user_id)
    return s.scalar(stmt) or 0


def count_unfinished(s: Session, user_ids: list[int]) -> dict[int, int]:
    """Each user's jobs not finished yet (what ComfyUI shows as 'queue_remaining')."""
    counts = dict.fromkeys(user_ids, 0)
    rows = s.execute(select(Job.user_id, func.count()).where(
        Job.user_id.in_(user_ids), Job.state.in_([str(x) for x in (JobState.QUEUED, *HELD)]))
        .group_by(Job.user_id))
    counts.update({user_id: n for user_id, n in rows})
    return counts


def counts_by_state(s: Session) -> dict[str, int]:
    rows = s.execute(select(Job.state, func.count()).group_by(Job.state))
    counts = dict.fromkeys((str(st) for st in JobState), 0)
    counts.update({state: n for state, n in rows})
    return counts


def queued_candidates(s: Session) -> tuple[list[Candidate], dict[int, int]]:
    """The queued jobs, and when each of their owners was last served (the fair policy's
    turn), in one query: every dispatch asks, and users with nothing queued do not matter."""
    rows = s.execute(
        select(Job.seq, Job.id, Job.user_id, Job.priority, Job.instructor, Job.run_next_at,
               Job.requirements, User.last_dispatch)
        .join(User, User.id == Job.user_id)
        .where(Job.state == str(JobState.QUEUED))
    ).all()
    return [Candidate(*row[:-1]) for row in rows], {row[2]: row[-1] for row in rows}


def dispatch_tick(s: Session) -> int:
    """The last dispatch tick handed out: a user's turn in the fair order is the tick of
    the last job of theirs that was leased."""
    return int(get_state(s, "dispatch_counter") or 0)


def set_dispatch_tick(s: Session, tick: int) -> None:
    set_state(s, "dispatch_counter", str(tick))


def get_policy(s: Session, default: Policy) -> Policy:
    """The policy set at run time (CLI or admin), else `default` (the configured one)."""
    value = get_state(s, "policy")
    return Policy(value) if value in set(map(str, Policy)) else default


def set_policy(s: Session, policy: str) -> Policy:
    """Switch the scheduling policy; InvalidInput for a name that is not a Policy."""
    try:
        chosen = Policy(policy)
    except ValueError:
        raise InvalidInput(f"unknown policy {policy!r}; use "
                           f"{', '.join(map(str, Policy))}") from None
    set_state(s, "policy", str(chosen))
    log.info("scheduling policy is now %s", chosen, extra={"action": "set_policy"})
    return chosen


def dispatch_paused(s: Session) -> bool:
    """Paused by the organiser: no job is leased until resumed (running ones go on)."""
    return get_state(s, "dispatch_paused") == "1"


def set_dispatch_paused(s: Session, paused: bool) -> None:
    set_state(s, "dispatch_paused", "1" if paused else "0")
    log.info("dispatch %s", "paused" if paused else "resumed",
             extra={"action": "pause_dispatch" if paused else "resume_dispatch"})


def get_state(s: Session, key: str) -> str | None:
    row = s.get(HubState, key)
    return row.value if row else None


def set_state(s: Session, key: str, value: str) -> None:
    """Upsert: two threads setting a fact the first time must not collide."""
    insert_new(s, HubState, key=key, value=value)
    s.execute(update(HubState).where(HubState.key == key).values(value=value))


# --- leases ----------------------------------------------------------------------------------

def lease(s: Session, job: Candidate, *, worker_id: str, lease_id: str, expires_at: float,
          now: float, tick: int) -> Job:
    """Lease `job` to the worker at dispatch `tick` (its owner's turn; the caller moves the
    counter on, once for all the leases of a pass)."""
    leased = _transition(
        s, job.job_id, [JobState.QUEUED], JobState.LEASED, now=now, reason=f"worker {worker_id}",
        values={"worker_id": worker_id, "lease_id": lease_id, "lease_expires_at": expires_at,
                "leased_at": now, "attempts": Job.attempts + 1},
    )
    s.execute(update(User).where(User.id == job.user_id).values(last_dispatch=tick))
    return leased


def renew(s: Session, job_id: str, lease_id: str, expires_at: float,
          worker_id: str | None = None) -> Job:
    """Extend a lease still held (by `worker_id`, when given), or LeaseLost."""
    stmt = update(Job).where(Job.id == job_id, Job.lease_id == lease_id,
                             Job.state.in_([str(st) for st in HELD]))
    if worker_id is not None:
        stmt = stmt.where(Job.worker_id == worker_id)
    job = _updated(s, stmt.values(lease_expires_at=expires_at))
    if job is None:
        if not job_exists(s, job_id):
            raise NotFound(f"job {job_id} not found")
        raise LeaseLost(f"job {job_id}: lease is no longer held")
    return job


def held_job(s: Session, job_id: str, lease_id: str, worker_id: str | None = None) -> Job:
    """The job if `lease_id` (of `worker_id`, when given) still holds it, else LeaseLost."""
    job = s.scalar(select(Job).where(Job.id == job_id))
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if job.lease_id != lease_id or job.state not in HELD or (
            worker_id is not None and job.worker_id != worker_id):
        raise LeaseLost(f"job {job_id}: lease is no longer held", state=job.state)
    return job


def mark_running(s: Session, job_id: str, lease_id: str, now: float) -> Job:
    return _transition(s, job_id, [JobState.LEASED], JobState.RUNNING, now=now,
                       reason="execution started", lease_id=lease_id,
                       values={"started_at": now})


def finish(s: Session, job_id: str, lease_id: str, to: JobState, *, now: float, reason: str,
           error: dict[str, Any] | None = None, worker_id: str | None = None) -> Job:
    return _transition(
        s, job_id, HELD, to, now=now, reason=reason, lease_id=lease_id, worker_id=worker_id,
        values={"finished_at": now, "lease_id": None, "lease_expires_at": None,
                "error": json.dumps(error) if error else None},
    )


def requeue(s: Session, job_id: str, *, now: float, reason: str, lease_id: str | None = None,
            count_attempt: bool = True) -> Job:
    """Back to the queue; outputs of the abandoned attempt are forgotten (files removed by
    the caller), so a retry never stores an output twice."""
    values: dict[str, Any] = {"worker_id": None, "lease_id": None, "lease_expires_at": None,
                              "started_at": None, "outputs": "{}"}
    if not count_attempt:
        values["attempts"] = Job.attempts - 1
    return _transition(s, job_id, HELD, JobState.QUEUED, now=now, reason=reason,
                       lease_id=lease_id, values=values)


def expired(s: Session, now: float) -> list[Job]:
    return list(s.scalars(
        select(Job).where(Job.state.in_([str(st) for st in HELD]), Job.lease_expires_at < now)
    ))


def extend_all_leases(s: Session, until: float) -> int:
    """After a hub restart: give every held lease time for its worker to reconnect."""
    result = s.execute(
        update(Job)
        .where(Job.state.in_([str(st) for st in HELD]), Job.lease_expires_at < until)
        .values(lease_expires_at=until)
    )
    return result.rowcount  # type: ignore[attr-defined,no-any-return]


# --- user and admin actions ------------------------------------------------------------------

def cancel(s: Session, job: Job, now: float, reason: str) -> CancelOutcome:
    if job.state in TERMINAL:
        return CancelOutcome.FINAL
    if job.state == JobState.QUEUED:
        _transition(s, job.id, [JobState.QUEUED], JobState.CANCELLED, now=now, reason=reason,
                    values={"finished_at": now})
        return CancelOutcome.CANCELLED
    s.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True))
    _event(s, job, job.attempts, "cancel_requested", {"reason": reason}, now)
    return CancelOutcome.REQUESTED


def _delete_jobs(s: Session, job_ids: list[str]) -> None:
    """Jobs with their events and output records (the files themselves stay)."""
    if job_ids:
        s.execute(delete(JobEvent).where(JobEvent.job_id.in_(job_ids)))
        s.execute(delete(Output).where(Output.job_id.in_(job_ids)))
        s.execute(delete(Job).where(Job.id.in_(job_ids)))


def delete_finished(s: Session, user_id: int, job_ids: list[str] | None) -> int:
    """Remove finished jobs of one user from history (all of them with None)."""
    stmt = select(Job.id).where(Job.user_id == user_id,
                                Job.state.in_([str(t) for t in TERMINAL]))
    if job_ids is not None:
        stmt = stmt.where(Job.id.in_(job_ids))
    ids = list(s.scalars(stmt))
    _delete_jobs(s, ids)
    return len(ids)


def delete_user_jobs(s: Session, user_id: int) -> list[str]:
    """Every job of a user, for an account being deleted. Returns the workers that held one:
    their next renew reports the lease lost and they stop the job."""
    rows = s.execute(select(Job.id, Job.worker_id, Job.state).where(Job.user_id == user_id))
    ids, workers = [], []
    for job_id, worker_id, state in rows:
        ids.append(job_id)
        if state in HELD and worker_id:
            workers.append(worker_id)
    _delete_jobs(s, ids)
    return workers


def set_run_next(s: Session, job: Job, now: float) -> None:
    if job.state != JobState.QUEUED:
        raise Conflict(f"job {job.id} is {job.state}; only queued jobs can be moved")
    job.run_next_at = now
    _event(s, job, job.attempts, "run_next", {}, now)


# --- events and outputs ----------------------------------------------------------------------

def add_worker_events(s: Session, job: Job, events: list[tuple[int, str, dict[str, Any]]],
                      now: float) -> set[int]:
    """Store relayed events (seq, type, data) of the job's current attempt; returns the seqs
    stored now (those this attempt delivered before are left out: retries resend them)."""
    if not events:
        return set()
    return insert_new_rows(s, _EVENTS, _event_rows(job.id, job.attempts, events, now),
                           returning=_EVENTS.c.seq)


def set_outputs(s: Session, job: Job, outputs: dict[str, Any]) -> None:
    job.outputs = json.dumps(outputs)


def add_output(s: Session, job: Job, output: Output) -> Output:
    s.add(output)
    return output


def remove_outputs(s: Session, job_id: str, attempt: int) -> list[Output]:
    """Forget what one attempt delivered; the caller removes the files."""
    rows = attempt_outputs(s, job_id, attempt)
    for row in rows:
        s.delete(row)
    return rows


def find_output(s: Session, job_id: str, attempt: int, key: str) -> Output | None:
    return s.scalar(select(Output).where(Output.job_id == job_id, Output.attempt == attempt,
                                         Output.key == key))


def attempt_outputs(s: Session, job_id: str, attempt: int) -> list[Output]:
    return list(s.scalars(select(Output).where(Output.job_id == job_id,
                                               Output.attempt == attempt)))
