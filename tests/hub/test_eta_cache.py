"""Every participant's job list shows positions and ETAs: computed once per queue change and
shared, not once per poll (a long queue must not slow the drain that shortens it)."""

from __future__ import annotations

import time

from comfymulti.queue import scheduler
from comfymulti.queue.jobs import Role
from tests.conftest import held_back, simple_prompt, submitted, wait_for


def test_polls_share_one_computation_until_the_queue_changes(hub, monkeypatch) -> None:
    harness, client = hub
    teacher = harness.user("teacher", Role.INSTRUCTOR)
    harness.user("user002")
    queue = harness.ctx.queue
    from comfymulti.db import transaction
    from comfymulti.hub.services.users import get_user

    with transaction(harness.ctx.factory) as s:
        t, u = get_user(s, teacher), get_user(s, "user002")
    for _ in range(200):
        submitted(queue, t)
    mine = submitted(queue, u)
    computed = []
    real_order = scheduler.order
    monkeypatch.setattr(scheduler, "order", lambda *a: computed.append(1) or real_order(*a))
    token = harness.bearer("user002")
    for _ in range(30):
        jobs = client.get("/u/user002/api/jobs", headers=token).json()["jobs"]
        assert jobs[0]["queue_position"] == 201
    assert len(computed) == 1
    queue.cancel(mine, "test")
    client.get("/u/user002/api/jobs", headers=token)
    submitted(queue, u)
    jobs = client.get("/u/user002/api/jobs?status=pending", headers=token).json()["jobs"]
    assert jobs[0]["queue_position"] == 201 and len(computed) == 2


def test_job_list_answers_are_reused_until_the_users_jobs_change(hub, monkeypatch) -> None:
    """Hundreds of open workspaces poll the job list: the same question between two changes
    of that user's jobs is answered from the last answer, a change shows at once."""
    harness, client = hub
    harness.user("user002")
    token = harness.bearer("user002")
    from comfymulti.hub.workspaces import run_api

    pages = []
    real_page = run_api._jobs_page
    monkeypatch.setattr(run_api, "_jobs_page", lambda *a: pages.append(1) or real_page(*a))
    for _ in range(20):
        assert client.get("/u/user002/api/jobs", headers=token).json()["jobs"] == []
    assert len(pages) == 1
    r = client.post("/u/user002/api/prompt", json={"prompt": simple_prompt()}, headers=token)
    assert r.status_code == 200
    jobs = client.get("/u/user002/api/jobs", headers=token).json()["jobs"]
    assert [j["id"] for j in jobs] == [r.json()["prompt_id"]] and len(pages) == 2
    client.post("/u/user002/api/queue", json={"clear": True}, headers=token)
    jobs = client.get("/u/user002/api/jobs", headers=token).json()["jobs"]
    assert jobs[0]["status"] == "cancelled" and len(pages) == 3


def test_unchanged_job_list_is_answered_on_the_loop(hub, monkeypatch) -> None:
    """300 open workspaces poll twice every few seconds: an answer still current is sent from
    the loop, with no database query and no hop to a thread (each hop costs the loop a GIL
    handover; hundreds a second starved the sockets waiting for job notifications)."""
    import fastapi.routing
    from sqlalchemy import event

    harness, client = hub
    harness.user("user002")
    token = harness.bearer("user002")
    url = "/u/user002/api/jobs?status=completed,failed,cancelled&limit=64&offset=0"
    first = client.get(url, headers=token).json()
    hops: list[object] = []
    real_pool, real_run = fastapi.routing.run_in_threadpool, harness.ctx.run

    async def pool(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(kwargs.get("function", fn))
        return await real_pool(fn, *args, **kwargs)

    async def run(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(fn)
        return await real_run(fn, *args, **kwargs)

    statements: list[str] = []
    monkeypatch.setattr(fastapi.routing, "run_in_threadpool", pool)
    monkeypatch.setattr(harness.ctx, "run", run)
    event.listen(harness.ctx.engine, "before_cursor_execute",
                 lambda _c, _cur, sql, *_a: statements.append(sql))
    for _ in range(10):
        assert client.get(url, headers=token).json() == first
    assert hops == []
    assert [sql for sql in statements if "jobs" in sql] == []


def test_moving_positions_do_not_read_the_users_jobs_again(hub, monkeypatch) -> None:
    """While the queue drains every participant's position moves, their own jobs do not: a
    job list whose positions went out of date gets new ones without reading the jobs."""
    from comfymulti.db import transaction
    from comfymulti.hub.services.users import get_user
    from comfymulti.hub.web.viewcache import ViewCache
    from comfymulti.hub.workspaces import run_api

    harness, client = hub
    teacher = harness.user("teacher", Role.INSTRUCTOR)
    harness.user("user002")
    with transaction(harness.ctx.factory) as s:
        t, u = get_user(s, teacher), get_user(s, "user002")
    submitted(harness.ctx.queue, u)
    pages = []
    real_page = run_api._jobs_page
    monkeypatch.setattr(run_api, "_jobs_page", lambda *a: pages.append(1) or real_page(*a))
    token, url = harness.bearer("user002"), "/u/user002/api/jobs?status=in_progress,pending"
    assert client.get(url, headers=token).json()["jobs"][0]["queue_position"] == 1
    from comfymulti.queue import service

    monkeypatch.setattr(service, "ETA_MIN_AGE", 0.0)  # positions are computed again now
    submitted(harness.ctx.queue, t)  # goes first
    harness.ctx.job_lists = ViewCache()  # the answer's positions are out of date
    jobs = client.get(url, headers=token).json()["jobs"]
    assert jobs[0]["queue_position"] == 2 and "eta_seconds" in jobs[0]
    assert len(pages) == 1


def test_polls_finding_the_view_stale_together_share_one_computation(hub, monkeypatch
                                                                     ) -> None:
    import threading

    from comfymulti.db import transaction
    from comfymulti.hub.services.users import get_user

    harness, _ = hub
    harness.user("user002")
    with transaction(harness.ctx.factory) as s:
        u = get_user(s, "user002")
    queue = harness.ctx.queue
    jobs = [submitted(queue, u).id for _ in range(3)]
    computed: list[int] = []
    go = threading.Event()
    monkeypatch.setattr(scheduler, "order", held_back(scheduler.order, computed, go))
    answers: list[dict[str, tuple[int, float]]] = []
    polls = [threading.Thread(target=lambda: answers.append(queue.etas(u.id, jobs)))
             for _ in range(4)]
    for poll in polls:
        poll.start()
    time.sleep(0.2)  # all four have found the view stale
    go.set()
    for poll in polls:
        poll.join(10)
    assert len(computed) == 1
    assert len(answers) == 4 and all(a == answers[0] for a in answers)
    assert [answers[0][j][0] for j in jobs] == [1, 2, 3]


def test_job_lists_are_read_while_every_participant_thread_waits_to_submit(hub, monkeypatch
                                                                          ) -> None:
    """In a burst, submits wait for the write lock on the participants' database threads;
    the job-list polls of 300 open workspaces must not wait behind them for a thread."""
    import threading

    from comfymulti.hub.app import DB_THREADS
    from comfymulti.hub.workspaces import run_api

    harness, client = hub
    harness.user("user002")
    harness.user("user003")
    calls: list[int] = []
    go = threading.Event()
    monkeypatch.setattr(run_api, "_check",
                        held_back(run_api._check, calls, go))
    token = harness.bearer("user002")

    def submit() -> None:
        client.post("/u/user002/api/prompt", json={"prompt": simple_prompt()}, headers=token)

    submits = [threading.Thread(target=submit) for _ in range(DB_THREADS + 2)]
    for t in submits:
        t.start()
    wait_for(lambda: len(calls) == DB_THREADS)  # every participant thread is taken
    answers: list[int] = []
    poll = threading.Thread(target=lambda: answers.append(client.get(
        "/u/user003/api/jobs", headers=harness.bearer("user003")).status_code))
    poll.start()
    poll.join(5)
    answered_while_held = list(answers)
    go.set()
    for t in [poll, *submits]:
        t.join(15)
    assert answered_while_held == [200]
    assert len(calls) == DB_THREADS + 2
