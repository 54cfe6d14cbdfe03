"""Every Prometheus metric of the hub, in one registry per app (so tests can build many)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from comfymulti.backup_status import SetHealth
from comfymulti.queue.jobs import JobState, Policy

# How often the event loop's lag is sampled, and the buckets it falls in (seconds).
LOOP_LAG_EVERY = 0.1
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class _Live(Collector):
    """Gauges read from the database at scrape time, so they are right after a restart."""

    def __init__(self, jobs_by_state: Callable[[], dict[str, int]],
                 workers_online: Callable[[], int],
                 cloud_costs: Callable[[], tuple[float, float]]) -> None:
        self._jobs = jobs_by_state
        self._workers = workers_online
        self._cloud = cloud_costs

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("comfymulti_jobs", "Jobs by state.", labels=["state"])
        counts = self._jobs()
        for state in JobState:
            jobs.add_metric([str(state)], counts.get(str(state), 0))
        yield jobs
        yield GaugeMetricFamily("comfymulti_workers_online", "Workers seen within a lease period.",
                                value=self._workers())
        spent, per_hour = self._cloud()
        yield GaugeMetricFamily("comfymulti_cloud_spent_dollars",
                                "What the cloud resources we created have cost so far.",
                                value=spent)
        yield GaugeMetricFamily("comfymulti_cloud_billing_dollars_per_hour",
                                "What our cloud resources that still exist cost per hour.",
                                value=per_hour)


class _Backups(Collector):
    """Each backup set's last success and age, read from the status files at scrape time."""

    def __init__(self, overview: Callable[[], dict[str, SetHealth]]) -> None:
        self._overview = overview

    def collect(self) -> Iterator[Metric]:
        last = GaugeMetricFamily("comfymulti_backup_last_success_timestamp_seconds",
                                 "Unix time of the set's last successful backup run (0: never).",
                                 labels=["set"])
        age = GaugeMetricFamily("comfymulti_backup_age_seconds",
                                "Seconds since the set's last successful backup (+Inf: never).",
                                labels=["set"])
        stale = GaugeMetricFamily("comfymulti_backup_overdue",
                                  "1 if the set has not succeeded for twice its schedule.",
                                  labels=["set"])
        for name, row in self._overview().items():
            last.add_metric([name], row.last_success or 0)
            age.add_metric([name], float("inf") if row.age_seconds is None else row.age_seconds)
            stale.add_metric([name], float(row.stale))
        yield from (last, age, stale)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs_submitted = Counter("comfymulti_jobs_submitted", "Jobs submitted.",
                                      registry=self.registry)
        self.dispatched = Counter("comfymulti_dispatch", "Jobs leased to workers, by policy.",
                                  ["policy"], registry=self.registry)
        for policy in Policy:
            self.dispatched.labels(policy=str(policy))
        self.wait_seconds = Histogram("comfymulti_job_wait_seconds",
                                      "Submit to first lease.", buckets=_BUCKETS,
                                      registry=self.registry)
        self.run_seconds = Histogram("comfymulti_job_run_seconds",
                                     "Execution start to end.", buckets=_BUCKETS,
                                     registry=self.registry)
        self.loop_lag = Histogram("comfymulti_event_loop_lag_seconds",
                                  "How late the hub's event loop wakes from a short sleep: what "
                                  "every request waits on top of its own work.",
                                  buckets=_LAG_BUCKETS, registry=self.registry)

    async def watch_loop(self) -> None:
        """Samples the running loop's lag every LOOP_LAG_EVERY seconds, until cancelled."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LOOP_LAG_EVERY)
            self.loop_lag.observe(max(0.0, time.perf_counter() - started - LOOP_LAG_EVERY))

    def watch(self, jobs_by_state: Callable[[], dict[str, int]],
              workers_online: Callable[[], int],
              cloud_costs: Callable[[], tuple[float, float]]) -> None:
        self.registry.register(_Live(jobs_by_state, workers_online, cloud_costs))

    def watch_backups(self, overview: Callable[[], dict[str, SetHealth]]) -> None:
        self.registry.register(_Backups(overview))
