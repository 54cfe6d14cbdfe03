"""How long do GPUs sit idle between jobs? Fixed-duration jobs through the real hub and workers.

For each worker count and job duration d, N jobs run through a live hub (uvicorn, real HTTP) and
worker agents, each with its own fake ComfyUI. Gaps are measured on each ComfyUI from its own
execution start/end times; efficiency = busy time / wall time (first start to last end, per
ComfyUI). Variants, side by side:

* prefetch=1 — this design: the next prompt waits in ComfyUI's queue behind the running one;
* prefetch=0 — the same agent, leasing only when ComfyUI is idle (long-poll);
* poll 2 s  — the predecessor: ask for work every 2 s when idle, poll /history every 2 s.

Also printed for prefetch=1: relay latency of ComfyUI events (worker receives it → hub's
EventBus hands it to a subscriber), p50/p99, without and with `executed` (which waits for its
file upload).

    python bench/gpu_idle.py            # the full run (about 15 minutes)
    python bench/gpu_idle.py --quick    # a few minutes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

import httpx
from sqlalchemy import func, select

from comfymulti.config import load_settings
from comfymulti.db import transaction
from comfymulti.hub.app import create_app
from comfymulti.models import Job, User
from comfymulti.queue.jobs import TERMINAL
from comfymulti.worker.agent import Agent
from comfymulti.worker.comfyui import ComfyUIClient
from comfymulti.worker.hub_client import HubClient
from comfymulti.worker.outputs import deliver_executed
from tests.conftest import HubHarness, LiveServer
from tests.fakes.comfyui import FakeComfyUI

USERS = ("ann", "bob", "cy", "dee")
VARIANTS = ("prefetch=1", "prefetch=0", "poll 2 s")


@dataclass
class Result:
    workers: int
    duration: float
    variant: str
    jobs: int
    gaps: list[float] = field(default_factory=list)
    busy: float = 0.0
    wall: float = 0.0
    latency: list[float] = field(default_factory=list)
    latency_executed: list[float] = field(default_factory=list)

    @property
    def mean_gap_ms(self) -> float:
        return 1000 * statistics.fmean(self.gaps) if self.gaps else float("nan")

    def gap_quantile_ms(self, q: float) -> float:
        if not self.gaps:
            return float("nan")
        ordered = sorted(self.gaps)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def efficiency(self) -> float:
        return self.busy / self.wall if self.wall else float("nan")


def prompt(i: int) -> dict[str, Any]:
    """A distinct prompt per job (ComfyUI would answer a repeated one from its cache)."""
    return {"1": {"class_type": "EmptyImage",
                  "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": i}},
            "2": {"class_type": "SaveImage",
                  "inputs": {"images": ["1", 0], "filename_prefix": "bench/img"}}}


async def polling_worker(url: str, token: str, comfy: FakeComfyUI, name: str,
                         stop: asyncio.Event) -> None:
    """The predecessor's worker: poll for work every 2 s, poll /history every 2 s."""
    hub, client = HubClient(url, token), ComfyUIClient(comfy.url)
    try:
        await hub.register(name, await client.catalog())
        while not stop.is_set():
            job = await hub.lease(wait=0)
            if job is None:
                await asyncio.sleep(2.0)
                continue
            await client.post_prompt(job.prompt, job.job_id, job.extra_data)
            entry = None
            while entry is None:
                await asyncio.sleep(2.0)
                entry = await client.history(job.job_id)
            for node, output in entry["outputs"].items():
                await deliver_executed({"node": node, "output": output}, job_id=job.job_id,
                                       lease_id=job.lease_id, hub=hub, comfy=client)
            await hub.complete(job.job_id, job.lease_id, "success")
    finally:
        await hub.aclose()
        await client.aclose()


async def run_case(workers: int, duration: float, jobs: int, variant: str) -> Result:
    result = Result(workers, duration, variant, jobs)
    with tempfile.TemporaryDirectory(prefix="cm-bench-") as tmp:
        # Short long-polls only so that stopping the hub between runs is quick.
        settings = load_settings(None, data_dir=tmp, queue={
            "max_queued_per_user": 10_000, "max_queued_total": 100_000,
            "long_poll_seconds": 1.0})
        harness = HubHarness(create_app(settings))
        server = LiveServer(harness.app).start()
        fakes = [FakeComfyUI(duration_for=lambda _p: duration).start() for _ in range(workers)]
        received: dict[str, list[float]] = {}
        delivered: list[tuple[float, dict[str, Any]]] = []
        collector = None
        try:
            for user in USERS:
                harness.user(user)
            token = harness.worker_token()
            with transaction(harness.ctx.factory) as s:
                user_ids = list(s.scalars(select(User.id)))
            hub_loop = server.server.servers[0].get_loop()
            collector = asyncio.run_coroutine_threadsafe(
                _collect(harness, user_ids, delivered), hub_loop)
            async with httpx.AsyncClient(base_url=server.url) as http:
                headers = {u: harness.bearer(u) for u in USERS}
                for i in range(jobs):
                    user = USERS[i % len(USERS)]
                    r = await http.post("/api/v1/jobs", json={"prompt": prompt(i)},
                                        headers=headers[user])
                    r.raise_for_status()
            await _serve_all(server.url, token, fakes, variant, jobs, harness, received)
        finally:
            if collector is not None:
                collector.cancel()
            for fake in fakes:
                fake.close()
            await asyncio.to_thread(server.stop)
    for fake in fakes:
        runs = sorted((e for e in fake.executions if e.ended), key=lambda e: e.started)
        if not runs:
            continue
        result.busy += sum(e.ended - e.started for e in runs)  # type: ignore[operator]
        result.wall += runs[-1].ended - runs[0].started  # type: ignore[operator]
        result.gaps += [b.started - a.ended for a, b in itertools.pairwise(runs)]
    _latencies(result, received, delivered)
    return result


async def _collect(harness: HubHarness, user_ids: list[int],
                   out: list[tuple[float, dict[str, Any]]]) -> None:
    """On the hub's own loop: what the EventBus hands to a user's socket, and when."""
    with contextlib.ExitStack() as stack:
        subs = [stack.enter_context(harness.ctx.bus.subscribe(uid)) for uid in user_ids]
        pending = {asyncio.ensure_future(sub.get()): sub for sub in subs}
        try:
            while True:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                now = time.monotonic()
                for fut in done:
                    sub = pending.pop(fut)
                    out.append((now, fut.result()))
                    pending[asyncio.ensure_future(sub.get())] = sub
        finally:
            for fut in pending:
                fut.cancel()


def _latencies(result: Result, received: dict[str, list[Any]],
               delivered: list[tuple[float, dict[str, Any]]]) -> None:
    by_job: dict[str, list[tuple[float, str]]] = {}
    for at, msg in delivered:
        kind = msg.get("type")
        if "job_id" not in msg or kind == "binary" or (
                kind == "executing" and (msg.get("data") or {}).get("node") is None):
            continue
        by_job.setdefault(msg["job_id"], []).append((at, str(kind)))
    for job_id, seen in received.items():
        for (sent_at, kind), (got_at, got_kind) in zip(seen, by_job.get(job_id, []),
                                                       strict=False):
            if kind != got_kind:
                break
            (result.latency_executed if kind == "executed" else result.latency).append(
                got_at - sent_at)


async def _serve_all(url: str, token: str, fakes: list[FakeComfyUI], variant: str, jobs: int,
                     harness: HubHarness, received: dict[str, list[Any]]) -> None:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    clients: list[tuple[HubClient, ComfyUIClient]] = []

    def hook(job_id: str, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind in ("status", "feature_flags") or (
                kind == "executing" and (msg.get("data") or {}).get("node") is None):
            return
        received.setdefault(job_id, []).append((time.monotonic(), kind))

    for n, fake in enumerate(fakes):
        name = f"gpu{n}"
        if variant == "poll 2 s":
            tasks.append(asyncio.create_task(polling_worker(url, token, fake, name, stop)))
            continue
        hub, comfy = HubClient(url, token), ComfyUIClient(fake.url)
        clients.append((hub, comfy))
        agent = Agent(hub, comfy, name=name, prefetch=1 if variant == "prefetch=1" else 0)
        agent.on_comfy_event = hook
        tasks.append(asyncio.create_task(agent.run()))
    try:
        while True:
            with transaction(harness.ctx.factory) as s:
                done = s.scalar(select(func.count()).select_from(Job).where(
                    Job.state.in_([str(t) for t in TERMINAL])))
            if done >= jobs:
                break
            for task in tasks:
                if task.done():
                    task.result()
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for hub, comfy in clients:
            await hub.aclose()
            await comfy.aclose()


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.1f}"


def print_table(results: list[Result]) -> None:
    head = (f"{'workers':>7} {'d (s)':>5} {'variant':>10} {'jobs':>5} {'mean gap ms':>11} "
            f"{'p95 gap ms':>10} {'max gap ms':>10} {'efficiency':>10} "
            f"{'relay p50/p99 ms':>16}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r.workers:>7} {r.duration:>5} {r.variant:>10} {r.jobs:>5} "
              f"{r.mean_gap_ms:>11.1f} {r.gap_quantile_ms(0.95):>10.1f} "
              f"{1000 * max(r.gaps, default=float('nan')):>10.1f} {100 * r.efficiency:>9.1f}% "
              f"{_ms(r.latency, 0.5) + ' / ' + _ms(r.latency, 0.99):>16}")
    print()
    print("side by side (ratio = other / prefetch=1):")
    cases = sorted({(r.workers, r.duration) for r in results})
    for workers, d in cases:
        row = {r.variant: r for r in results if (r.workers, r.duration) == (workers, d)}
        ours = row.get("prefetch=1")
        parts = [f"{workers} worker(s), d={d}s:"]
        for variant in VARIANTS:
            r = row.get(variant)
            if r is None:
                continue
            text = f"{variant} gap {r.mean_gap_ms:.1f} ms, eff {100 * r.efficiency:.1f}%"
            if ours is not None and r is not ours and ours.mean_gap_ms > 0:
                text += f" (gap x{r.mean_gap_ms / ours.mean_gap_ms:.0f})"
            parts.append(text)
        print("  " + " | ".join(parts))
    lat = [x for r in results if r.variant == "prefetch=1" for x in r.latency]
    lat_exec = [x for r in results if r.variant == "prefetch=1" for x in r.latency_executed]
    print()
    print(f"relay latency ComfyUI event → worker → hub → EventBus subscriber (prefetch=1 runs): "
          f"p50 {_ms(lat, 0.5)} ms, p99 {_ms(lat, 0.99)} ms over {len(lat)} events; "
          f"`executed` incl. file upload: p50 {_ms(lat_exec, 0.5)} ms, "
          f"p99 {_ms(lat_exec, 0.99)} ms over {len(lat_exec)}")


async def main(args: argparse.Namespace) -> None:
    results = []
    for workers in args.workers:
        for d in args.durations:
            for variant in args.variants:
                jobs = args.jobs if variant == "prefetch=1" else args.compare_jobs
                if variant == "poll 2 s":
                    jobs = min(jobs, args.baseline_jobs)
                jobs = max(jobs, workers * 2)
                started = time.monotonic()
                r = await run_case(workers, d, jobs, variant)
                print(f"  ran {workers} worker(s), d={d}s, {variant}, {jobs} jobs in "
                      f"{time.monotonic() - started:.0f} s: mean gap {r.mean_gap_ms:.1f} ms, "
                      f"efficiency {100 * r.efficiency:.1f}%", file=sys.stderr, flush=True)
                results.append(r)
    print_table(results)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per prefetch=1 run")
    parser.add_argument("--compare-jobs", type=int, default=40, help="jobs per prefetch=0 run")
    parser.add_argument("--baseline-jobs", type=int, default=20,
                        help="jobs per 'poll 2 s' run (each costs ~2-4 s of idle)")
    parser.add_argument("--durations", type=lambda v: [float(x) for x in v.split(",")],
                        default=[0.5, 2.0])
    parser.add_argument("--workers", type=lambda v: [int(x) for x in v.split(",")],
                        default=[1, 4])
    parser.add_argument("--variants", type=lambda v: v.split(","), default=list(VARIANTS))
    parser.add_argument("--quick", action="store_true",
                        help="40 / 16 / 8 jobs instead of 200 / 40 / 20")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.compare_jobs, args.baseline_jobs = 40, 16, 8
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(main(parse()))
