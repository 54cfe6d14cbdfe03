from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from comfymulti.queue.scheduler import Candidate, order, pick


def job(seq: int, user: int, *, instructor: bool = False, priority: int = 0,
        run_next_at: float | None = None, req: str = "r") -> Candidate:
    return Candidate(seq, f"j{seq}", user, priority, instructor, run_next_at, req)


def users_of(jobs: list[Candidate]) -> str:
    return "".join("?ABCDI"[j.user_id] for j in jobs)


def abc_queue() -> list[Candidate]:
    jobs, seq = [], 0
    for user, n in ((1, 10), (2, 3), (3, 1)):
        for _ in range(n):
            seq += 1
            jobs.append(job(seq, user))
    return jobs


def test_fair_round_robin_between_users() -> None:
    assert users_of(order("fair", abc_queue(), {})) == "ABCABABAAAAAAA"


def test_fair_resumes_rotation_from_persisted_dispatch_counters() -> None:
    # A was served most recently, so B goes first, then C, then A.
    assert users_of(order("fair", abc_queue(), {1: 9, 2: 7, 3: 8})[:4]) == "BCAB"


def test_fifo_and_priority() -> None:
    jobs = [job(1, 1), job(2, 2, priority=5), job(3, 1, priority=5), job(4, 3)]
    assert [j.seq for j in order("fifo", jobs, {})] == [1, 2, 3, 4]
    assert [j.seq for j in order("priority", jobs, {})] == [2, 3, 1, 4]


def test_instructor_job_submitted_last_runs_next_under_every_policy() -> None:
    for policy in ("fifo", "fair", "priority"):
        jobs = [*abc_queue(), job(99, 5, instructor=True)]
        assert order(policy, jobs, {})[0].seq == 99, policy


def test_run_next_beats_instructor_and_keeps_mark_order() -> None:
    jobs = [job(1, 1), job(2, 5, instructor=True), job(3, 2, run_next_at=20.0),
            job(4, 3, run_next_at=10.0)]
    assert [j.seq for j in order("fair", jobs, {})] == [4, 3, 2, 1]


def test_pick_skips_jobs_the_worker_cannot_run() -> None:
    jobs = [job(1, 1, req="video"), job(2, 2, req="image"), job(3, 1, req="image")]
    picked = pick("fair", jobs, {}, runnable=lambda r: r == "image")
    assert picked is not None and picked.seq == 2
    assert pick("fair", jobs, {}, runnable=lambda r: False) is None


_JOBS = st.lists(st.tuples(st.integers(1, 4), st.booleans(), st.integers(0, 2),
                           st.one_of(st.none(), st.integers(0, 3).map(float)),
                           st.sampled_from(["a", "b"])), max_size=30)


@settings(max_examples=300, deadline=None)
@given(_JOBS, st.dictionaries(st.integers(1, 4), st.integers(0, 5)),
       st.sampled_from(["fifo", "fair", "priority"]), st.sampled_from(["a", "b", "ab"]))
def test_pick_is_the_first_of_the_order_without_building_it(
        rows: list[tuple[int, bool, int, float | None, str]], last: dict[int, int],
        policy: str, runs: str) -> None:
    """Every lease picks from the whole queue: one pass, never the whole order sorted."""
    jobs = [job(seq, user, instructor=instructor and not seq % 3, priority=prio,
                run_next_at=boost if not seq % 4 else None, req=req)
            for seq, (user, instructor, prio, boost, req) in enumerate(rows, start=1)]
    eligible = [j for j in jobs if j.requirements in runs]
    expected = (order(policy, eligible, last) or [None])[0]
    with patch("comfymulti.queue.scheduler.order", side_effect=AssertionError("sorted all")):
        assert pick(policy, jobs, last, runnable=lambda r: r in runs) == expected
