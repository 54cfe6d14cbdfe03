"""The /worker/v1 protocol through the real HubClient against a live hub."""

from __future__ import annotations

import asyncio
import time

import anyio
import httpx
import pytest

from comfymulti.errors import LeaseLost, NotFound, Unauthorized
from comfymulti.worker.hub_client import HubClient
from tests.conftest import held_back, simple_prompt, tiny_catalog

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_register_lease_events_output_complete(live_hub) -> None:
    harness, url = live_hub()
    harness.user("user002")
    token = harness.worker_token()
    with httpx.Client(base_url=url) as c:
        r = c.post("/api/v1/jobs", json={"prompt": simple_prompt()},
                   headers=harness.bearer("user002"))
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
    client = HubClient(url, token)
    reg = await client.register("gpu-a", tiny_catalog(), comfyui_version="0.33.0")
    assert reg.catalog_needed
    again = await client.register("gpu-a", tiny_catalog())
    assert not again.catalog_needed and again.worker_id == reg.worker_id
    job = await client.lease(wait=1)
    assert job is not None and job.job_id == job_id and job.attempt == 1
    await client.events(job.job_id, job.lease_id, [
        {"seq": 0, "type": "execution_start", "data": {"prompt_id": job_id}},
        {"seq": 1, "type": "executing", "data": {"node": "2", "prompt_id": job_id}},
    ])
    stored = await client.upload_output(job.job_id, job.lease_id, key="2/images/0",
                                        node_id="2", filename="ComfyUI_00001_.png",
                                        subfolder="", type="output", body=lambda: b"PNG!")
    assert stored.filename == "ComfyUI_00001_.png"
    # A retried upload with the same key stores nothing new.
    again_stored = await client.upload_output(job.job_id, job.lease_id, key="2/images/0",
                                              node_id="2", filename="ComfyUI_00001_.png",
                                              subfolder="", type="output", body=lambda: b"PNG!")
    assert again_stored == stored
    await client.events(job.job_id, job.lease_id, [
        {"seq": 2, "type": "executed", "data": {"node": "2", "output": {
            "images": [stored.model_dump()]}, "prompt_id": job_id}},
        {"seq": 1, "type": "executing", "data": {"node": "2", "prompt_id": job_id}},  # dup
    ])
    assert await client.complete(job.job_id, job.lease_id, "success") == "succeeded"
    with pytest.raises(LeaseLost):
        await client.complete(job.job_id, job.lease_id, "success")
    await client.aclose()
    with httpx.Client(base_url=url, headers=harness.bearer("user002")) as c:
        detail = c.get(f"/api/v1/jobs/{job_id}").json()
        events = c.get(f"/api/v1/jobs/{job_id}/events").json()["events"]
    assert detail["state"] == "succeeded"
    assert detail["outputs"] == {"2": {"images": [stored.model_dump()]}}
    relayed = [e["type"] for e in events if e["seq"] is not None]
    assert relayed == ["execution_start", "executing", "executed"]
    out = harness.ctx.settings.data_dir / "users/user002/output/ComfyUI_00001_.png"
    assert out.read_bytes() == b"PNG!"


async def test_bad_worker_token_is_refused(live_hub) -> None:
    _harness, url = live_hub()
    client = HubClient(url, "cmw_not-a-token")
    with pytest.raises(Unauthorized):
        await client.register("x", tiny_catalog())
    await client.aclose()


async def test_long_poll_returns_as_soon_as_work_arrives(live_hub) -> None:
    harness, url = live_hub()
    harness.user("a")
    client = HubClient(url, harness.worker_token())
    await client.register("w", tiny_catalog())
    headers = harness.bearer("a")

    async def submit_later() -> float:
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(base_url=url) as c:
            await c.post("/api/v1/jobs", json={"prompt": simple_prompt()}, headers=headers)
        return anyio.current_time()

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(submit_later)
        job = await client.lease(wait=10)
        got = anyio.current_time() - start
    assert job is not None
    assert got < 5, "lease waited for the long-poll timeout instead of returning"
    await client.aclose()


async def test_worker_requests_check_the_worker_once_per_window_and_never_write(
        live_hub, monkeypatch) -> None:
    """A worker makes several requests per job: its registration is checked once per
    SEEN_EVERY, by a read. Its last_seen is written with the other workers', by the hub's
    periodic write, never by its requests (they waited for the write lock under load)."""
    import sqlite3

    from sqlalchemy import event

    from comfymulti.hub.services import workers

    harness, url = live_hub()
    client = HubClient(url, harness.worker_token())
    await client.register("gpu-a", tiny_catalog())
    statements: list[str] = []
    event.listen(harness.ctx.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, *_a: statements.append(sql))
    for _ in range(5):
        assert await client.renew({}) is not None
    # Checked at its catalog upload just now: not again in the window.
    assert [sql for sql in statements if "workers" in sql] == []
    monkeypatch.setattr(workers, "SEEN_EVERY", 0.0)  # the window passed: checked again
    await client.renew({})
    assert [sql.split()[0] for sql in statements if "workers" in sql] == ["SELECT"]
    with sqlite3.connect(harness.ctx.settings.data_dir / "comfymulti.db") as db:
        db.execute("UPDATE workers SET last_seen = 0")
    before = time.time()
    await harness.ctx.worker_activity.write(harness.ctx.tx)
    with sqlite3.connect(harness.ctx.settings.data_dir / "comfymulti.db") as db:
        (seen,) = db.execute("SELECT last_seen FROM workers").fetchone()
    assert seen >= before
    await client.aclose()


async def test_requests_during_a_worker_check_share_it(live_hub, monkeypatch) -> None:
    """A worker's requests arriving while its check is under way wait for that check rather
    than each starting one (under load each did, a third of the hub's writes)."""
    import asyncio

    from comfymulti.hub.services import workers

    harness, url = live_hub()
    client = HubClient(url, harness.worker_token())
    await client.register("gpu-a", tiny_catalog())
    checks: list[str] = []
    get_worker = workers.get_worker

    def slow_check(s, token, worker_id):
        checks.append(worker_id)
        time.sleep(0.3)
        return get_worker(s, token, worker_id)

    monkeypatch.setattr(workers, "get_worker", slow_check)
    monkeypatch.setattr(workers, "SEEN_EVERY", 0.2)
    await asyncio.sleep(0.25)  # the window since registration has passed
    answers = await asyncio.gather(*(client.renew({}) for _ in range(6)))
    assert all(a is not None for a in answers)
    assert len(checks) == 1
    await client.aclose()


async def test_reports_arriving_together_share_transactions(live_hub, monkeypatch) -> None:
    """Reports from several workers at once are written in a few group transactions, not one
    each; a refused report (a job that does not exist) fails alone."""
    from tests.conftest import slow_groups

    harness, url = live_hub()
    token = harness.worker_token()
    clients = [HubClient(url, token) for _ in range(8)]
    for n, client in enumerate(clients):
        await client.register(f"gpu-{n}", tiny_catalog())
    begins = slow_groups(harness, monkeypatch, 0.05)  # the others arrive meanwhile
    answers = await asyncio.gather(*(c.renew({}) for c in clients for _ in range(3)))
    assert all(a is not None for a in answers)
    assert 1 <= len(begins) <= 6  # 24 reports
    fine, refused = await asyncio.gather(clients[0].renew({}),
                                         clients[1].complete("nope", "x", "success"),
                                         return_exceptions=True)
    assert fine.lost == [] and isinstance(refused, NotFound)
    for client in clients:
        await client.aclose()


async def test_worker_requests_do_not_wait_behind_participants(live_hub, monkeypatch) -> None:
    """Every participant thread busy (slow submits here): a worker still registers, leases
    and completes, on its own threads; its job's end must not wait behind participants."""
    import threading

    from comfymulti.catalog.prompt import Submission
    from comfymulti.db import transaction
    from comfymulti.hub.app import DB_THREADS
    from comfymulti.hub.services.users import get_user
    from comfymulti.hub.workspaces import run_api

    harness, url = live_hub()
    harness.user("user002")
    with transaction(harness.ctx.factory) as s:
        user = get_user(s, "user002")
    await harness.ctx.queue.submit(user, Submission(simple_prompt(), {}))
    release, blocked = threading.Event(), []
    monkeypatch.setattr(run_api, "_check",
                        held_back(run_api._check, blocked, release))
    client = HubClient(url, harness.worker_token())
    async with httpx.AsyncClient(base_url=url, headers=harness.bearer("user002")) as web:
        polls = [asyncio.create_task(web.post("/u/user002/api/prompt",
                                              json={"prompt": simple_prompt()}))
                 for _ in range(DB_THREADS + 2)]
        try:
            with anyio.fail_after(5):
                while len(blocked) < DB_THREADS:
                    await asyncio.sleep(0.01)
                await client.register("gpu-a", tiny_catalog())
                job = await client.lease(wait=0)
                assert job is not None
                assert await client.complete(job.job_id, job.lease_id, "success") == "succeeded"
        finally:
            release.set()
            await asyncio.gather(*polls)
            await client.aclose()


async def test_reports_are_written_in_few_statements(live_hub) -> None:
    """One thread writes every worker's reports, and each SQL statement there waits for the
    GIL: a batch of events is one multi-row INSERT that also skips the seqs stored before
    (no SELECT for them first), a lease renewal or a state change returns the job from its
    UPDATE instead of reading it again, and every statement comes compiled from the cache
    (a compile per report was a third of the writer's time)."""
    from sqlalchemy import event
    from sqlalchemy.engine.default import CACHE_HIT

    harness, url = live_hub()
    harness.user("user002")
    with httpx.Client(base_url=url) as c:
        job_id = c.post("/api/v1/jobs", json={"prompt": simple_prompt()},
                        headers=harness.bearer("user002")).json()["id"]
    client = HubClient(url, harness.worker_token())
    await client.register("gpu-a", tiny_catalog())
    job = await client.lease(wait=1)
    assert job is not None
    statements: list[str] = []
    compiled: list[bool] = []

    def noted(_conn, _cursor, sql, _params, context, _many) -> None:  # type: ignore[no-untyped-def]
        if not sql.startswith("BEGIN"):  # the write transaction's own, sent as text
            statements.append(" ".join(sql.split()[:3]))
            compiled.append(context.cache_hit == CACHE_HIT)

    event.listen(harness.ctx.engine, "before_cursor_execute", noted)
    await client.events(job.job_id, job.lease_id, [
        {"seq": n, "type": "progress_state", "data": {"prompt_id": job_id}} for n in range(5)])
    assert statements.count("INSERT INTO job_events") == 2  # "running", then the 5 events
    assert "SELECT jobs.seq, jobs.id," not in statements
    statements.clear()
    compiled.clear()
    # Three seqs again (a retried batch) and two new: one UPDATE and one INSERT, cached.
    await client.events(job.job_id, job.lease_id, [
        {"seq": n, "type": "progress_state", "data": {"prompt_id": job_id}}
        for n in range(2, 7)])
    assert statements == ["UPDATE jobs SET", "INSERT INTO job_events"], statements
    assert all(compiled), list(zip(statements, compiled, strict=True))
    statements.clear()
    await client.renew({job.job_id: job.lease_id})
    assert await client.complete(job.job_id, job.lease_id, "success") == "succeeded"
    assert "SELECT jobs.seq, jobs.id," not in statements
    await client.aclose()
    with httpx.Client(base_url=url, headers=harness.bearer("user002")) as c:
        events = c.get(f"/api/v1/jobs/{job_id}/events").json()["events"]
    assert [e["seq"] for e in events if e["seq"] is not None] == list(range(7))


async def test_only_what_the_job_list_shows_invalidates_it(live_hub) -> None:
    """Progress events come many times a second per job; cached job lists (every open
    workspace polls one) are dropped only when the job starts or gets outputs."""
    harness, url = live_hub()
    harness.user("user002")
    with httpx.Client(base_url=url) as c:
        r = c.post("/api/v1/jobs", json={"prompt": simple_prompt()},
                   headers=harness.bearer("user002"))
        job_id = r.json()["id"]
    client = HubClient(url, harness.worker_token())
    await client.register("gpu-a", tiny_catalog())
    job = await client.lease(wait=1)
    assert job is not None
    versions = harness.ctx.queue.notify.user_versions

    async def relay(*events: tuple[int, str, dict]) -> int:
        await client.events(job_id, job.lease_id, [
            {"seq": seq, "type": kind, "data": {**data, "prompt_id": job_id}}
            for seq, kind, data in events])
        return max(versions.values())

    leased = max(versions.values())
    running = await relay((0, "execution_start", {}), (1, "executing", {"node": "2"}))
    assert running != leased
    progressed = await relay((2, "progress", {"value": 1, "max": 2, "node": "2"}),
                             (3, "executing", {"node": "2"}))
    assert progressed == running
    assert await relay((4, "executed", {"node": "2", "output": {"text": ["x"]}})) != running
    await client.aclose()
