"""kill -9 in the middle of day-start, then a rerun: it finishes the day instead of paying for
a second machine, and every volume at the provider is one we recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import select

from comfymulti.db import transaction
from comfymulti.models import CloudResource
from comfymulti.ops.cloud.season import season_start
from tests.ops.cloud.conftest import Site


def test_kill_9_between_create_and_record_then_rerun_duplicates_nothing(site: Site) -> None:
    site.do(season_start)
    # The instance is created, but its first read hangs: the process dies before it records it.
    site.fake.slow("GET", "/instances/.+", 30.0)
    proc = subprocess.Popen([sys.executable, "-m", "comfymulti", "cloud", "day-start",
                             "--gpus", "2", "--yes"], env=site.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while ("POST", "/instances", 202) not in site.fake.calls:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    with transaction(site.factory) as s:
        assert s.scalar(select(CloudResource).where(CloudResource.kind == "instance")) is None
    site.fake.faults.clear()

    r = subprocess.run([sys.executable, "-m", "comfymulti", "cloud", "day-start", "--gpus", "2",
                        "--yes"], env=site.env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Day started in" in r.stdout
    hosts = sorted(i["hostname"] for i in site.fake.live_instances())
    assert hosts == ["comfymulti-gpu-1", "comfymulti-gpu-2"]
    assert len(site.fake.instances) == 2  # ever created: no duplicate, none discarded
    with transaction(site.factory) as s:
        recorded = set(s.scalars(select(CloudResource.id)))
    assert {v["id"] for v in site.fake.live_volumes()} <= recorded
    assert {i["id"] for i in site.fake.live_instances()} <= recorded
    scratch = sorted(v["name"] for v in site.fake.live_volumes() if "scratch" in v["name"])
    assert scratch == ["comfymulti-scratch-1", "comfymulti-scratch-2"]
