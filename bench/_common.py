"""Shared helpers for the benchmarks: a hub on a free port, percentiles, tables."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def proc_stats(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds used so far) of a process, from /proc (RSS 0 once it exited and
    waits to be reaped: a zombie has no VmRSS line)."""
    rss = next((int(line.split()[1]) / 1024
                for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")), 0.0)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class HubSite:
    """A hub installed in a folder and driven through the real `comfymulti` command, as an
    organiser would: config file, CLI for users and tokens, `serve` in its own process."""

    def __init__(self, folder: str | Path, queue: dict[str, int] | None = None) -> None:
        from tests.conftest import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = Path(folder)
        config = self.folder / "comfymulti.toml"
        lines = ['data_dir = "data"', "[hub]", f"port = {self.port}", "[queue]"]
        lines += [f"{key} = {value}" for key, value in (queue or {}).items()]
        config.write_text("\n".join(lines) + "\n")
        self.base = [sys.executable, "-m", "comfymulti", "--config", str(config)]
        self.processes: list[subprocess.Popen[bytes]] = []

    def cli(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    def start(self, *args: str, wait_for: str | None = "/health") -> subprocess.Popen[bytes]:
        """Run `comfymulti ARGS` (default: serve) in the background until close()."""
        name = (args or ("serve",))[0]
        with (self.folder / f"{name}-{len(self.processes)}.log").open("wb") as log:
            proc = subprocess.Popen([*self.base, *(args or ("serve",))], stdout=log,
                                    stderr=subprocess.STDOUT)
        self.processes.append(proc)
        if wait_for:
            wait_http(self.url + wait_for)
        return proc

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:  # never leave a process behind
                proc.kill()
                proc.wait()

    def __enter__(self) -> HubSite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_http(url: str, seconds: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")
