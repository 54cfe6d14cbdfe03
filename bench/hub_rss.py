"""The hub's resident memory: idle, and with 1,000 queued jobs (real `comfymulti serve`).

    python bench/hub_rss.py [--jobs 1000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import httpx

from tests.conftest import free_port, simple_prompt

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
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        cfg = Path(tmp) / "comfymulti.toml"
        cfg.write_text(f'data_dir = "data"\n[hub]\nport = {port}\n'
                       f"[queue]\nmax_queued_per_user = {args.jobs}\n"
                       f"max_queued_total = {args.jobs}\n")
        base = [sys.executable, "-m", "comfymulti", "--config", str(cfg)]
        subprocess.run([*base, "users", "add", "bench", "--password", "bench-pass-1"],
                       check=True, capture_output=True)
        token = subprocess.run([*base, "users", "token", "bench"], check=True,
                               capture_output=True, text=True).stdout.strip()
        hub = subprocess.Popen([*base, "serve"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
                for _ in range(200):
                    try:
                        c.get("/health")
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                c.get("/api/v1/jobs")  # warm the routes once
                time.sleep(1)
                idle = rss_mib(hub.pid)
                t0 = time.perf_counter()
                for _ in range(args.jobs):
                    c.post("/api/v1/jobs", json={"prompt": simple_prompt()}).raise_for_status()
                submit_s = time.perf_counter() - t0
                c.get("/metrics")
                loaded = rss_mib(hub.pid)
        finally:
            hub.terminate()
            hub.wait(10)
    rows = [["hub idle", f"{idle:.0f}", f"{idle / COMFYUI_IDLE_MIB:.2f}"],
            [f"hub, {args.jobs} queued", f"{loaded:.0f}", f"{loaded / COMFYUI_IDLE_MIB:.2f}"],
            ["baseline: 1 ComfyUI per user, idle", str(COMFYUI_IDLE_MIB), "1.00"]]
    print(_common.table(["process", "RSS MiB", "x one ComfyUI"], rows))
    print(f"\nsubmitted {args.jobs} jobs in {submit_s:.1f} s "
          f"({args.jobs / submit_s:.0f} jobs/s over HTTP, one client)")


if __name__ == "__main__":
    main()
