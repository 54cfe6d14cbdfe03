"""The agent against a live hub and the fake ComfyUI: errors, cancel, restarts, lost leases,
a dropped socket, catalog changes, previews, drain."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from comfymulti.db import transaction
from comfymulti.models import Job
from comfymulti.worker.hub_client import HubClient
from tests.fakes.comfyui_nodes import FImage, websocket_pngs
from tests.worker.util import (
    CuttableProxy,
    RunningAgent,
    UserApi,
    image_prompt,
    sharpen_prompt,
    until,
)

pytestmark = pytest.mark.anyio


def relayed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["seq"] is not None]


def executions(fake: Any, job_id: str) -> list[Any]:
    return [e for e in fake.executions if e.prompt_id == job_id]


@pytest.fixture
def setup(live_hub):
    """(harness, url, api for user 'ann', worker token)."""

    def make(**queue: Any) -> tuple[Any, str, UserApi, str]:
        # Short long-polls: the live hub's shutdown waits for the open ones.
        harness, url = live_hub(queue={"long_poll_seconds": 1.0, **queue})
        harness.user("ann")
        api = UserApi(url, harness.bearer("ann"))
        return harness, url, api, harness.worker_token()

    return make


async def test_runtime_error_keeps_comfyuis_payload(setup, make_comfy) -> None:
    _harness, url, api, token = setup()
    fake = make_comfy(fail_node_types={"ImageSharpen"})
    try:
        async with RunningAgent(url, token, fake.url, "w1"):
            job_id = await api.submit(sharpen_prompt())
            job = await api.finished(job_id)
            events = await api.events(job_id)
    finally:
        await api.aclose()
    assert job["state"] == "failed"
    error = job["error"]
    assert error["exception_type"] == "PIL.UnidentifiedImageError"
    assert error["node_id"] == "2" and error["node_type"] == "ImageSharpen"
    assert error["prompt_id"] == job_id and "traceback" in error
    types = [e["type"] for e in relayed(events)]
    assert types[0] == "execution_start" and types[-1] == "execution_error"
    assert relayed(events)[-1]["data"] == error


async def test_comfyui_validation_error_fails_the_job_with_node_errors(setup, make_comfy) -> None:
    _harness, url, api, token = setup()
    fake = make_comfy()
    try:
        async with RunningAgent(url, token, fake.url, "w1"):
            job_id = await api.submit(image_prompt(width=0))
            job = await api.finished(job_id)
            events = await api.events(job_id)
    finally:
        await api.aclose()
    assert job["state"] == "failed"
    assert job["error"]["error"]["type"] == "prompt_outputs_failed_validation"
    assert job["error"]["node_errors"]["1"]["class_type"] == "EmptyImage"
    assert relayed(events) == [] and fake.executions == []


def two_outputs_prompt() -> dict[str, Any]:
    """EmptyImage → SaveImage "2" (quick), and → ImageSharpen → SaveImage "4"."""
    return {**image_prompt(prefix="t/first"),
            "3": {"class_type": "ImageSharpen", "inputs": {
                "image": ["1", 0], "sharpen_radius": 1, "sigma": 1.0, "alpha": 1.0}},
            "4": {"class_type": "SaveImage",
                  "inputs": {"images": ["3", 0], "filename_prefix": "t/second"}}}


async def outputs_stored(api: UserApi, job_id: str) -> bool:
    return bool((await api.job(job_id))["outputs"])


async def test_cancel_reaches_comfyui_within_a_second(setup, make_comfy) -> None:
    harness, url, api, token = setup()
    fake = make_comfy(hang_node_types={"ImageSharpen"})
    try:
        async with RunningAgent(url, token, fake.url, "w1", prefetch=1) as running:
            hanging = await api.submit(two_outputs_prompt())
            waiting = await api.submit(image_prompt(prefix="t/never"))
            await until(lambda: api.state_is(hanging, "running"))
            await until(lambda: running.comfy.job(waiting))  # prefetched into ComfyUI's queue
            await until(lambda: outputs_stored(api, hanging))  # the first output is in
            assert await api.cancel(waiting) == "requested"
            assert (await api.finished(waiting))["state"] == "cancelled"
            start = time.monotonic()
            assert await api.cancel(hanging) == "requested"
            record = (await until(lambda: executions(fake, hanging)[0].ended and
                                  executions(fake, hanging)))[0]
            took = record.ended - start
            job = await api.finished(hanging)
            events = await api.events(hanging)
    finally:
        await api.aclose()
    assert took < 1.0, f"cancel took {took:.3f} s to reach ComfyUI"
    assert record.status == "interrupted"
    assert job["state"] == "cancelled"
    [kept] = job["outputs"]["2"]["images"]  # partial outputs stay, like in ComfyUI's history
    assert (harness.ctx.settings.data_dir / "users/ann/output" / kept["subfolder"] /
            kept["filename"]).is_file()
    assert "4" not in job["outputs"]
    assert relayed(events)[-1]["type"] == "execution_interrupted"
    assert executions(fake, waiting) == []  # the prefetched one never ran


async def test_comfyui_restart_mid_job_is_retried(setup, make_comfy) -> None:
    harness, url, api, token = setup()
    fake = make_comfy(node_seconds_by_type={"ImageSharpen": 0.6})
    try:
        async with RunningAgent(url, token, fake.url, "w1"):
            job_id = await api.submit(sharpen_prompt(prefix="t/restart"))
            await until(lambda: executions(fake, job_id))
            await asyncio.to_thread(fake.restart, 0.2)
            job = await api.finished(job_id)
    finally:
        await api.aclose()
    assert job["state"] == "succeeded" and job["attempts"] == 2
    [images] = [o["images"] for o in job["outputs"].values()]
    out_dir = harness.ctx.settings.data_dir / "users/ann/output/t"
    assert sorted(p.name for p in out_dir.iterdir()) == [images[0]["filename"]]


async def test_dropped_socket_is_covered_by_history(setup, make_comfy) -> None:
    harness, url, api, token = setup()
    fake = make_comfy(node_seconds_by_type={"ImageSharpen": 0.5})
    try:
        async with CuttableProxy(int(fake.url.rsplit(":", 1)[1])) as proxy, \
                RunningAgent(url, token, proxy.url, "w1"):
            job_id = await api.submit(sharpen_prompt(prefix="t/cut"))
            await until(lambda: executions(fake, job_id))
            proxy.cut_ws()  # and it stays cut: only polling can finish the job
            job = await api.finished(job_id)
            events = await api.events(job_id)
    finally:
        await api.aclose()
    assert job["state"] == "succeeded"
    [record] = executions(fake, job_id)
    assert record.status == "success"
    types = [e["type"] for e in relayed(events)]
    assert types[0] == "execution_start"
    assert types[-2:] == ["executed", "execution_success"]
    stored = job["outputs"]["3"]["images"][0]
    path = harness.ctx.settings.data_dir / "users/ann/output" / stored["subfolder"] / \
        stored["filename"]
    async with httpx.AsyncClient() as c:
        entry = (await c.get(f"{fake.url}/history/{job_id}")).json()[job_id]
    made = entry["outputs"]["3"]["images"][0]
    assert path.read_bytes() == (fake.dirs["output"] / "t" / made["filename"]).read_bytes()


async def test_lost_lease_is_dropped_and_stopped_in_comfyui(setup, make_comfy) -> None:
    harness, url, api, token = setup(reaper_seconds=0.05)
    fake = make_comfy(node_seconds_by_type={"ImageSharpen": 0.8})
    try:
        async with RunningAgent(url, token, fake.url, "w1"):
            job_id = await api.submit(sharpen_prompt(prefix="t/lost"))
            await until(lambda: executions(fake, job_id))
            with transaction(harness.ctx.factory) as s:  # the hub gives up on this lease
                s.execute(update(Job).where(Job.id == job_id).values(
                    lease_id="expired", lease_expires_at=0))
            job = await api.finished(job_id)
    finally:
        await api.aclose()
    first, second = executions(fake, job_id)
    assert first.status == "interrupted" and second.status == "success"
    assert job["state"] == "succeeded" and job["attempts"] == 2
    out_dir = harness.ctx.settings.data_dir / "users/ann/output/t"
    assert len(list(out_dir.iterdir())) == 1


async def test_catalog_change_registers_again(setup, make_comfy) -> None:
    _harness, url, api, token = setup()
    fake = make_comfy()
    ckpt = {"1": {"class_type": "CheckpointLoaderSimple",
                  "inputs": {"ckpt_name": "new.safetensors"}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 2]}}}
    try:
        async with RunningAgent(url, token, fake.url, "w1", catalog_check_seconds=0.1):
            job_id = await api.submit(ckpt)
            assert (await api.job(job_id))["state"] == "queued"  # nobody has the model
            fake.set_models({"checkpoints": ["new.safetensors"]})
            job = await api.finished(job_id)
    finally:
        await api.aclose()
    assert job["state"] == "succeeded"


class CountingHub(HubClient):
    """Counts the preview frames the agent passes on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames: list[bytes] = []

    async def preview(self, job_id: str, lease_id: str, frame: bytes, node: str = "") -> None:
        self.frames.append(frame)
        await super().preview(job_id, lease_id, frame, node)


def _sampler_prompt(batch: int, output_id: str, output: dict) -> dict:
    """A 20-step KSampler on a `batch` of latents, decoded into `output`."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "EmptyLatentImage",
              "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "4": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["2", 0], "negative": ["2", 0],
            "latent_image": ["3", 0], "denoise": 1.0}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        output_id: output,
    }


async def test_previews_are_rate_limited_and_progress_relayed(setup, make_comfy) -> None:
    _harness, url, api, token = setup()
    fake = make_comfy(models={"checkpoints": ["m.safetensors"]}, progress_steps=20,
                      node_seconds_by_type={"KSampler": 1.0})
    prompt = _sampler_prompt(1, "6", {"class_type": "SaveImage", "inputs": {
        "images": ["5", 0], "filename_prefix": "t/k"}})
    try:
        async with RunningAgent(url, token, fake.url, "w1", preview_fps=4,
                                hub_class=CountingHub) as running:
            job_id = await api.submit(prompt)
            job = await api.finished(job_id)
            events = await api.events(job_id)
            assert isinstance(running.hub, CountingHub)
            frames = running.hub.frames
    finally:
        await api.aclose()
    assert job["state"] == "succeeded"
    progress = [e for e in relayed(events) if e["type"] == "progress"]
    assert [e["data"]["value"] for e in progress] == list(range(1, 21))
    assert 2 <= len(frames) <= 6, len(frames)  # 20 frames in 1 s at 4 per second
    assert all(int.from_bytes(f[:4], "big") == 4 for f in frames)


async def test_output_frames_are_relayed_in_order_while_sampler_previews_are_throttled(
        setup, make_comfy) -> None:
    """SaveImageWebsocket (an output node) sends its batch as binary frames: each one is
    relayed as an event in ComfyUI's order; the sampler's previews still go the throttled way."""
    _harness, url, api, token = setup()
    fake = make_comfy(models={"checkpoints": ["m.safetensors"]}, progress_steps=20,
                      node_seconds_by_type={"KSampler": 1.0})
    prompt = _sampler_prompt(4, "ws", {"class_type": "SaveImageWebsocket",
                                       "inputs": {"images": ["5", 0]}})
    try:
        async with RunningAgent(url, token, fake.url, "w1", preview_fps=4,
                                hub_class=CountingHub) as running:
            job_id = await api.submit(prompt)
            job = await api.finished(job_id)
            events = relayed(await api.events(job_id))
            assert isinstance(running.hub, CountingHub)
            frames = running.hub.frames
    finally:
        await api.aclose()
    assert job["state"] == "succeeded"
    assert 2 <= len(frames) <= 6, len(frames)  # the sampler's 20 previews, throttled
    assert {json.loads(f[8:8 + int.from_bytes(f[4:8], "big")])["node_id"] for f in frames} == {
        "4"}
    start = next(i for i, e in enumerate(events)
                 if e["type"] == "executing" and e["data"]["node"] == "ws")
    ws_events = [e["type"] for e in events[start + 1:] if e["type"] != "progress_state"]
    assert ws_events[:8] == ["binary", "progress"] * 4
    meta = len(json.dumps({"node_id": "ws", "prompt_id": job_id, "display_node_id": "ws",
                           "parent_node_id": None, "real_node_id": "ws",
                           "image_type": "image/png"}))
    sizes = [8 + meta + len(png) for png in websocket_pngs(FImage(64, 64, 4, 0x808080))]
    assert [e["data"] for e in events if e["type"] == "binary"] == [
        {"bytes": n, "more": False} for n in sizes]  # stored without the image bytes


async def test_drain_releases_the_prefetched_job_and_finishes_the_running_one(
        setup, make_comfy) -> None:
    _harness, url, api, token = setup()
    fake = make_comfy(node_seconds_by_type={"ImageSharpen": 0.5})
    try:
        async with RunningAgent(url, token, fake.url, "w1", prefetch=1) as running:
            first = await api.submit(sharpen_prompt(prefix="t/a"))
            second = await api.submit(image_prompt(prefix="t/b"))
            await until(lambda: executions(fake, first))
            await until(lambda: running.comfy.job(second))
            running.agent.drain()
            await asyncio.wait_for(running.task, 10)  # type: ignore[arg-type]
            assert running.task is not None and running.task.result() is None
            one, two = await api.job(first), await api.job(second)
    finally:
        await api.aclose()
    assert one["state"] == "succeeded"
    assert two["state"] == "queued" and two["attempts"] == 0
    assert executions(fake, second) == []
