"""The hub's own health in /metrics: how late its event loop runs."""

from __future__ import annotations

import asyncio
import time

import httpx

from comfymulti import metrics


def _lag(registry, sample: str, le: str | None = None) -> float:
    labels = {} if le is None else {"le": le}
    value = registry.get_sample_value(f"comfymulti_event_loop_lag_seconds_{sample}", labels)
    assert value is not None
    return value


def test_a_blocked_event_loop_shows_in_the_lag_histogram() -> None:
    hub = metrics.Metrics()

    async def run() -> None:
        watch = asyncio.create_task(hub.watch_loop())
        await asyncio.sleep(2.5 * metrics.LOOP_LAG_EVERY)
        time.sleep(0.4)  # what a blocking call on the loop does to every request
        await asyncio.sleep(2.5 * metrics.LOOP_LAG_EVERY)
        watch.cancel()

    asyncio.run(run())
    count = _lag(hub.registry, "count")
    assert count >= 3
    assert _lag(hub.registry, "bucket", "0.25") == count - 1  # the one late wake-up
    assert _lag(hub.registry, "sum") >= 0.4 - metrics.LOOP_LAG_EVERY


def test_a_running_hub_reports_its_loop_lag(live_hub) -> None:
    _, url = live_hub()
    time.sleep(3 * metrics.LOOP_LAG_EVERY)
    text = httpx.get(f"{url}/metrics").text
    count = next(line for line in text.splitlines()
                 if line.startswith("comfymulti_event_loop_lag_seconds_count"))
    assert float(count.split()[-1]) >= 2
