"""Participants get the subgraph blueprints the workers' ComfyUI offers (stock 0.33.0 serves
88 through the same frontend): a real worker reports them with its catalog, and the hub serves
them on the routes the frontend reads, listed without data, then one by one."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fakes.comfyui import FakeComfyUI
from tests.worker.util import RunningAgent

pytestmark = pytest.mark.anyio

UPSCALE = {"source": "templates", "name": "Upscale twice",
           "info": {"node_pack": "comfy_essentials", "category": "image"},
           "data": json.dumps({"nodes": [{"id": 1, "type": "ImageScaleBy"}], "links": []})}
CROP = {"source": "templates", "name": "Centre crop", "info": {"node_pack": "comfy_essentials"},
        "data": json.dumps({"nodes": [], "links": []})}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_worker_blueprints_reach_the_frontend_routes(live_hub) -> None:
    harness, url = live_hub(queue={"long_poll_seconds": 1.0})  # the worker's wait ends soon
    harness.user("user002")
    fake = FakeComfyUI(subgraphs={"a1b2-upscale": UPSCALE, "c3d4": CROP}).start()
    try:
        async with RunningAgent(url, harness.worker_token(), fake.url, "gpu-1"), \
                httpx.AsyncClient(base_url=f"{url}/u/user002",
                                  headers=harness.bearer("user002")) as c:
            listed = (await c.get("/api/global_subgraphs")).json()
            assert listed == {"a1b2-upscale": {k: v for k, v in UPSCALE.items() if k != "data"},
                              "c3d4": {k: v for k, v in CROP.items() if k != "data"}}
            one = await c.get("/api/global_subgraphs/a1b2-upscale")
            assert one.status_code == 200 and one.json() == UPSCALE
            assert (await c.get("/api/global_subgraphs/nope")).status_code == 404
    finally:
        fake.close()
