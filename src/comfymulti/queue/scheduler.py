"""Which queued job runs next: pure functions over queued jobs, no I/O.

Under every policy, jobs the admin marked "run next" go first (earliest mark first), then
instructor jobs (oldest first), then the policy's order:
- fifo: submission order;
- fair: round-robin between users with queued work, oldest job of each; the user served
  longest ago goes first, so one participant with 20 variations cannot starve the others;
- priority: explicit priority (higher first), submission order within.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from comfymulti.queue.jobs import Policy


@dataclass(frozen=True, slots=True)
class Candidate:
    seq: int  # submission order
    job_id: str
    user_id: int
    priority: int
    instructor: bool
    run_next_at: float | None
    requirements: str  # opaque key: jobs with equal keys are equally runnable on a worker


def _fair(jobs: list[Candidate], last_dispatch: Mapping[int, int]) -> list[Candidate]:
    per_user: dict[int, list[Candidate]] = {}
    for job in sorted(jobs, key=lambda j: j.seq):
        per_user.setdefault(job.user_id, []).append(job)
    heap = [(last_dispatch.get(u, 0), js[0].seq, u) for u, js in per_user.items()]
    heapq.heapify(heap)
    tick = max([*last_dispatch.values(), 0]) + 1
    out: list[Candidate] = []
    positions = dict.fromkeys(per_user, 0)
    while heap:
        _, _, user = heapq.heappop(heap)
        jobs_of_user = per_user[user]
        out.append(jobs_of_user[positions[user]])
        positions[user] += 1
        if positions[user] < len(jobs_of_user):
            heapq.heappush(heap, (tick, jobs_of_user[positions[user]].seq, user))
            tick += 1
    return out


def _fifo(jobs: list[Candidate], _last: Mapping[int, int]) -> list[Candidate]:
    return sorted(jobs, key=lambda j: j.seq)


def _priority(jobs: list[Candidate], _last: Mapping[int, int]) -> list[Candidate]:
    return sorted(jobs, key=lambda j: (-j.priority, j.seq))


# Every policy has its order here; Policy(...) refuses a name that is not one.
_ORDER: dict[Policy, Callable[[list[Candidate], Mapping[int, int]], list[Candidate]]] = {
    Policy.FIFO: _fifo,
    Policy.FAIR: _fair,
    Policy.PRIORITY: _priority,
}


def order(
    policy: Policy, jobs: Iterable[Candidate], last_dispatch: Mapping[int, int]
) -> list[Candidate]:
    """The expected dispatch order of `jobs` if every worker could run every job."""
    jobs = list(jobs)
    boosted = sorted((j for j in jobs if j.run_next_at is not None), key=lambda j: j.run_next_at)
    rest = [j for j in jobs if j.run_next_at is None]
    instructor = sorted((j for j in rest if j.instructor), key=lambda j: j.seq)
    normal = [j for j in rest if not j.instructor]
    return boosted + instructor + _ORDER[Policy(policy)](normal, last_dispatch)


# The key whose smallest job each policy's order puts first (among jobs not boosted and not
# an instructor's): pick needs that one job, not the whole order.
_FIRST: dict[Policy, Callable[[Candidate, Mapping[int, int]], tuple[int, ...]]] = {
    Policy.FIFO: lambda j, _last: (j.seq,),
    Policy.FAIR: lambda j, last: (last.get(j.user_id, 0), j.seq),
    Policy.PRIORITY: lambda j, _last: (-j.priority, j.seq),
}


def pick(
    policy: Policy,
    jobs: Iterable[Candidate],
    last_dispatch: Mapping[int, int],
    runnable: Callable[[str], bool] = lambda _req: True,
) -> Candidate | None:
    """The job a worker should get now: the first in `order` among those it can run, found
    in one pass (every lease asks, with the whole queue; sorting it all each time made
    dispatch the hub's bottleneck in a burst)."""
    cache: dict[str, bool] = {}

    def ok(job: Candidate) -> bool:
        if job.requirements not in cache:
            cache[job.requirements] = runnable(job.requirements)
        return cache[job.requirements]

    eligible = [j for j in jobs if ok(j)]
    if boosted := [j for j in eligible if j.run_next_at is not None]:
        return min(boosted, key=lambda j: j.run_next_at or 0.0)
    if instructor := [j for j in eligible if j.instructor]:
        return min(instructor, key=lambda j: j.seq)
    first = _FIRST[Policy(policy)]
    return min(eligible, key=lambda j: first(j, last_dispatch), default=None)
