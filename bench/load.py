"""300 participants and a 1,000-prompt burst against one hub, next to the hardening targets.

Run as an organiser would: `comfymulti serve` in its own process, accounts from `comfymulti users
create`, and one real `comfymulti worker` process per GPU, each driving its own fake ComfyUI
0.33.0 (tests/fakes) whose jobs take a fixed time; the fakes live in helper processes, five each.
This script is every participant's browser: the participants are shared out among a few client
processes (`--clients`), each one asyncio loop, so one loop's own delay does not sit inside
every latency it measures; the parent process only conducts the phases and samples /proc:

* phase 1: everyone logs in at once (POST /login), opens the workspace as the frontend does (the
  page and the start-up routes incl. the ≈1.6 MB object_info, over at most 6 connections),
  opens /u/<user>/ws?clientId=… (status, feature_flags) and from then on polls the job list
  (the frontend's two /api/jobs queries) every 2-5 s;
* phase 2: a burst of prompts. 5 % of the participants are heavy users with 60 % of the prompts,
  submitted back to back (on 429, the per-user cap, they wait 1 s and try again); everyone else
  submits 1-2 within the first 0.2 s. Each socket notes when `executing {node: null}` arrives
  for its prompts; the fakes record when each job really ended (CLOCK_MONOTONIC is one clock
  for every process), which gives the done-notification latency, the drain time and the order
  of completion (fairness: heavy users' share of the first N completed jobs, N = participants
  who submitted).

Hub CPU and RSS are read from /proc every 0.5 s; each client process reports how late its loop
woke up (its own lag, inside the latencies it measured). Baseline side by side: an outside tester's
measurement of the same scenario at 300 participants, 1,000 prompts, 20 workers, 0.5 s jobs.

    python bench/load.py              # 300 participants, 1,000 prompts, 20 workers (~4 min)
    python bench/load.py --quick      # 60 participants, 200 prompts, 5 workers
    python bench/load.py --policy fifo
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import json
import multiprocessing
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import _common
import httpx
import websockets

# httpcore tries `import sniffio` on every connection-pool lock; without sniffio installed each
# try searches all of sys.path again (~7 % of this client's CPU). None here fails it at once.
sys.modules.setdefault("sniffio", None)  # type: ignore[assignment]

HEAVY_USERS, HEAVY_PROMPTS = 0.05, 0.6
FAKES_PER_PROCESS = 5
_TREE = "&recurse=true&split=false&full_info=true"
# What the frontend asks for when a workspace opens, after the page and before the socket, then
# after it (as the measured ComfyUI protocol lists them); (path, whether 404 is a normal answer).
BOOT = [("user.css", True), ("api/userdata/user.css", True), ("api/features", False),
        ("api/users", False), ("api/system_stats", False), ("api/settings", False),
        ("api/userdata?dir=workflows" + _TREE, True), ("api/userdata?dir=workflows" + _TREE, True),
        ("api/i18n", False), ("api/extensions", False),
        ("api/userdata/comfy.templates.json", True), ("api/userdata?dir=subgraphs" + _TREE, True)]
CATALOG = ["api/object_info", "api/global_subgraphs", "api/node_replacements",
           "internal/folder_paths", "api/experiment/models"]
TIMEOUT = httpx.Timeout(60.0)
FAKES = """
import json, sys
from tests.fakes.comfyui import FakeComfyUI
count, seconds = int(sys.argv[1]), float(sys.argv[2])
fakes = [FakeComfyUI(duration_for=lambda _p: seconds).start() for _ in range(count)]
print(json.dumps([f.url for f in fakes]), flush=True)
sys.stdin.read()
print(json.dumps([[e.prompt_id, e.ended, e.status] for f in fakes for e in f.executions]),
      flush=True)
for f in fakes:
    f.close()
"""


def prompt(i: int) -> dict[str, Any]:
    """A distinct prompt per job (ComfyUI would answer a repeated one from its cache)."""
    return {"1": {"class_type": "EmptyImage",
                  "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": i}},
            "2": {"class_type": "SaveImage",
                  "inputs": {"images": ["1", 0], "filename_prefix": "load"}}}


@dataclass
class Stats:
    """Everything the browsers measured; `phase` names the current one for job-list latency."""

    phase: str = "phase 1"
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    capped: int = 0  # 429 answers to a submit: the per-user cap, expected for heavy users
    last_accepted: float = 0.0  # monotonic time of the last accepted prompt
    unsent: int = 0  # prompts of participants whose workspace never opened (already an error)


class Browser:
    """One participant's browser: its own cookie jar, at most 6 connections, one socket."""

    def __init__(self, url: str, name: str, password: str, stats: Stats,
                 tls: ssl.SSLContext) -> None:
        self.url, self.name, self.password, self.stats = url, name, password, stats
        self.base = f"/u/{name}/"
        self.client_id = uuid.uuid4().hex
        self.http = httpx.AsyncClient(base_url=url, timeout=TIMEOUT, verify=tls,
                                      limits=httpx.Limits(max_connections=6))
        self.ws: websockets.ClientConnection | None = None
        self.accepted: list[str] = []
        self.notified: dict[str, float] = {}
        self.closing = False

    async def request(self, kind: str, method: str, path: str, key: str | None = None,
                      missing_ok: bool = False, **kw: Any) -> httpx.Response | None:
        """Time one request under `key` (default: kind); count failures by kind."""
        start = time.monotonic()
        try:
            r = await self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            self.stats.errors[f"{kind}: {type(exc).__name__}"] += 1
            return None
        if r.status_code == 429 and kind == "submit":
            self.stats.capped += 1
            return r
        if r.status_code >= 400 and not (missing_ok and r.status_code == 404):
            self.stats.errors[f"{kind}: HTTP {r.status_code}"] += 1
            return None
        self.stats.latency[key or kind].append(time.monotonic() - start)
        return r

    async def login(self) -> bool:
        r = await self.request("login", "POST", "/login",
                               data={"username": self.name, "password": self.password})
        if r is not None and not self.http.cookies.get("comfymulti_session"):
            self.stats.errors["login: no session cookie"] += 1
            return False
        return r is not None

    async def open_workspace(self) -> bool:
        """The page, the start-up routes, the socket's greeting, then the catalog; the
        frontend's first job list comes with the first poll."""
        start = time.monotonic()
        if await self.request("workspace page", "GET", self.base) is None:
            return False
        answers = await asyncio.gather(
            self.request("settings write", "POST",
                         self.base + "api/settings/Comfy.InstalledVersion", json="1.28.7"),
            *(self.request("start-up routes", "GET", self.base + path, missing_ok=ok)
              for path, ok in BOOT))
        if any(r is None for r in answers) or not await self.open_socket():
            return False
        answers = await asyncio.gather(*(self.request("start-up routes", "GET", self.base + path)
                                         for path in CATALOG))
        if any(r is None for r in answers):
            return False
        self.stats.latency["workspace open"].append(time.monotonic() - start)
        return True

    async def open_socket(self) -> bool:
        ws_url = self.url.replace("http", "ws", 1) + self.base + f"ws?clientId={self.client_id}"
        cookie = self.http.cookies.get("comfymulti_session")
        if self.ws is not None:  # a reload: the page's old socket goes away
            await self.ws.close()
        try:
            self.ws = await websockets.connect(
                ws_url, additional_headers={"Cookie": f"comfymulti_session={cookie}"},
                ping_interval=None, open_timeout=60, max_size=None)
            await self.ws.send(json.dumps({"type": "feature_flags", "data": {}}))
            seen: set[str] = set()
            async with asyncio.timeout(60):
                while not {"status", "feature_flags"} <= seen:
                    msg = await self.ws.recv()
                    if isinstance(msg, str):
                        seen.add(json.loads(msg).get("type"))
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            closed = getattr(exc, "rcvd", None)
            why = f" {closed.code} {closed.reason}" if closed is not None else ""
            self.stats.errors[f"socket open: {type(exc).__name__}{why}"] += 1
            return False
        return True

    async def listen(self) -> None:
        """Note when each of our prompts is announced done, as the frontend learns it."""
        assert self.ws is not None
        try:
            async for raw in self.ws:
                if not isinstance(raw, str):
                    continue  # previews
                msg = json.loads(raw)
                data = msg.get("data") or {}
                if msg.get("type") == "executing" and data.get("node") is None \
                        and data.get("prompt_id"):
                    self.notified.setdefault(data["prompt_id"], time.monotonic())
                elif msg.get("type") == "execution_error":
                    self.stats.errors["job: execution_error"] += 1
        except websockets.ConnectionClosed as exc:
            if not self.closing:
                self.stats.errors[f"socket: {type(exc).__name__}"] += 1
            return
        if not self.closing:
            self.stats.errors["socket: closed by the hub"] += 1

    async def poll(self) -> None:
        """The job list, as the frontend refreshes its queue and history panels."""
        while True:
            key = f"job list ({self.stats.phase})"
            await asyncio.gather(
                self.request("job list", "GET", self.base + "api/jobs",
                             key, params={"status": "in_progress,pending", "limit": 200,
                                          "offset": 0}),
                self.request("job list", "GET", self.base + "api/jobs", key,
                             params={"status": "completed,failed,cancelled", "limit": 64,
                                     "offset": 0}))
            await asyncio.sleep(random.uniform(2, 5))

    async def submit(self, numbers: list[int], give_up: float) -> None:
        """Queue prompts back to back; on 429 (per-user cap) wait 1 s and try again."""
        for n in numbers:
            while True:
                r = await self.request("submit", "POST", self.base + "api/prompt",
                                       json={"prompt": prompt(n), "client_id": self.client_id})
                if r is None:
                    break
                if r.status_code != 429:
                    body = r.json()
                    if body.get("node_errors"):
                        self.stats.errors["submit: node_errors"] += 1
                    self.accepted.append(body["prompt_id"])
                    self.stats.last_accepted = time.monotonic()
                    break
                if time.monotonic() > give_up:
                    self.stats.errors["submit: still capped at the deadline"] += 1
                    return
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            await self.ws.close()
        await self.http.aclose()


@dataclass
class Sample:
    at: float
    hub_rss: float
    hub_cpu: float
    client_cpu: list[float]  # per client process
    rest_cpu: float  # workers + fake ComfyUIs


def sample(hub: int, clients: list[int], rest: list[int], out: list[Sample],
           stop: threading.Event) -> None:
    """/proc every 0.5 s until `stop` is set (a thread of the conducting process)."""
    def cpu_of(pids: Iterable[int]) -> float:
        total = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                total += _common.proc_stats(pid)[1]
        return total

    while not stop.wait(0.5):
        rss, cpu = _common.proc_stats(hub)
        out.append(Sample(time.monotonic(), rss, cpu, [cpu_of([pid]) for pid in clients],
                          cpu_of(rest)))


async def lag(out: list[float]) -> None:
    """How late this loop wakes up from a 0.5 s sleep, until cancelled."""
    while True:
        due = time.monotonic() + 0.5
        await asyncio.sleep(0.5)
        out.append(max(0.0, time.monotonic() - due))


class FakeHosts:
    """Fake ComfyUIs with fixed-duration jobs, FAKES_PER_PROCESS per helper process."""

    def __init__(self, count: int, seconds: float) -> None:
        sizes = [min(FAKES_PER_PROCESS, count - i) for i in range(0, count, FAKES_PER_PROCESS)]
        self.procs = [subprocess.Popen([sys.executable, "-c", FAKES, str(n), str(seconds)],
                                       cwd=_common.ROOT, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True) for n in sizes]
        self.urls: list[str] = []
        for proc in self.procs:
            assert proc.stdout is not None
            self.urls += json.loads(proc.stdout.readline())

    def records(self) -> dict[str, tuple[float, str]]:
        """Stop the fakes; prompt id → (monotonic end, status) of what they executed."""
        ended: dict[str, tuple[float, str]] = {}
        for proc in self.procs:
            out, _ = proc.communicate("", timeout=30)
            for prompt_id, at, status in json.loads(out.splitlines()[0]):
                if at is not None:
                    ended[prompt_id] = (at, status)
        return ended

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@dataclass
class Seen:
    """What one browser took home: its accepted prompts and when each was announced done."""

    name: str
    accepted: list[str]
    notified: dict[str, float]


@dataclass
class Part:
    """One client process's share of the participants and what it measured there."""

    stats: Stats
    browsers: list[Seen]
    lags: list[float]
    t_logged: float  # the last login it saw answered


@dataclass
class Run:
    args: argparse.Namespace
    stats: Stats
    browsers: list[Seen]
    heavy: set[str]
    samples: list[Sample]
    lags: list[float]  # every client loop's lag samples
    t_start: float
    t_logged: float  # the last login answered
    t_burst: float
    t_end: float
    hub_lags: list[dict[float, float]]  # the hub's loop lag histogram in phase 1, in the burst
    ended: dict[str, tuple[float, str]] = field(default_factory=dict)


def plan(users: int, prompts: int) -> tuple[int, list[int]]:
    """(heavy users, prompts per user): heavy users first, then the rest 1-2 each."""
    heavy = max(1, round(users * HEAVY_USERS))
    big = round(prompts * HEAVY_PROMPTS)
    counts = [big // heavy + (i < big % heavy) for i in range(heavy)]
    light, rest = users - heavy, prompts - big
    counts += [rest // light + (i < rest % light) for i in range(light)]
    return heavy, counts


def client(conn: Connection, url: str, accounts: list[tuple[str, str]],
           prompts: list[list[int]], heavy: set[str]) -> None:
    """A client process: its share of the browsers, through the phases the parent calls."""
    random.seed()  # forked: not the same waits as every other client
    conn.send(asyncio.run(_client(conn, url, accounts, prompts, heavy)))


async def _client(conn: Connection, url: str, accounts: list[tuple[str, str]],
                  prompts: list[list[int]], heavy: set[str]) -> Part:
    stats, tls, lags = Stats(), ssl.create_default_context(), []
    browsers = [Browser(url, name, pw, stats, tls) for name, pw in accounts]
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(lag(lags))]
    logged: list[float] = []

    async def order() -> Any:
        return await asyncio.to_thread(conn.recv)

    async def arrive(b: Browser) -> None:
        """Log in, go straight on to the workspace (the login's redirect), then stay; a page
        that failed to load is reloaded, up to twice, as a person would."""
        if not await b.login():
            return
        logged.append(time.monotonic())
        for _ in range(3):
            if await b.open_workspace():
                tasks.append(asyncio.create_task(b.listen()))
                tasks.append(asyncio.create_task(b.poll()))
                return
        await b.close()

    async def burst(b: Browser, mine: list[int], give_up: float) -> None:
        if b.ws is None or b.closing:  # no workspace, no Queue button
            stats.unsent += len(mine)
            return
        if b.name not in heavy:
            await asyncio.sleep(random.uniform(0, 0.2))
        await b.submit(mine, give_up)

    try:
        await order()  # everyone arrives at once
        await asyncio.gather(*(arrive(b) for b in browsers))
        conn.send("open")
        give_up = await order()
        stats.phase = "burst"
        submitting = asyncio.gather(*(burst(b, mine, give_up)
                                      for b, mine in zip(browsers, prompts, strict=True)))
        stop, drained = asyncio.create_task(order()), False
        while not stop.done():
            await asyncio.wait([stop], timeout=0.25)
            if not drained and submitting.done() and all(set(b.accepted) <= b.notified.keys()
                                                          for b in browsers):
                conn.send("drained")
                drained = True
        submitting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await submitting
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(b.close() for b in browsers), return_exceptions=True)
    return Part(stats, [Seen(b.name, b.accepted, b.notified) for b in browsers], lags,
                max(logged, default=0.0))


def _result(conn: Connection) -> Part:
    """A client's Part, past a late "drained" (sent after the parent gave up waiting)."""
    while isinstance(answer := conn.recv(), str):
        pass
    return answer  # type: ignore[no-any-return]


def drive(args: argparse.Namespace, url: str, accounts: list[tuple[str, str]],
          hub: int, rest: list[int]) -> Run:
    """Share the participants out among the client processes and conduct the phases."""
    heavy_n, counts = plan(len(accounts), args.prompts)
    heavy = {name for name, _ in accounts[:heavy_n]}
    numbers = iter(range(args.prompts))
    prompts = [[next(numbers) for _ in range(n)] for n in counts]
    k = args.clients
    fork = multiprocessing.get_context("fork")  # no threads yet in this process
    conns, procs = [], []
    for i in range(k):
        mine, theirs = fork.Pipe()
        procs.append(fork.Process(target=client, daemon=True,
                                  args=(theirs, url, accounts[i::k], prompts[i::k], heavy)))
        procs[-1].start()
        conns.append(mine)
    samples: list[Sample] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(hub, [p.pid for p in procs], rest,
                                                    samples, stop))
    sampler.start()

    def tell(what: Any) -> None:
        for conn in conns:
            conn.send(what)

    def hear(until: float) -> None:
        """Until every client has spoken once more (or `until`)."""
        waiting = list(conns)
        while waiting and time.monotonic() < until:
            for conn in wait(waiting, timeout=until - time.monotonic()):
                conn.recv()
                waiting.remove(conn)  # type: ignore[arg-type]

    try:
        lag_at = [hub_lag(url)]
        t_start = time.monotonic()
        tell("arrive")
        hear(t_start + 600)
        print(f"  workspaces open at {time.monotonic() - t_start:.1f} s; polling "
              f"{args.settle:.0f} s before the burst", file=sys.stderr)
        time.sleep(args.settle)
        lag_at.append(hub_lag(url))
        t_burst = time.monotonic()
        ideal = args.prompts * args.job_seconds / args.workers
        give_up = t_burst + 6 * ideal + 30
        tell(give_up)
        hear(give_up)
        t_end = time.monotonic()
        lag_at.append(hub_lag(url))
        print(f"  burst over after {t_end - t_burst:.1f} s", file=sys.stderr)
        tell("stop")
        parts = [_result(conn) for conn in conns]
    finally:
        stop.set()
        sampler.join()
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    stats = Stats()
    for part in parts:
        for key, values in part.stats.latency.items():
            stats.latency[key] += values
        stats.errors += part.stats.errors
        stats.capped += part.stats.capped
        stats.unsent += part.stats.unsent
        stats.last_accepted = max(stats.last_accepted, part.stats.last_accepted)
    return Run(args, stats, [b for part in parts for b in part.browsers], heavy, samples,
               [x for part in parts for x in part.lags], t_start,
               max((part.t_logged for part in parts), default=t_start), t_burst, t_end,
               [{le: b - a for (le, a), b in zip(before.items(), after.values(), strict=True)}
                for before, after in itertools.pairwise(lag_at)])


def hub_lag(url: str) -> dict[float, float]:
    """The hub's event-loop lag histogram so far ({upper bound: cumulative count}), from its
    /metrics: how late its loop ran, whatever the clients measured."""
    prefix = 'comfymulti_event_loop_lag_seconds_bucket{le="'
    return {float(line[len(prefix):].split('"', 1)[0]): float(line.split()[-1])
            for line in httpx.get(f"{url}/metrics", timeout=TIMEOUT).text.splitlines()
            if line.startswith(prefix)}


def quantile(histogram: dict[float, float], q: float) -> float:
    """Prometheus' histogram_quantile: linear within the bucket the rank falls in."""
    total = histogram.get(float("inf"), 0.0)
    if not total:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in sorted(histogram.items()):
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


def rates(samples: list[Sample], pick: Callable[[Sample], float]) -> list[float]:
    """CPU % of one core between consecutive samples."""
    return [100 * (pick(b) - pick(a)) / (b.at - a.at)
            for a, b in itertools.pairwise(samples) if b.at > a.at]


def report(run: Run) -> None:
    args, stats, lat = run.args, run.stats, run.stats.latency
    owner = {pid: b for b in run.browsers for pid in b.accepted}
    notify, done = [], []
    for pid, b in owner.items():
        at, status = run.ended.get(pid, (None, "never ran"))
        if at is None or status != "success":
            stats.errors[f"job: {status}"] += 1
            continue
        done.append((at, pid))
        if pid in b.notified:
            notify.append(b.notified[pid] - at)
        else:
            stats.errors["socket: no done notification"] += 1
    done.sort()
    drain = done[-1][0] - run.t_burst if done else float("nan")
    ideal = len(owner) * args.job_seconds / args.workers
    active = {b.name for b in run.browsers if b.accepted}  # round-robin shares among these
    fair_share = len(run.heavy & active) / max(1, len(active))
    first = [pid for _, pid in done[:len(active)]]
    heavy_share = sum(owner[p].name in run.heavy for p in first) / max(1, len(first))
    submitted_share = sum(len(b.accepted) for b in run.browsers if b.name in run.heavy) / max(
        1, len(owner))
    hub_cpu = rates(run.samples, lambda s: s.hub_cpu)
    clients = range(args.clients)
    client_cpu = [_common.mean(rates(run.samples, lambda s, i=i: s.client_cpu[i]))
                  for i in clients]
    rest_cpu = rates(run.samples, lambda s: s.rest_cpu)
    rss = max(s.hub_rss for s in run.samples)
    rss_login = max((s.hub_rss for s in run.samples if s.at <= run.t_logged), default=0.0)
    lags = [1000 * x for x in run.lags]

    def ms(key: str) -> tuple[str, float]:
        values = lat.get(key, [])
        return (f"{1000 * _common.pct(values, 50):.0f} / {1000 * _common.pct(values, 99):.0f}",
                1000 * _common.pct(values, 99))

    def row(metric: str, shown: str, target: str, ok: bool | None, tester: str,
            ratio: float | None = None) -> list[object]:
        verdict = "-" if ok is None else ("PASS" if ok else "FAIL")
        return [metric, shown, target, verdict, tester, "-" if ratio is None else f"{ratio:.2f}"]

    errors = sum(stats.errors.values())
    login, login99 = ms("login")
    jl1, jl1_99 = ms("job list (phase 1)")
    jl2, jl2_99 = ms("job list (burst)")
    sub, sub99 = ms("submit")
    opened, _ = ms("workspace open")
    n99 = 1000 * _common.pct(notify, 99)
    cpu_avg = _common.mean(hub_cpu)
    client_busiest = max(client_cpu, default=0.0)
    rows = [
        row("errors (all kinds)", str(errors), "0", errors == 0, "1-2", errors / 1.5),
        *([f"  {kind}", str(n), "", "", "", ""] for kind, n in stats.errors.most_common()),
        row("hub CPU avg, % of one core", f"{cpu_avg:.0f}", "< 100", cpu_avg < 100, "91",
            cpu_avg / 91),
        row("hub CPU peak (0.5 s)", f"{max(hub_cpu, default=0):.0f}", "", None, ""),
        row("hub RSS max, MiB", f"{rss:.0f}", "<= 400", rss <= 400, "2400-2700", rss / 2550),
        row("  of which while logins run", f"{rss_login:.0f}", "", None, ""),
        row("login p50 / p99, ms", login, "p99 < 3000", login99 < 3000, "10800 / 12800",
            login99 / 12800),
        row("workspace open p50 / p99, ms", opened, "", None, ""),
        row("job list p50 / p99, ms (phase 1)", jl1, "p99 < 100", jl1_99 < 100, "- / 750-1100",
            jl1_99 / 925),
        row("job list p50 / p99, ms (burst)", jl2, "p99 < 100", jl2_99 < 100, "- / 1800-2700",
            jl2_99 / 2250),
        row("submit p50 / p99, ms", sub, "", None, "- / 10000-24000", sub99 / 17000),
        row("submits refused by the cap (429)", str(stats.capped), "", None, ""),
        row("prompts not sent (no workspace)", str(stats.unsent), "", None, ""),
        row("done notification p50 / p99, ms",
            f"{1000 * _common.pct(notify, 50):.0f} / {n99:.0f}", "p99 < 500", n99 < 500,
            "- / 5000-7500", n99 / 6250),
        row(f"drain {len(owner)} jobs, s (ideal {ideal:.1f})", f"{drain:.1f}", "", None, ""),
        row("  last prompt accepted at, s", f"{stats.last_accepted - run.t_burst:.1f}", "",
            None, ""),
        row("drain / ideal", f"{drain / ideal:.2f}", "<= 1.5", drain / ideal <= 1.5, "3",
            drain / ideal / 3),
        row(f"heavy share of first {len(first)} done ({args.policy})",
            f"{100 * heavy_share:.0f} %",
            f"<= {150 * fair_share:.1f} %" if args.policy == "fair" else "",
            heavy_share <= 1.5 * fair_share if args.policy == "fair" else None, ""),
        row(f"bench clients CPU avg, % (all {args.clients} / busiest)",
            f"{sum(client_cpu):.0f} / {client_busiest:.0f}", "busiest < 90",
            client_busiest < 90, ""),
        row("bench client loop lag p99 / max, ms",
            f"{_common.pct(lags, 99):.0f} / {max(lags, default=0):.0f}", "", None, ""),
        *(row(f"hub loop lag p50 / p99, ms ({phase})",
              f"{1000 * quantile(h, 0.5):.0f} / {1000 * quantile(h, 0.99):.0f}", "", None, "")
          for phase, h in zip(("phase 1", "burst"), run.hub_lags, strict=True)),
        row("workers + fakes CPU avg, %", f"{_common.mean(rest_cpu):.0f}", "", None, ""),
    ]
    print(_common.table(["metric", "measured", "target", "check", "tester", "x tester"], rows))
    print(f"\n{len(run.browsers)} participants, {len(active)} submitting ({len(run.heavy)} "
          f"heavy: {100 * submitted_share:.0f} % of the accepted prompts, "
          f"{100 * fair_share:.0f} % of those submitting), {len(owner)} prompts accepted, "
          f"{args.workers} workers "
          f"(`comfymulti worker` processes), {args.job_seconds} s jobs, policy {args.policy}; "
          f"measured {run.t_end - run.t_start:.0f} s. Tester: 300 participants, 1,000 prompts, "
          f"20 workers, 0.5 s jobs, 2 cores (x tester uses the middle of a range).")
    if client_busiest >= 90:
        print("WARNING: a bench client saturated a core; hub latencies include its delay.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--job-seconds", type=float, default=0.5)
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds of polling between phase 1 and the burst")
    parser.add_argument("--policy", choices=["fair", "fifo"], default="fair")
    parser.add_argument("--clients", type=int, default=4,
                        help="client processes the participants' browsers are shared among")
    parser.add_argument("--quick", action="store_true",
                        help="60 participants, 200 prompts, 5 workers, 5 s settle, 2 clients")
    args = parser.parse_args()
    if args.quick:
        args.users, args.prompts, args.workers, args.settle, args.clients = 60, 200, 5, 5.0, 2
    with tempfile.TemporaryDirectory(prefix="cm-load-") as tmp:
        fakes = FakeHosts(args.workers, args.job_seconds)
        try:
            with _common.HubSite(tmp) as site:
                site.cli("users", "create", "--count", str(args.users), "--prefix", "user",
                         "--out", f"{tmp}/credentials", "--force")  # cards unused here
                with next(Path(tmp, "credentials").glob("*.csv")).open() as fh:
                    accounts = [(r["user"], r["password"]) for r in csv.DictReader(fh)]
                site.cli("queue", "policy", args.policy)
                token = site.cli("workers", "token", "--name", "load")
                hub = site.start()
                workers = [site.start("worker", "--hub", site.url, "--token", token,
                                      "--comfyui", comfy, "--name", f"gpu{n:02d}",
                                      wait_for=None)
                           for n, comfy in enumerate(fakes.urls)]
                _wait_workers(site.url, args.workers)
                print(f"  hub, {args.users} accounts and {args.workers} workers ready",
                      file=sys.stderr)
                time.sleep(1)
                run = drive(args, site.url, accounts, hub.pid,
                            [w.pid for w in workers] + [p.pid for p in fakes.procs])
                for proc in workers:  # all at once; HubSite.close() then finds them gone
                    proc.terminate()
            run.ended = fakes.records()
        finally:
            fakes.close()
            LOG.parent.mkdir(exist_ok=True)
            shutil.copy(Path(tmp, "serve-0.log"), LOG)
    report(run)
    print(f"hub log: {LOG} ({_problems(LOG)} warning or error lines)")


LOG = Path("build/load-hub.log")


def _problems(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if "WARNING" in line or "ERROR" in line or "Traceback" in line)


def _wait_workers(url: str, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if httpx.get(url + "/health", timeout=10).json().get("workers_online", 0) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{count} workers did not come online within 120 s")


if __name__ == "__main__":
    main()
