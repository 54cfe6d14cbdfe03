"""Event relay latency: ComfyUI emits an event → worker → hub → the user's open /ws socket.

Every part runs in its own process, as deployed: `comfymulti serve`, `comfymulti worker`, the
ComfyUI protocol test server, and this script as the participant's browser socket. ComfyUI's
`execution_start` / `execution_success` carry the wall-clock time they were emitted; the
latency is the arrival time at the participant's socket minus that stamp (one machine, one
clock). Baseline side by side: the predecessor's path, which polled /history every 2 s.

    python bench/relay_latency.py [--jobs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import httpx
import websockets

from tests.conftest import free_port

PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64,
                                                        "batch_size": 1, "color": 0}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                       "filename_prefix": "relay"}}}
FAKE = ("import sys, time; from tests.fakes.comfyui import FakeComfyUI; "
        "f = FakeComfyUI(node_seconds=0.2, port=int(sys.argv[1])).start(); "
        "print('ready', flush=True); time.sleep(10**6)")


async def measure(url: str, user: str, token: str, jobs: int) -> list[float]:
    latencies: list[float] = []
    ws_url = url.replace("http", "ws") + f"/u/{user}/ws?clientId=bench"
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(ws_url, additional_headers=headers) as ws, \
            httpx.AsyncClient(base_url=url, headers=headers) as c:
        await ws.send(json.dumps({"type": "feature_flags", "data": {}}))
        for _ in range(jobs):
            r = await c.post(f"/u/{user}/api/prompt", json={"prompt": PROMPT,
                                                           "client_id": "bench"})
            prompt_id = r.json()["prompt_id"]
            while True:
                msg = json.loads(await ws.recv())
                now_ms = time.time() * 1000
                data = msg.get("data", {})
                if data.get("prompt_id") != prompt_id:
                    continue
                if msg["type"] in ("execution_start", "execution_success"):
                    latencies.append(now_ms - data["timestamp"])
                if msg["type"] == "executing" and data.get("node") is None:
                    break
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    comfy_port = free_port()
    comfy = f"http://127.0.0.1:{comfy_port}"
    with tempfile.TemporaryDirectory() as tmp, _common.HubSite(
            tmp, {"max_queued_per_user": 1000}) as site:
        site.cli("users", "add", "bench", "--password", "bench-pass")
        token = site.cli("users", "token", "bench")
        worker_token = site.cli("workers", "token")
        site.start()
        fake = subprocess.Popen([sys.executable, "-c", FAKE, str(comfy_port)], cwd=root,
                                stdout=subprocess.DEVNULL)
        site.processes.append(fake)
        _common.wait_http(comfy + "/system_stats")
        site.start("worker", "--hub", site.url, "--token", worker_token, "--comfyui", comfy,
                   wait_for=None)
        for _ in range(300):
            if httpx.get(site.url + "/health").json()["workers_online"]:
                break
            time.sleep(0.1)
        latencies = asyncio.run(measure(site.url, "bench", token, args.jobs))
    # The predecessor polled /history every 2 s: an event waited 1 s on average, up to 2 s.
    rows = [["ComfyMulti (WebSocket relay)", len(latencies),
             f"{_common.pct(latencies, 50):.1f}", f"{_common.pct(latencies, 99):.1f}"],
            ["baseline: /history poll every 2 s (expected)", "-", "1000.0", "1980.0"]]
    print(_common.table(["path", "events", "p50 ms", "p99 ms"], rows))
    print(f"\nbaseline p50 / ComfyMulti p50 = {1000 / _common.pct(latencies, 50):.0f}x")


if __name__ == "__main__":
    main()
