"""Lifecycle commands build a plan of named steps, show it, then (with --yes) run it.

Each step finds by name what already exists before creating anything, so running a plan again
after a crash finishes the work instead of duplicating it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from comfymulti.config import CloudSettings, Settings
from comfymulti.errors import CloudError, ComfyMultiError, InvalidInput
from comfymulti.ops.cloud.verda import Verda

T = TypeVar("T")


@dataclass
class Cloud:
    """Everything a lifecycle step needs: settings, the provider, the hub DB, a voice."""

    settings: Settings
    verda: Verda
    factory: sessionmaker[Session]
    say: Callable[[str], None]

    @property
    def cfg(self) -> CloudSettings:
        return self.settings.cloud

    def wait_for(self, what: str, check: Callable[[], T | None], minutes: float) -> T:
        """Poll `check` until it gives a value; CloudError naming `what` after `minutes`."""
        deadline = time.monotonic() + minutes * 60
        while (value := check()) is None:
            if time.monotonic() > deadline:
                raise CloudError(f"gave up waiting {minutes:g} min for {what}; rerun the "
                                 "command to keep waiting (nothing is created twice)")
            time.sleep(self.cfg.poll_seconds)
        return value


@dataclass
class Step:
    text: str
    run: Callable[[], None]


@dataclass
class Plan:
    title: str
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, text: str, run: Callable[[], None]) -> None:
        self.steps.append(Step(text, run))

    def lines(self) -> list[str]:
        body = [f"  {n}. {s.text}" for n, s in enumerate(self.steps, 1)] or ["  nothing to do"]
        return [f"Plan: {self.title}", *body, *self.notes]


def carry_out(plan: Plan, dry_run: bool, yes: bool, say: Callable[[str], None]) -> float:
    """Show the plan; run it if allowed. Returns the seconds it took."""
    for line in plan.lines():
        say(line)
    if dry_run or not plan.steps:
        return 0.0
    if not yes:
        raise InvalidInput("nothing done: add --yes to carry out this plan (or --dry-run to "
                           "only show it)")
    started = time.monotonic()
    for n, step in enumerate(plan.steps, 1):
        say(f"[{n}/{len(plan.steps)}] {step.text}")
        try:
            step.run()
        except ComfyMultiError:
            say(f"Stopped at step {n}; steps before it are done and what they made is recorded "
                "('comfymulti cloud status' shows what bills). Rerun to finish.")
            raise
    return time.monotonic() - started
