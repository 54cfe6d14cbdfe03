"""The hub's resident memory: idle, and with 1,000 queued jobs (real `comfymulti serve`).

    python bench/hub_rss.py [--jobs 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common
import httpx

from tests.conftest import simple_prompt

COMFYUI_IDLE_MIB = 950  # one real ComfyUI 0.33.0 on CPU, idle (reference measurement)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, _common.HubSite(
            tmp, {"max_queued_per_user": args.jobs, "max_queued_total": args.jobs}) as site:
        site.cli("users", "add", "bench", "--password", "bench-pass-1")
        token = site.cli("users", "token", "bench")
        hub = site.start()
        with httpx.Client(base_url=site.url, headers={"Authorization": f"Bearer {token}"}) as c:
            c.get("/api/v1/jobs")  # warm the routes once
            time.sleep(1)
            idle = rss_mib(hub.pid)
            t0 = time.perf_counter()
            for _ in range(args.jobs):
                c.post("/api/v1/jobs", json={"prompt": simple_prompt()}).raise_for_status()
            submit_s = time.perf_counter() - t0
            c.get("/metrics")
            loaded = rss_mib(hub.pid)
    rows = [["hub idle", f"{idle:.0f}", f"{idle / COMFYUI_IDLE_MIB:.2f}"],
            [f"hub, {args.jobs} queued", f"{loaded:.0f}", f"{loaded / COMFYUI_IDLE_MIB:.2f}"],
            ["baseline: 1 ComfyUI per user, idle", str(COMFYUI_IDLE_MIB), "1.00"]]
    print(_common.table(["process", "RSS MiB", "x one ComfyUI"], rows))
    print(f"\nsubmitted {args.jobs} jobs in {submit_s:.1f} s "
          f"({args.jobs / submit_s:.0f} jobs/s over HTTP, one client)")


if __name__ == "__main__":
    main()
