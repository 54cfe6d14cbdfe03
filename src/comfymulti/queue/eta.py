"""How long jobs take: estimates from the measured run times of similar jobs."""

from __future__ import annotations

from statistics import median

from sqlalchemy import select
from sqlalchemy.orm import Session

from comfymulti.models import Job
from comfymulti.queue.jobs import JobState
from comfymulti.queue.scheduler import Candidate

DEFAULT_SECONDS = 60.0


class Estimator:
    """Median run time of the last jobs with the same requirements (node types and models),
    else of the last jobs of any kind, else a default."""

    def __init__(self, s: Session, sample: int = 200) -> None:
        rows = s.execute(
            select(Job.requirements, Job.started_at, Job.finished_at)
            .where(Job.state == str(JobState.SUCCEEDED), Job.started_at.is_not(None))
            .order_by(Job.seq.desc()).limit(sample)
        ).all()
        self._by_req: dict[str, list[float]] = {}
        durations = []
        for req, start, end in rows:
            if start is not None and end is not None:
                self._by_req.setdefault(req, []).append(end - start)
                durations.append(end - start)
        self._overall = median(durations) if durations else DEFAULT_SECONDS

    def seconds(self, requirements: str) -> float:
        same = self._by_req.get(requirements)
        return median(same[:20]) if same else self._overall


def queue_etas(order: list[Candidate], estimator: Estimator, workers: int,
               busy_seconds: float = 0.0) -> dict[str, tuple[int, float]]:
    """job id → (position in the queue, seconds until it is expected to finish).

    Assumes the running work (`busy_seconds` in total) and the jobs ahead are spread evenly
    over the online workers; with no worker online, the estimate is for one worker.
    """
    lanes = max(1, workers)
    ahead = busy_seconds
    result = {}
    for position, job in enumerate(order, start=1):
        own = estimator.seconds(job.requirements)
        result[job.job_id] = (position, ahead / lanes + own)
        ahead += own
    return result
