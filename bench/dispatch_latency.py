"""Dispatch latency: a job's submit (POST /api/v1/jobs) until a worker holds it.

Four workers long-poll the hub (ComfyMulti) versus four workers that ask every 2 s (the
predecessor's design), side by side in one run on one machine. The hub runs as
`comfymulti serve` in its own process; everything is real HTTP on loopback.

    python bench/dispatch_latency.py [--jobs 200] [--baseline-jobs 40]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time

import _common
import httpx

from comfymulti.worker.hub_client import HubClient
from tests.conftest import simple_prompt, tiny_catalog


async def run(mode: str, jobs: int, poll_every: float) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp, _common.HubSite(
            tmp, {"max_queued_per_user": 10_000}) as site:
        site.cli("users", "add", "bench", "--password", "bench-pass")
        api_token = site.cli("users", "token", "bench")
        token = site.cli("workers", "token")
        site.start()
        url = site.url
        received: dict[str, float] = {}
        stop = asyncio.Event()

        async def worker(i: int) -> None:
            client = HubClient(url, token)
            await client.register(f"w{i}", tiny_catalog())
            while not stop.is_set():
                if mode == "long-poll":
                    job = await client.lease(wait=2)
                else:
                    job = await client.lease(wait=0)
                    if job is None:
                        await asyncio.sleep(poll_every)
                        continue
                if job is not None:
                    received[job.job_id] = time.perf_counter()
                    await client.complete(job.job_id, job.lease_id, "success")
            await client.aclose()

        tasks = [asyncio.create_task(worker(i)) for i in range(4)]
        await asyncio.sleep(0.5)
        submitted: dict[str, float] = {}
        async with httpx.AsyncClient(base_url=url,
                                     headers={"Authorization": f"Bearer {api_token}"}) as c:
            for _ in range(jobs):
                await asyncio.sleep(random.uniform(0.0, 0.1 if mode == "long-poll" else 0.5))
                t0 = time.perf_counter()
                r = await c.post("/api/v1/jobs", json={"prompt": simple_prompt()})
                submitted[r.json()["id"]] = t0
        while len(received) < jobs:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)
        return [(received[j] - t) * 1000 for j, t in submitted.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--baseline-jobs", type=int, default=40)
    args = parser.parse_args()
    long_poll = asyncio.run(run("long-poll", args.jobs, 0))
    polling = asyncio.run(run("poll-2s", args.baseline_jobs, 2.0))
    rows = []
    for name, values in (("ComfyMulti long-poll (4 workers)", long_poll),
                         ("baseline: poll every 2 s (4 workers)", polling)):
        rows.append([name, len(values), f"{_common.pct(values, 50):.1f}",
                     f"{_common.pct(values, 99):.1f}", f"{_common.mean(values):.1f}"])
    ratio = _common.pct(polling, 50) / _common.pct(long_poll, 50)
    print(_common.table(["setup", "jobs", "p50 ms", "p99 ms", "mean ms"], rows))
    print(f"\nbaseline p50 / long-poll p50 = {ratio:.0f}x")


if __name__ == "__main__":
    main()
