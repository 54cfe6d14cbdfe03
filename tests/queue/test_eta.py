from __future__ import annotations

from comfymulti.queue.eta import DEFAULT_SECONDS, queue_etas
from comfymulti.queue.scheduler import Candidate


class FixedEstimator:
    def __init__(self, by_req: dict[str, float]) -> None:
        self.by_req = by_req

    def seconds(self, requirements: str) -> float:
        return self.by_req.get(requirements, DEFAULT_SECONDS)


def c(seq: int, req: str) -> Candidate:
    return Candidate(seq, f"j{seq}", 1, 0, False, None, req)


def test_positions_and_etas_spread_over_workers() -> None:
    order = [c(1, "video"), c(2, "image"), c(3, "image")]
    est = FixedEstimator({"video": 100.0, "image": 10.0})
    assert queue_etas(order, est, workers=1) == {
        "j1": (1, 100.0), "j2": (2, 110.0), "j3": (3, 120.0)}
    two = queue_etas(order, est, workers=2, busy_seconds=20.0)
    assert two["j1"] == (1, 110.0)  # 20 s of running work over 2 workers, then its own 100 s
    assert two["j2"] == (2, 70.0)  # (20 + 100) / 2 ahead, then 10 s
    assert two["j3"] == (3, 75.0)


def test_no_worker_online_estimates_for_one(tmp_path) -> None:
    est = FixedEstimator({})
    assert queue_etas([c(1, "x")], est, workers=0) == {"j1": (1, DEFAULT_SECONDS)}
