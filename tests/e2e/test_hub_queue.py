"""Issue 2 acceptance over real HTTP: many workers, dead workers, a killed hub."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from comfymulti.db import make_engine, session_factory, transaction
from comfymulti.errors import LeaseLost
from comfymulti.models import Job, JobEvent, Output
from comfymulti.worker.hub_client import HubClient
from tests.conftest import free_port, simple_prompt, tiny_catalog, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EVENTS = ["execution_start", "executing", "progress", "executed", "execution_success"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _submit(url: str, headers: dict[str, str], n: int) -> list[str]:
    async with httpx.AsyncClient(base_url=url, headers=headers) as c:
        ids = []
        for _ in range(n):
            r = await c.post("/api/v1/jobs", json={"prompt": simple_prompt()})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        return ids


async def test_four_workers_drain_400_jobs_exactly_once(live_hub) -> None:
    harness, url = live_hub(queue={"max_queued_per_user": 1000})
    users = [harness.user(f"user{i:03d}") for i in range(1, 5)]
    ids: list[str] = []
    for name in users:
        ids += await _submit(url, harness.bearer(name), 100)
    token = harness.worker_token()
    done: dict[str, list[str]] = {}

    async def worker(name: str) -> None:
        client = HubClient(url, token)
        await client.register(name, tiny_catalog())
        while True:
            job = await client.lease(wait=0.5)
            if job is None:
                break
            evs = [{"seq": i, "type": t, "data": {"prompt_id": job.job_id, "i": i}}
                   for i, t in enumerate(EVENTS)]
            # Send in two batches, the second out of order: the hub must keep seq order.
            await client.events(job.job_id, job.lease_id, evs[:2])
            await client.events(job.job_id, job.lease_id, list(reversed(evs[2:])))
            await client.complete(job.job_id, job.lease_id, "success")
            done.setdefault(job.job_id, []).append(name)
        await client.aclose()

    await asyncio.gather(*(worker(f"w{i}") for i in range(4)))
    assert sorted(done) == sorted(ids)
    assert all(len(ws) == 1 for ws in done.values()), "a job was run twice"
    assert len({w for ws in done.values() for w in ws}) == 4, "not every worker got work"
    with transaction(harness.ctx.factory) as s:
        states = {j.id: j.state for j in s.query(Job)}
        assert set(states.values()) == {"succeeded"} and len(states) == 400
        for job_id in ids[::37]:
            relayed = [e.type for e in s.query(JobEvent).filter(
                JobEvent.job_id == job_id, JobEvent.seq.is_not(None)).order_by(JobEvent.id)]
            assert relayed == EVENTS


async def test_dead_worker_loses_its_job_and_its_late_completion_is_refused(live_hub) -> None:
    harness, url = live_hub(queue={"lease_seconds": 1.0, "reaper_seconds": 0.1})
    harness.user("alice")
    [job_id] = await _submit(url, harness.bearer("alice"), 1)
    token = harness.worker_token()
    dead, alive = HubClient(url, token), HubClient(url, token)
    await dead.register("dead", tiny_catalog())
    await alive.register("alive", tiny_catalog())
    first = await dead.lease(wait=0)
    assert first is not None and first.job_id == job_id
    await dead.upload_output(job_id, first.lease_id, key="2/images/0", node_id="2",
                             filename="ComfyUI_00001_.png", subfolder="", type="output",
                             body=lambda: b"half")
    # `dead` now stops renewing. After the lease timeout the job goes to `alive`.
    second = await alive.lease(wait=5)
    assert second is not None and second.job_id == job_id and second.attempt == 2
    stored = await alive.upload_output(job_id, second.lease_id, key="2/images/0", node_id="2",
                                       filename="ComfyUI_00001_.png", subfolder="",
                                       type="output", body=lambda: b"full")
    assert await alive.complete(job_id, second.lease_id, "success") == "succeeded"
    with pytest.raises(LeaseLost):
        await dead.complete(job_id, first.lease_id, "success")
    with pytest.raises(LeaseLost):
        await dead.upload_output(job_id, first.lease_id, key="2/images/1", node_id="2",
                                 filename="late.png", subfolder="", type="output",
                                 body=lambda: b"late")
    await dead.aclose()
    await alive.aclose()
    out_dir = harness.ctx.settings.data_dir / "users/alice/output"
    assert sorted(p.name for p in out_dir.iterdir()) == [stored.filename]
    assert (out_dir / stored.filename).read_bytes() == b"full"
    with transaction(harness.ctx.factory) as s:
        assert s.query(Output).count() == 1
        job = s.query(Job).filter_by(id=job_id).one()
        assert (job.state, job.attempts) == ("succeeded", 2)


async def test_lease_expiring_too_often_fails_the_job_with_a_reason(live_hub) -> None:
    harness, url = live_hub(queue={"lease_seconds": 0.3, "reaper_seconds": 0.05,
                                   "max_attempts": 2})
    harness.user("bob")
    [job_id] = await _submit(url, harness.bearer("bob"), 1)
    client = HubClient(url, harness.worker_token())
    await client.register("flaky", tiny_catalog())
    owner = harness.ctx.queue.get(job_id).user_id
    with harness.ctx.bus.subscribe(owner) as sub:
        assert (await client.lease(wait=0)) is not None
        assert (await client.lease(wait=3)) is not None  # second attempt after expiry
        job = wait_for(lambda: (j := harness.ctx.queue.get(job_id)).state == "failed" and j)
        await asyncio.sleep(0.1)
        told = _drain(sub)
    # The owner's page hears it as from ComfyUI: an error, then the closing `executing null`.
    assert told[-2:] == ["execution_error", "executing"], told
    error = json.loads(job.error)
    assert "gave up after 2 attempts" in error["exception_message"]
    assert error["exception_type"] == "ComfyMultiError"  # the execution_error shape
    await client.aclose()


def _drain(sub) -> list[str]:
    types = []
    while not sub.queue.empty():
        types.append(sub.queue.get_nowait()["type"])
    return [t for t in types if t != "status"]


def _serve(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "comfymulti", "--config", str(config),
                             "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_hub_killed_and_restarted_keeps_every_job(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "comfymulti.toml"
    config.write_text(f'data_dir = "data"\n[hub]\nport = {port}\n'
                      '[queue]\nlease_seconds = 2.0\nreaper_seconds = 0.2\n'
                      'max_queued_per_user = 100\n')
    env_cfg = ["--config", str(config)]
    run = [sys.executable, "-m", "comfymulti", *env_cfg]
    subprocess.run([*run, "users", "add", "carol", "--password", "pw-carol-123"], check=True,
                   capture_output=True)
    token = subprocess.run([*run, "workers", "token", "--name", "gpu"], check=True,
                           capture_output=True, text=True).stdout.strip()
    hub = _serve(config)
    try:
        async with httpx.AsyncClient(base_url=url, auth=("carol", "pw-carol-123")) as c:
            await _wait_up(c)
            for _ in range(52):
                r = await c.post("/api/v1/jobs", json={"prompt": simple_prompt()})
                assert r.status_code == 201
        client = HubClient(url, token, backoff_max=0.5)
        await client.register("gpu-1", tiny_catalog())
        leased = [await client.lease(wait=0) for _ in range(2)]
        assert all(leased)
        hub.send_signal(signal.SIGKILL)
        hub.wait()
        # The worker keeps asking while the hub is down; it gets an answer once it is back.
        pending = asyncio.create_task(client.lease(wait=5))
        await asyncio.sleep(0.5)
        hub = _serve(config)
        reconnected = await asyncio.wait_for(pending, 30)
        assert reconnected is not None, "worker did not reconnect by itself"
        engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'comfymulti.db'}")
        factory = session_factory(engine)
        with transaction(factory) as s:
            assert s.query(Job).count() == 52
        # The two leases from before the kill are not renewed: they expire and requeue.
        def requeued() -> bool:
            with transaction(factory) as s:
                return all(s.query(Job).filter_by(id=j.job_id).one().state == "queued"
                           for j in leased if j)
        wait_for(requeued, timeout=15)
        engine.dispose()
        await client.aclose()
    finally:
        hub.send_signal(signal.SIGTERM)
        assert hub.wait(10) == 0, "hub did not stop cleanly on SIGTERM"


async def _wait_up(c: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if (await c.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("hub did not come up")


assert os.sep == "/"
