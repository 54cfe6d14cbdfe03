"""Dispatch order through the real JobQueue and hub (not only the pure scheduler)."""

from __future__ import annotations

import anyio
import pytest

from comfymulti.catalog.prompt import Submission
from comfymulti.errors import QuotaExceeded
from comfymulti.queue.jobs import Role
from comfymulti.worker.hub_client import HubClient
from tests.conftest import simple_prompt, tiny_catalog

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
            harness.ctx.queue.submit(user, Submission(simple_prompt(), {}))
    teacher = _user(harness, "teacher", Role.INSTRUCTOR)
    harness.ctx.queue.submit(teacher, Submission(simple_prompt(), {}))
    names = await _drain_order(url, harness, 15)
    assert names[:9] == ["teacher", "a", "b", "c", "a", "b", "a", "b", "a"]
    assert names[9:] == ["a"] * 6


async def test_policy_change_takes_effect_while_running(live_hub) -> None:
    harness, url = live_hub()
    a, b = _user(harness, "a"), _user(harness, "b")
    for user in (a, a, a, b):
        harness.ctx.queue.submit(user, Submission(simple_prompt(), {}))
    harness.ctx.queue.set_policy("fifo")
    assert await _drain_order(url, harness, 2) == ["a", "a"]
    harness.ctx.queue.set_policy("fair")
    assert await _drain_order(url, harness, 2) == ["b", "a"]


async def test_admin_run_next_and_per_user_and_global_caps(make_hub) -> None:
    harness = make_hub(queue={"max_queued_per_user": 2, "max_queued_total": 3})
    a, b = _user(harness, "a"), _user(harness, "b")
    q = harness.ctx.queue
    q.submit(a, Submission(simple_prompt(), {}))
    q.submit(a, Submission(simple_prompt(), {}))
    with pytest.raises(QuotaExceeded, match="2 jobs waiting"):
        q.submit(a, Submission(simple_prompt(), {}))
    last = q.submit(b, Submission(simple_prompt(), {}))
    with pytest.raises(QuotaExceeded, match="queue is full"):
        q.submit(b, Submission(simple_prompt(), {}))
    q.run_next(last)
    assert q.order()[0].job_id == last.id
    await anyio.sleep(0)


async def test_a_dispatch_reads_the_queue_once_and_not_every_account(live_hub) -> None:
    """Every job's lease picks from the whole queue: the queued jobs and their owners' turns
    come in one query, and the hundreds of accounts with nothing queued are not read."""
    from sqlalchemy import event

    harness, url = live_hub()
    a = _user(harness, "a")
    for name in ("idle1", "idle2", "idle3"):
        harness.user(name)
    harness.ctx.queue.submit(a, Submission(simple_prompt(), {}))
    client = HubClient(url, harness.worker_token())
    await client.register("w", tiny_catalog())
    reads: list[str] = []
    event.listen(harness.ctx.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, *_a: reads.append(sql) if sql.startswith("SELECT") else None)
    assert await client.lease(wait=0) is not None
    await client.aclose()
    assert len([sql for sql in reads if "FROM jobs JOIN users" in sql]) == 1, reads
    assert not [sql for sql in reads if "FROM users" in sql and "JOIN" not in sql], reads


def test_workers_waiting_for_a_dispatch_hold_no_database_thread(make_hub, monkeypatch) -> None:
    """Dispatch is one at a time; 20 workers asking at once used to wait for it inside the
    database threads, holding all of them, and every request queued behind them. The one
    dispatching has a thread of its own, so it never waits behind other work for one."""
    import asyncio
    import threading
    import time

    harness = make_hub()
    queue, shared = harness.ctx.queue, (harness.ctx.run.limiter, harness.ctx.work.limiter)
    held: list[float] = []  # shared database threads in use during each dispatch
    inside = threading.Lock()

    def lease_one(worker_id: str) -> None:
        assert inside.acquire(blocking=False), "two dispatches at once"
        held.append(sum(limiter.borrowed_tokens for limiter in shared))
        time.sleep(0.02)
        inside.release()

    monkeypatch.setattr(queue, "_lease_one", lease_one)

    async def ask() -> None:
        await asyncio.gather(*(queue.lease(f"w{n}", 0) for n in range(5)))

    asyncio.run(ask())
    assert held == [0] * 5
