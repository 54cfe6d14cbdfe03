"""Days and seasons against the Verda test server, backups on the real S3 server."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from comfymulti.db import transaction
from comfymulti.errors import CloudError
from comfymulti.hub.app import create_app
from comfymulti.models import CloudResource, Job, Worker
from comfymulti.ops.backup.backup import run_backup
from comfymulti.ops.backup.s3 import ObjectStore
from comfymulti.ops.cloud import costs
from comfymulti.ops.cloud.day import day_end, day_start, scale
from comfymulti.ops.cloud.season import season_end, season_start
from comfymulti.ops.cloud.status import status
from tests.ops.cloud.conftest import Site, add_job

DAY, NIGHT = 8 * 3600, 16 * 3600


def seed_models(site: Site) -> dict[str, bytes]:
    """Models backed up to R2 once; the SFS folder is then emptied (a new season's SFS)."""
    models = {"checkpoints/ltx-2.safetensors": os.urandom(300_000),
              "text_encoders/gemma.safetensors": os.urandom(200_000)}
    for rel, data in models.items():
        (site.sfs / "models" / rel).parent.mkdir(parents=True, exist_ok=True)
        (site.sfs / "models" / rel).write_bytes(data)
    run_backup(site.settings, "models", ObjectStore(site.settings.backup))
    shutil.rmtree(site.sfs)
    return models


def test_a_simulated_week_leaves_nothing_billing_and_costs_match_the_ledger(site: Site) -> None:
    models = seed_models(site)
    site.do(season_start)
    for rel, data in models.items():
        assert (site.sfs / "models" / rel).read_bytes() == data
    for _ in range(5):
        site.do(day_start, 2)
        live = site.fake.live_instances()
        assert sorted(i["hostname"] for i in live) == ["comfymulti-gpu-1", "comfymulti-gpu-2"]
        for inst in live:  # scratch and SFS attached, while it was offline, then started
            attached = {v["name"] for v in site.fake.live_volumes()
                        if v["instance_id"] == inst["id"] or {"id": inst["id"]} in v["instances"]}
            assert {f"comfymulti-scratch-{inst['hostname'][-1]}", "comfymulti-sfs"} <= attached
            assert inst["status"] == "running"
        site.fake.advance(DAY)
        site.do(day_end)
        assert site.fake.live_instances() == []
        assert {v["name"] for v in site.fake.live_volumes()} == {
            "comfymulti-sfs", "comfymulti-scratch-1", "comfymulti-scratch-2"}
        site.fake.advance(NIGHT)
    night = [line for line in site.said if line.startswith("Still billing after this: ")]
    assert len(night) == 5 and "comfymulti-sfs $0.0274/h" in night[0]
    assert night[0].endswith("; $0.88 per night (16 h)")  # (100 + 2 x 50 GB) x $0.20 / 730 x 16
    site.do(season_end)
    assert any(line.startswith("Bill: Verda storage $40.00/month -> $0; R2 keeps the backups ($")
               for line in site.said)

    assert site.fake.live_instances() == [] and site.fake.live_volumes() == []
    assert site.fake.billing() == []
    with transaction(site.factory) as s:
        report = costs.report(s, site.fake.now())
        rows = s.scalars(select(CloudResource)).all()
    assert len(rows) == 3 + 5 * 2 * 2  # SFS, 2 scratch; per day 2 instances + 2 OS disks
    assert all(r.ended_at is not None for r in rows)
    ledger = {c.resource_id: c.cost(site.fake.now()) for c in site.fake.ledger}
    ours = {key.split(" (")[1].rstrip(")"): amount for key, amount in report.per_resource.items()}
    assert ours.keys() == ledger.keys()
    for rid, amount in ledger.items():
        assert round(ours[rid], 2) == round(amount, 2), rid
    assert round(report.total, 2) == round(site.fake.billed(), 2)
    assert round(sum(report.per_day.values()), 2) == round(report.total, 2)
    by_name: dict[str, list[float]] = {}
    for charge in site.fake.ledger:
        pair = by_name.setdefault(charge.name, [0.0, 0.0])
        pair[0] += ours[charge.resource_id]
        pair[1] += ledger[charge.resource_id]
    print("\nresource | ours $ | ledger $")
    for name, (mine, theirs) in sorted(by_name.items()):
        print(f"{name} | {mine:.2f} | {theirs:.2f}")
    print(f"total | {report.total:.2f} | {site.fake.billed():.2f}")


def test_day_end_waits_for_a_running_job_and_prices_it(site: Site) -> None:
    seed_models(site)
    site.do(season_start)
    site.do(day_start, 1)
    job = add_job(site.factory, "comfymulti-gpu-1", "running")
    ended = threading.Thread(target=site.do, args=(day_end,))
    ended.start()
    time.sleep(1.0)
    assert ended.is_alive()
    assert [i["hostname"] for i in site.fake.live_instances()] == ["comfymulti-gpu-1"]
    with transaction(site.factory) as s:
        assert s.scalar(select(Worker.draining).where(Worker.name == "comfymulti-gpu-1"))
        row = s.scalar(select(Job).where(Job.id == job))
        row.state, row.finished_at = "succeeded", time.time()
    ended.join(30)
    assert not ended.is_alive()
    assert site.fake.live_instances() == []
    with transaction(site.factory) as s:
        report = costs.report(s, site.fake.now())
    assert report.per_job[job] > 0 and report.per_user["user001"] == report.per_job[job]


def test_day_end_with_a_failing_backup_deletes_nothing_and_says_why(site: Site) -> None:
    seed_models(site)
    site.do(season_start)
    site.do(day_start, 1)
    site.settings.backup.bucket = "no-such-bucket"
    with pytest.raises(CloudError) as caught:
        site.do(day_end)
    message = caught.value.message
    assert "backup 'node-state' failed" in message and "no instance was deleted" in message
    assert "\n" not in message
    assert [i["status"] for i in site.fake.live_instances()] == ["running"]
    assert "comfymulti-gpu-1" in {c.name for c in site.fake.billing()}


def test_season_end_refuses_while_a_model_is_not_in_r2_and_names_it(site: Site) -> None:
    seed_models(site)
    site.do(season_start)
    (site.sfs / "models/loras").mkdir()
    (site.sfs / "models/loras/new-style.safetensors").write_bytes(b"trained today")
    with pytest.raises(CloudError) as caught:
        site.do(season_end)
    assert "models/loras/new-style.safetensors" in caught.value.message
    assert "comfymulti-sfs" in {v["name"] for v in site.fake.live_volumes()}
    run_backup(site.settings, "models", ObjectStore(site.settings.backup))
    site.do(season_end)
    assert site.fake.live_volumes() == []


def test_status_tells_ours_orphans_and_others_and_warns_on_idle_billing(site: Site) -> None:
    seed_models(site)
    site.do(season_start)
    site.do(day_start, 1)
    verda = site.cloud().verda
    other = verda.create_instance("someone-else", "theirs", "1A100.22V", False, None)
    orphan = verda.create_volume("comfymulti-scratch-9", False, 10)  # ours by name, no record
    for _ in range(3):
        verda.instance(other.id)
    verda.action(other.id, "shutdown")
    site.fake.advance(3600)
    report = status(site.cloud())
    by_name = {r.name: r for r in report.resources}
    assert by_name["comfymulti-gpu-1"].owner == "ours" and by_name["comfymulti-gpu-1"].warning == ""
    assert by_name["someone-else"].owner == "other"
    assert by_name["someone-else"].warning.startswith("STOPPED BUT BILLED")
    assert by_name["comfymulti-scratch-9"].owner == "orphan"
    assert "BILLED WITH NO INSTANCE" in by_name["comfymulti-scratch-9"].warning
    assert 0 < by_name["comfymulti-gpu-1"].today <= by_name["comfymulti-gpu-1"].month
    assert report.per_hour == pytest.approx(
        sum(c.per_hour for c in site.fake.ledger if c.end is None))
    assert orphan.id not in {r.id for r in report.resources if r.owner == "ours"}


def test_scale_adds_a_gpu_then_drains_and_removes_the_extra_one(site: Site) -> None:
    seed_models(site)
    site.do(season_start)
    site.do(day_start, 1)
    site.do(scale, 2)
    assert sorted(i["hostname"] for i in site.fake.live_instances()) == [
        "comfymulti-gpu-1", "comfymulti-gpu-2"]
    site.do(scale, 1)
    assert [i["hostname"] for i in site.fake.live_instances()] == ["comfymulti-gpu-1"]
    with transaction(site.factory) as s:
        assert s.scalar(select(Worker.draining).where(Worker.name == "comfymulti-gpu-2"))
    assert "comfymulti-scratch-2" in {v["name"] for v in site.fake.live_volumes()}


def test_the_hub_metrics_show_what_we_spent_and_what_bills_per_hour(site: Site) -> None:
    seed_models(site)
    site.do(season_start)
    site.do(day_start, 1)
    with TestClient(create_app(site.settings)) as client:
        text = client.get("/metrics").text
    per_hour = float(text.split("\ncomfymulti_cloud_billing_dollars_per_hour ")[1].split()[0])
    assert per_hour == pytest.approx(sum(c.per_hour for c in site.fake.billing()))
    assert per_hour > 3.25  # the GPU, its OS disk, scratch and the SFS
    assert "\ncomfymulti_cloud_spent_dollars " in text
