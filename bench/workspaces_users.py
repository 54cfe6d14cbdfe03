"""N participants with the UI open against one hub: hub RSS and CPU, next to N real ComfyUIs.

Each simulated participant does what the official frontend does while someone works: loads
the start-up routes once (object_info is ≈1.6 MB with the real catalog), keeps the socket open,
asks /api/jobs twice every few seconds, and queues a prompt now and then.

    python bench/workspaces_users.py [--users 20] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import tempfile
import time

import _common
import httpx
import websockets

from comfymulti.worker.hub_client import HubClient
from tests import testdata

COMFYUI_IDLE_MIB = 950  # one real ComfyUI 0.33.0 on CPU, idle (reference measurement)
STARTUP = ["api/features", "api/users", "api/system_stats", "api/settings",
           "api/userdata?dir=workflows&recurse=true&split=false&full_info=true", "api/i18n",
           "api/extensions", "api/object_info", "api/global_subgraphs",
           "api/node_replacements", "internal/folder_paths", "api/experiment/models"]
PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64,
                                                        "batch_size": 1, "color": 0}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                       "filename_prefix": "bench"}}}


async def participant(url: str, name: str, password: str, until: float) -> int:
    requests = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        await c.post("/login", data={"username": name, "password": password})
        cookie = c.cookies.get("comfymulti_session")
        base = f"/u/{name}/"
        for path in STARTUP:
            await c.get(base + path)
            requests += 1
        ws_url = url.replace("http", "ws") + base + "ws"
        async with websockets.connect(ws_url, additional_headers={
                "Cookie": f"comfymulti_session={cookie}"}) as ws:
            await ws.send(json.dumps({"type": "feature_flags", "data": {}}))
            while time.monotonic() < until:
                await asyncio.sleep(random.uniform(2, 5))
                await c.get(base + "api/jobs?status=in_progress,pending&limit=200&offset=0")
                await c.get(base + "api/jobs?status=completed,failed,cancelled&limit=64")
                requests += 2
                if random.random() < 0.1:
                    await c.post(base + "api/prompt", json={"prompt": PROMPT,
                                                           "client_id": "bench"})
                    requests += 1
                while True:  # drain socket messages like the UI does
                    try:
                        await asyncio.wait_for(ws.recv(), 0.001)
                    except TimeoutError:
                        break
    return requests


async def run(url: str, passwords: dict[str, str], seconds: float) -> int:
    until = time.monotonic() + seconds
    counts = await asyncio.gather(*(participant(url, n, p, until)
                                    for n, p in passwords.items()))
    return sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, _common.HubSite(tmp) as site:
        passwords = {}
        for i in range(1, args.users + 1):
            name = f"user{i:03d}"
            passwords[name] = f"pw-{name}-bench"
            site.cli("users", "add", name, "--password", passwords[name])
        token = site.cli("workers", "token")
        hub = site.start()
        url = site.url
        info = json.loads(gzip.decompress(testdata.CATALOG.read_bytes()))
        catalog = {"object_info": info, "models": {}}

        async def register() -> None:
            client = HubClient(url, token)
            await client.register("bench-gpu", catalog)
            await client.aclose()

        asyncio.run(register())
        time.sleep(1)
        idle_rss, cpu0 = _common.proc_stats(hub.pid)
        t0 = time.monotonic()
        requests = asyncio.run(run(url, passwords, args.seconds))
        wall = time.monotonic() - t0
        rss, cpu1 = _common.proc_stats(hub.pid)
    cpu_pct = (cpu1 - cpu0) / wall * 100
    baseline = args.users * COMFYUI_IDLE_MIB
    rows = [
        [f"ComfyMulti hub, {args.users} users busy", f"{rss:.0f}", f"{cpu_pct:.1f}",
         f"{rss / baseline:.3f}"],
        ["ComfyMulti hub, idle (catalog loaded)", f"{idle_rss:.0f}", "-",
         f"{idle_rss / baseline:.3f}"],
        [f"baseline: {args.users} x ComfyUI (950 MiB each)", str(baseline), "-", "1.000"],
    ]
    print(_common.table(["setup", "RSS MiB", "hub CPU %", "RSS ratio"], rows))
    print(f"\n{requests} HTTP requests + {args.users} sockets in {wall:.0f} s "
          f"({requests / wall:.1f} req/s); CPU % is of one core")


if __name__ == "__main__":
    main()
