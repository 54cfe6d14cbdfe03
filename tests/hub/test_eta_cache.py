"""Every participant's job list shows positions and ETAs: computed once per queue change and
shared, not once per poll (a long queue must not slow the drain that shortens it)."""

from __future__ import annotations

from comfymulti.catalog.prompt import Submission
from comfymulti.queue import scheduler
from comfymulti.queue.jobs import Role
from tests.conftest import simple_prompt


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
        queue.submit(t, Submission(simple_prompt(), {}))
    mine = queue.submit(u, Submission(simple_prompt(), {}))
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
    queue.submit(u, Submission(simple_prompt(), {}))
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
