"""/health, /metrics, the admin API, and cancel reaching the worker."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from comfymulti.queue.jobs import Role
from comfymulti.worker.hub_client import HubClient
from tests.conftest import simple_prompt, tiny_catalog


def test_health_and_metrics_are_public(hub) -> None:
    harness, client = hub
    harness.user("u1")
    client.post("/api/v1/jobs", json={"prompt": simple_prompt()}, headers=harness.bearer("u1"))
    health = client.get("/health").json()
    health.pop("backups")  # tests/hub/test_backup_health.py
    assert health == {"status": "ok", "db": "ok", "workers_online": 0, "queue_depth": 1}
    text = client.get("/metrics").text
    assert 'comfymulti_jobs{state="queued"} 1.0' in text
    assert 'comfymulti_dispatch_total{policy="fair"} 0.0' in text
    assert "comfymulti_job_wait_seconds_bucket" in text
    assert "comfymulti_workers_online 0.0" in text


def test_admin_routes_need_admin(hub) -> None:
    harness, client = hub
    harness.user("u1")
    harness.user("boss", Role.ADMIN)
    for method, path in [("get", "/admin/api/queue"), ("get", "/admin/api/jobs"),
                         ("put", "/admin/api/policy"), ("get", "/admin/api/workers"),
                         ("get", "/admin/api/users")]:
        assert getattr(client, method)(path).status_code == 401
        assert getattr(client, method)(path, headers=harness.bearer("u1")).status_code == 403
    admin = harness.bearer("boss")
    assert client.put("/admin/api/policy", json={"policy": "fifo"},
                      headers=admin).json() == {"policy": "fifo"}
    r = client.put("/admin/api/policy", json={"policy": "random"}, headers=admin)
    assert r.status_code == 400 and "policy" in r.json()["error"]["message"]
    ids = [client.post("/api/v1/jobs", json={"prompt": simple_prompt()},
                       headers=harness.bearer("u1")).json()["id"] for _ in range(3)]
    assert client.post(f"/admin/api/jobs/{ids[2]}/run-next", headers=admin).status_code == 200
    queue = client.get("/admin/api/queue", headers=admin).json()
    first = queue["queued"][0]
    assert (first["id"], first["user"], first["position"]) == (ids[2], "u1", 1)
    assert first["eta_seconds"] > 0
    assert client.post(f"/admin/api/jobs/{ids[0]}/cancel",
                       headers=admin).json() == {"outcome": "cancelled"}
    assert client.get("/admin/api/queue", headers=admin).json()["counts"]["cancelled"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cancel_of_a_running_job_reaches_the_worker_within_a_second(live_hub,
                                                                           anyio_backend) -> None:
    harness, url = live_hub()
    harness.user("u1")
    headers = harness.bearer("u1")
    client = HubClient(url, harness.worker_token())
    await client.register("w", tiny_catalog())
    async with httpx.AsyncClient(base_url=url, headers=headers) as c:
        job_id = (await c.post("/api/v1/jobs", json={"prompt": simple_prompt()})).json()["id"]
        job = await client.lease(wait=0)
        assert job is not None
        await client.events(job.job_id, job.lease_id,
                            [{"seq": 0, "type": "execution_start", "data": {}}])
        first = await client.commands(wait=0)
        known = json.dumps(first.model_dump(), sort_keys=True)
        waiting = asyncio.create_task(client.commands(wait=20, known=known))
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        assert (await c.post(f"/api/v1/jobs/{job_id}/cancel")).json() == {
            "outcome": "requested"}
        commands = await waiting
        elapsed = time.monotonic() - t0
        assert commands.cancel == [job_id] and elapsed < 1.0
        renewed = await client.renew({job.job_id: job.lease_id})
        assert renewed.cancel == [job_id]
        assert await client.complete(job.job_id, job.lease_id, "interrupted") == "cancelled"
        assert (await client.commands(wait=0)).cancel == []
        # Drain: the worker is told, and gets no new work.
        await c.post("/api/v1/jobs", json={"prompt": simple_prompt()})
        await client.drain()
        assert (await client.commands(wait=0)).drain is True
        assert await client.lease(wait=0) is None
    await client.aclose()
