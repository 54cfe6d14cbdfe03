"""The autopilot: the policy as a table, then the hub acting on it against the test server."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from comfymulti.config import CloudSettings
from comfymulti.db import transaction
from comfymulti.errors import ConfigError
from comfymulti.hub.app import create_app
from comfymulti.models import Job
from comfymulti.ops.cloud.auto import Autopilot, Decision, Facts, decide
from comfymulti.ops.cloud.season import season_start
from tests.ops.cloud.conftest import Site, add_job

CFG = CloudSettings(day_start="09:00", day_end="17:00", idle_minutes=20, max_gpus=3,
                    scale_up_minutes=10, day_gpus=2)
IDLE = Facts(datetime(2026, 12, 2, 10, 0), gpus=1, queued=0, held=0, backlog_minutes=0,
             idle_minutes=30, started_today=True)


@pytest.mark.parametrize(("facts", "expected"), [
    (replace(IDLE, gpus=0, started_today=False), ("day-start", 2)),
    (replace(IDLE, gpus=0, started_today=True), None),  # someone ended it by hand today
    (replace(IDLE, gpus=0, started_today=False, now=datetime(2026, 12, 2, 8, 59)), None),
    (replace(IDLE, now=datetime(2026, 12, 2, 17, 30)), ("day-end", 0)),
    (replace(IDLE, now=datetime(2026, 12, 2, 17, 30), idle_minutes=5), None),
    (replace(IDLE, now=datetime(2026, 12, 2, 17, 30), queued=1, idle_minutes=0), None),
    (replace(IDLE, queued=9, idle_minutes=0, backlog_minutes=25), ("scale", 2)),
    (replace(IDLE, gpus=3, queued=9, idle_minutes=0, backlog_minutes=25), None),  # max_gpus
    (replace(IDLE, gpus=3), ("scale", 1)),  # idle extra GPUs go
    (IDLE, None),
])
def test_the_policy(facts: Facts, expected: tuple[str, int] | None) -> None:
    found = decide(CFG, facts)
    assert (None if found is None else (found.action, found.gpus)) == expected


def midday_zone() -> str:
    """A fixed-offset zone where it is about noon now, so no test hour crosses midnight."""
    offset = 12 - datetime.now(UTC).hour
    return f"Etc/GMT{-offset:+d}"


def test_the_autopilot_starts_scales_and_ends_a_day(site: Site,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    site.do(season_start)
    cfg = site.settings.cloud
    cfg.timezone, cfg.day_start, cfg.day_end = midday_zone(), "10:00", "15:00"
    cfg.scale_up_minutes, cfg.daily_budget = 1.0, 2.0
    now = time.time()
    pilot = Autopilot(site.cloud(), now=lambda: now)
    with caplog.at_level(logging.WARNING, "comfymulti.cloud.auto"):
        assert pilot.tick() is None
    assert "daily budget $2.00 would be passed" in caplog.text
    assert site.fake.live_instances() == []

    cfg.daily_budget = 0.0
    assert pilot.tick() == Decision("day-start", 1, "timetable: the day starts 10:00:00")
    assert [i["hostname"] for i in site.fake.live_instances()] == ["comfymulti-gpu-1"]
    jobs = [add_job(site.factory, "nobody", "queued", f"user{n}") for n in range(5)]
    assert pilot.tick() == Decision("scale", 2, "queue backlog 5 min")
    assert len(site.fake.live_instances()) == 2
    with transaction(site.factory) as s:
        s.execute(update(Job).where(Job.id.in_(jobs)).values(state="cancelled",
                                                             finished_at=now))
    later = now + 3.5 * 3600
    pilot = Autopilot(site.cloud(), now=lambda: later)
    decision = pilot.tick()
    assert decision is not None and decision.action == "day-end"
    assert site.fake.live_instances() == []
    assert pilot.tick() is None  # the day was started today: not started again


def test_the_hub_runs_the_autopilot_only_when_asked_and_with_credentials(site: Site) -> None:
    site.do(season_start)
    settings = site.settings.model_copy(deep=True)
    settings.cloud.auto, settings.cloud.auto_seconds = True, 0.05
    settings.cloud.timezone, settings.cloud.day_start, settings.cloud.day_end = (
        midday_zone(), "00:00", "23:59")
    no_keys = settings.model_copy(deep=True)
    no_keys.cloud.client_id = ""
    with pytest.raises(ConfigError, match="client_id and client_secret are not set"):
        create_app(no_keys)
    with TestClient(create_app(settings)):
        deadline = time.monotonic() + 30
        while not any(c[1] == "/scripts" for c in site.fake.calls) or \
                [i["status"] for i in site.fake.live_instances()] != ["running"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # the look finishes (the worker registered) before the hub stops
    assert [i["hostname"] for i in site.fake.live_instances()] == ["comfymulti-gpu-1"]
