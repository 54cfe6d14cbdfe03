"""Job states and the transitions allowed between them."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
HELD = frozenset({JobState.LEASED, JobState.RUNNING})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.LEASED, JobState.CANCELLED, JobState.FAILED}),
    # A lease that expires or is released puts the job back in the queue.
    JobState.LEASED: frozenset(
        {JobState.RUNNING, JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED,
         JobState.CANCELLED}
    ),
    JobState.RUNNING: frozenset(
        {JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class Role(StrEnum):
    PARTICIPANT = "participant"
    INSTRUCTOR = "instructor"
    ADMIN = "admin"


# Default explicit priority by role, used by the `priority` policy.
ROLE_PRIORITY = {Role.PARTICIPANT: 0, Role.INSTRUCTOR: 10, Role.ADMIN: 10}


class Policy(StrEnum):
    """How the queue orders participants' jobs. The one list: the config, the CLI, the admin
    API, metrics and the scheduler all take their choices from here."""

    FIFO = "fifo"
    FAIR = "fair"
    PRIORITY = "priority"

    @property
    def help(self) -> str:
        return _POLICY_HELP[self]


_POLICY_HELP = {
    Policy.FIFO: "submission order",
    Policy.FAIR: "round-robin between users with queued work, oldest job of each",
    Policy.PRIORITY: "explicit priority (instructors higher), submission order within",
}


def policy_choices() -> str:
    return " | ".join(f"{p} ({p.help})" for p in Policy)


class CancelOutcome(StrEnum):
    """What a cancel did."""

    CANCELLED = "cancelled"  # it was queued: gone now
    REQUESTED = "requested"  # it was held: the worker is told and interrupts ComfyUI
    FINAL = "final"  # it had ended already: nothing changed


class IllegalTransition(RuntimeError):
    """A state change the transitions table does not allow: a bug in the caller, never input."""
