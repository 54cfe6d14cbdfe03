"""Dispatch order through the real JobQueue and hub (not only the pure scheduler)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from types import SimpleNamespace

import anyio
import pytest
from sqlalchemy import event

from comfymulti.errors import QuotaExceeded, Unavailable
from comfymulti.queue.jobs import Role
from comfymulti.worker.hub_client import HubClient
from tests.conftest import queued, tiny_catalog

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _user(harness, name: str, role: Role = Role.PARTICIPANT):
    from comfymulti.db import transaction
    from comfymulti.hub.services.users import get_user

    harness.user(name, role)
    with transaction(harness.ctx.factory) as s:
        return get_user(s, name)


async def _drain_order(url: str, harness, n: int) -> list[str]:
    client = HubClient(url, harness.worker_token())
    await client.register("w", tiny_catalog())
    owners = {}
    order = []
    for _ in range(n):
        job = await client.lease(wait=0)
        assert job is not None
        order.append(job.job_id)
        await client.complete(job.job_id, job.lease_id, "success")
    await client.aclose()
    from comfymulti.db import transaction
    from comfymulti.models import Job, User

    with transaction(harness.ctx.factory) as s:
        for job_id in order:
            job = s.query(Job).filter_by(id=job_id).one()
            owners[job_id] = s.get(User, job.user_id).name
    return [owners[j] for j in order]


async def test_fair_round_robin_and_instructor_first(live_hub) -> None:
    harness, url = live_hub()
    a, b, c = (_user(harness, n) for n in ("a", "b", "c"))
    for user, count in ((a, 10), (b, 3), (c, 1)):
        for _ in range(count):
            await queued(harness.ctx.queue, user)
    teacher = _user(harness, "teacher", Role.INSTRUCTOR)
    await queued(harness.ctx.queue, teacher)
    names = await _drain_order(url, harness, 15)
    assert names[:9] == ["teacher", "a", "b", "c", "a", "b", "a", "b", "a"]
    assert names[9:] == ["a"] * 6


async def test_policy_change_takes_effect_while_running(live_hub) -> None:
    harness, url = live_hub()
    a, b = _user(harness, "a"), _user(harness, "b")
    for user in (a, a, a, b):
        await queued(harness.ctx.queue, user)
    harness.ctx.queue.set_policy("fifo")
    assert await _drain_order(url, harness, 2) == ["a", "a"]
    harness.ctx.queue.set_policy("fair")
    assert await _drain_order(url, harness, 2) == ["b", "a"]


async def test_admin_run_next_and_per_user_and_global_caps(make_hub) -> None:
    harness = make_hub(queue={"max_queued_per_user": 2, "max_queued_total": 3})
    a, b = _user(harness, "a"), _user(harness, "b")
    q = harness.ctx.queue
    await queued(q, a)
    await queued(q, a)
    with pytest.raises(QuotaExceeded, match="2 jobs waiting"):
        await queued(q, a)
    last = await queued(q, b)
    with pytest.raises(QuotaExceeded, match="queue is full"):
        await queued(q, b)
    q.run_next(last)
    assert q.order()[0].job_id == last.id
    await anyio.sleep(0)


async def test_submits_arriving_together_share_transactions(live_hub, monkeypatch) -> None:
    """In a burst, prompts are written in a few group transactions, not one each (each took a
    thread and waited for the write lock in turn); one over its owner's cap is refused alone,
    and every caller gets its own answer."""
    import httpx

    from tests.conftest import simple_prompt, slow_groups

    harness, url = live_hub(queue={"max_queued_per_user": 2})
    names = [f"u{n}" for n in range(12)]
    for name in names:
        harness.user(name)
    tokens = {name: harness.bearer(name) for name in names}
    begins = slow_groups(harness, monkeypatch, 0.1)  # the others arrive meanwhile
    async with httpx.AsyncClient(base_url=url) as web:
        answers = await asyncio.gather(*(
            web.post(f"/u/{name}/api/prompt", json={"prompt": simple_prompt()},
                     headers=tokens[name]) for name in [*names, "u0", "u0"]))
    codes = Counter(a.status_code for a in answers)
    assert codes == {200: 13, 429: 1}, [a.text for a in answers]
    assert len({a.json()["prompt_id"] for a in answers if a.status_code == 200}) == 13
    assert 1 <= len(begins) <= 5  # 14 submits


async def test_a_dispatch_reads_the_queue_once_and_not_every_account(live_hub) -> None:
    """Every job's lease picks from the whole queue: the queued jobs and their owners' turns
    come in one query, and the hundreds of accounts with nothing queued are not read."""
    harness, url = live_hub()
    a = _user(harness, "a")
    for name in ("idle1", "idle2", "idle3"):
        harness.user(name)
    await queued(harness.ctx.queue, a)
    client = HubClient(url, harness.worker_token())
    await client.register("w", tiny_catalog())
    reads: list[str] = []
    event.listen(harness.ctx.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, *_a: reads.append(sql) if sql.startswith("SELECT") else None)
    assert await client.lease(wait=0) is not None
    await client.aclose()
    assert len([sql for sql in reads if "FROM jobs JOIN users" in sql]) == 1, reads
    assert not [sql for sql in reads if "FROM users" in sql and "JOIN" not in sql], reads


def test_workers_asking_at_once_share_one_dispatch_pass(make_hub, monkeypatch) -> None:
    """20 workers asking at once used to get a dispatch each, one after another, each
    reading the whole queue: that set the drain's pace in a burst. Now those asking while a
    pass runs are served by the next one; passes never overlap and hold none of the shared
    database threads."""
    harness = make_hub()
    queue, shared = harness.ctx.queue, (harness.ctx.run.limiter, harness.ctx.work.limiter)
    passes: list[list[str]] = []
    held: list[float] = []  # shared database threads in use during each pass
    inside = threading.Lock()

    def lease_batch(worker_ids: list[str]) -> list[None]:
        assert inside.acquire(blocking=False), "two dispatch passes at once"
        passes.append(worker_ids)
        held.append(sum(limiter.borrowed_tokens for limiter in shared))
        time.sleep(0.05)
        inside.release()
        return [None] * len(worker_ids)

    monkeypatch.setattr(queue, "_lease_batch", lease_batch)

    async def ask() -> list[object]:
        first = asyncio.create_task(queue.lease("w0", 0))
        await asyncio.sleep(0.01)  # w0's pass is running: the others wait for the next
        return await asyncio.gather(first, *(queue.lease(f"w{n}", 0) for n in range(1, 6)))

    assert asyncio.run(ask()) == [None] * 6
    assert passes == [["w0"], ["w1", "w2", "w3", "w4", "w5"]]
    assert held == [0, 0]


async def test_one_pass_leases_distinct_jobs_in_fair_order(live_hub) -> None:
    """Six workers asking at once: six different jobs, the five users served once each
    before anyone twice, from at most two reads of the queue."""
    harness, url = live_hub()
    users = [_user(harness, f"u{n}") for n in range(5)]
    for _ in range(2):
        for user in users:
            await queued(harness.ctx.queue, user)
    token = harness.worker_token()
    clients = [HubClient(url, token) for _ in range(6)]
    for n, client in enumerate(clients):
        await client.register(f"w{n}", tiny_catalog())
    reads: list[str] = []

    def count(_c, _cur, sql: str, *_a) -> None:
        if "FROM jobs JOIN users" in sql:
            reads.append(sql)

    event.listen(harness.ctx.engine, "before_cursor_execute", count)
    try:
        async with anyio.create_task_group() as tg:
            leased: list = []

            async def ask(client: HubClient) -> None:
                leased.append(await client.lease(wait=0))

            for client in clients:
                tg.start_soon(ask, client)
    finally:
        event.remove(harness.ctx.engine, "before_cursor_execute", count)
        for client in clients:
            await client.aclose()
    assert None not in leased and len({job.job_id for job in leased}) == 6
    owners = Counter(harness.ctx.queue.get(job.job_id).user_id for job in leased)
    assert len(owners) == 5 and max(owners.values()) == 2
    assert 1 <= len(reads) <= 6  # one per pass; passes group whoever is waiting


async def _three_workers(url: str, harness) -> list[str]:
    token = harness.worker_token()
    ids = []
    for n in range(3):
        client = HubClient(url, token)
        await client.register(f"w{n}", tiny_catalog())
        ids.append(client.worker_id)
        await client.aclose()
    return ids


async def test_a_pass_chooses_every_job_before_its_first_write(live_hub) -> None:
    """The write lock is held from a pass's first write to its commit, with the workers'
    reports and the submits waiting: choosing the jobs (each worker's row and catalog, the
    fair order over the whole queue, the turn counter) happens before it, and only the
    leases are written inside it."""
    harness, url = live_hub()
    users = [_user(harness, f"u{n}") for n in range(3)]
    for user in users:
        await queued(harness.ctx.queue, user)
    workers = await _three_workers(url, harness)
    statements: list[str] = []
    event.listen(harness.ctx.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, *_a: statements.append(" ".join(sql.split()[:4])))
    leased = await anyio.to_thread.run_sync(harness.ctx.queue._lease_batch, workers)
    assert None not in leased and len({job.id for job in leased}) == 3
    first_write = next(i for i, sql in enumerate(statements) if sql.startswith("UPDATE"))
    inside = [sql for sql in statements[first_write:] if sql.startswith("SELECT")]
    assert not inside, statements[first_write:]


async def test_a_job_cancelled_while_a_pass_chooses_costs_only_its_worker(
        live_hub, monkeypatch) -> None:
    """A job can leave the queue between the pass's read and its write: that worker gets
    nothing this time (it asks again), the others get their jobs."""
    harness, url = live_hub()
    users = [_user(harness, f"u{n}") for n in range(3)]
    jobs = [await queued(harness.ctx.queue, user) for user in users]
    workers = await _three_workers(url, harness)
    queue, pick = harness.ctx.queue, harness.ctx.queue._pick
    cancelled: list[str] = []

    def pick_then_cancel(*args):  # type: ignore[no-untyped-def]
        chosen = pick(*args)
        if not cancelled:  # its owner cancels it now, in a transaction of their own
            cancelled.append(chosen.job_id)
            queue.cancel(queue.get(chosen.job_id), "changed my mind")
        return chosen

    monkeypatch.setattr(queue, "_pick", pick_then_cancel)
    leased = await anyio.to_thread.run_sync(queue._lease_batch, workers)
    assert leased[0] is None
    others = {job.id for job in jobs} - set(cancelled)
    assert {job.id for job in leased[1:] if job is not None} == others
    assert queue.get(cancelled[0]).state == "cancelled"


def _leasing_job1(queue, monkeypatch, release) -> threading.Event:
    """Every dispatch pass takes 0.1 s and leases job1 to each asker; `release` stands in for
    the give-back. The event is set once a pass runs."""
    running = threading.Event()

    def lease_batch(worker_ids: list[str]) -> list[object]:
        running.set()
        time.sleep(0.1)
        return [SimpleNamespace(id="job1", lease_id="lease1")] * len(worker_ids)

    monkeypatch.setattr(queue, "_lease_batch", lease_batch)
    monkeypatch.setattr(queue, "release", release)
    return running


async def _ask_then_leave(queue, running: threading.Event) -> None:
    """Worker w0 asks, and its request ends while its pass is leasing."""
    asker = asyncio.create_task(queue.lease("w0", 0))
    await asyncio.to_thread(running.wait, 5)
    asker.cancel()


def test_a_job_leased_for_a_worker_that_left_goes_back(make_hub, monkeypatch) -> None:
    """A worker's request ended (its connection dropped) while its pass was leasing: the
    job is released at once, not held until the lease expires."""
    queue = make_hub().ctx.queue
    released: list[tuple[str, ...]] = []
    running = _leasing_job1(queue, monkeypatch, lambda *args: released.append(args))

    async def leave() -> None:
        await _ask_then_leave(queue, running)
        await asyncio.sleep(0.3)

    asyncio.run(leave())
    assert released == [("job1", "lease1", "w0")]


def test_dispatch_goes_on_when_giving_a_job_back_fails(make_hub, monkeypatch) -> None:
    """The give-back above failing (say, the database busy) leaves the job to the reaper;
    a worker that asked meanwhile is still served."""
    queue = make_hub().ctx.queue

    def release(*_args: str) -> None:
        time.sleep(0.2)
        raise Unavailable("the database is busy")

    running = _leasing_job1(queue, monkeypatch, release)

    async def leave_then_ask() -> object:
        await _ask_then_leave(queue, running)
        await asyncio.sleep(0.15)  # the pass is giving w0's job back now
        return await asyncio.wait_for(queue.lease("w1", 0), 5)

    assert asyncio.run(leave_then_ask()).id == "job1"
