"""One job, end to end, over real HTTP: hub + workers + fake ComfyUIs, users on /api/v1.

Covers DESIGN.md "One job, end to end": inputs staged per job, outputs byte-identical and only
the owner's, events in ComfyUI's order, runtime errors and cancels as ComfyUI reports them, a
worker killed mid-job, the hub restarted mid-job, SIGTERM drain.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from comfymulti.db import transaction
from comfymulti.hub.app import create_app
from comfymulti.models import Output
from comfymulti.worker.outputs import is_file
from tests.conftest import HubHarness, LiveServer
from tests.fakes import media
from tests.fakes.comfyui import FakeComfyUI
from tests.worker.util import RunningAgent, UserApi, image_prompt, sharpen_prompt, until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

NOT_RELAYED = {"status", "feature_flags"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fakes() -> Iterator[list[FakeComfyUI]]:
    made: list[FakeComfyUI] = []
    yield made
    for fake in made:
        fake.close()


def start_fake(fakes: list[FakeComfyUI], **knobs: Any) -> FakeComfyUI:
    fake = FakeComfyUI(**knobs).start()
    fakes.append(fake)
    return fake


def video_prompt() -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 48, "batch_size": 8, "color": 255}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "v/clip",
                                                   "format": "mp4", "format.codec": "auto"}},
    }


def webp_prompt() -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 32, "height": 32, "batch_size": 4, "color": 65280}},
        "2": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["1", 0], "filename_prefix": "a/anim", "fps": 6.0, "lossless": False,
            "quality": 80, "method": "default"}},
    }


def preview_prompt() -> dict[str, Any]:
    return {"1": {"class_type": "EmptyImage",
                  "inputs": {"width": 32, "height": 32, "batch_size": 2, "color": 7}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}


def load_prompt() -> dict[str, Any]:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage",
                  "inputs": {"images": ["2", 0], "filename_prefix": "in/inv"}}}


def error_prompt() -> dict[str, Any]:
    return {"1": {"class_type": "EmptyImage",
                  "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}},
            "2": {"class_type": "ImageBlur",
                  "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1.0}},
            "3": {"class_type": "SaveImage",
                  "inputs": {"images": ["2", 0], "filename_prefix": "e/err"}}}


def relayed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["seq"] is not None]


def expected_relay(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in trace if m["type"] not in NOT_RELAYED and not (
        m["type"] == "executing" and m["data"].get("node") is None)]


def user_files(harness: HubHarness, user: str) -> set[Path]:
    root = harness.ctx.settings.data_dir / "users" / user
    return {p for kind in ("output", "temp") for p in (root / kind).rglob("*") if p.is_file()}


async def history(fake: FakeComfyUI, job_id: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient() as c:
        data = (await c.get(f"{fake.url}/history/{job_id}")).json()
    return data.get(job_id)


async def test_three_users_thirty_prompts_two_workers(live_hub, fakes) -> None:
    harness, url = live_hub(queue={"long_poll_seconds": 1.0})
    knobs = {"node_seconds": 0.01, "fail_node_types": {"ImageBlur"},
             "hang_node_types": {"ImageSharpen"}}
    comfys = [start_fake(fakes, **knobs), start_fake(fakes, **knobs)]
    users = [harness.user(name) for name in ("u1", "u2", "u3")]
    photos = {"u2": media.make_png(64, 40, 0x336699), "u3": media.make_png(24, 24, 0x996633)}
    for user, png in photos.items():
        folder = harness.ctx.settings.data_dir / "users" / user / "input"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "photo.png").write_bytes(png)
    plans: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "u1": [("image", image_prompt(32 + i, 100 + i, "u1/img")) for i in range(8)]
        + [("video", video_prompt()), ("error", error_prompt())],
        "u2": [("image", image_prompt(48 + i, 200 + i, "u2/img")) for i in range(8)]
        + [("webp", webp_prompt()), ("load", load_prompt())],
        "u3": [("cancel", sharpen_prompt())]
        + [("image", image_prompt(80 + i, 300 + i, "u3/img")) for i in range(7)]
        + [("temp", preview_prompt()), ("load", load_prompt())],
    }
    apis = {u: UserApi(url, harness.bearer(u)) for u in users}
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    token = harness.worker_token()
    jobs: dict[str, tuple[str, str]] = {}  # job id → (user, kind)
    try:
        async with RunningAgent(url, token, comfys[0].url, "w1") as w1, \
                RunningAgent(url, token, comfys[1].url, "w2") as w2:
            for running in (w1, w2):
                running.agent.on_comfy_event = lambda job, msg: traces[job].append(msg)
            for i in range(10):  # interleaved, as three people would click
                for user in users:
                    kind, prompt = plans[user][i]
                    jobs[await apis[user].submit(prompt)] = (user, kind)
            [cancel_id] = [j for j, (_u, k) in jobs.items() if k == "cancel"]
            await until(lambda: any(e.prompt_id == cancel_id for c in comfys
                                    for e in c.executions), timeout=20)
            start = time.monotonic()
            assert await apis["u3"].cancel(cancel_id) == "requested"
            record = await until(lambda: next((e for c in comfys for e in c.executions
                                               if e.prompt_id == cancel_id and e.ended), None))
            cancel_took = record.ended - start
            final = {j: await apis[u].finished(j, timeout=30) for j, (u, _k) in jobs.items()}
            events = {j: await apis[u].events(j) for j, (u, _k) in jobs.items()}
    finally:
        for api in apis.values():
            await api.aclose()

    assert cancel_took < 1.0, f"cancel reached ComfyUI after {cancel_took:.3f} s"
    owned: dict[str, set[Path]] = defaultdict(set)
    for job_id, (user, kind) in jobs.items():
        job = final[job_id]
        ran = [c for c in comfys if any(e.prompt_id == job_id for e in c.executions)]
        assert len(ran) == 1, f"{kind} job ran on {len(ran)} ComfyUIs"
        comfy = ran[0]
        entry = await history(comfy, job_id)
        assert entry is not None
        got = relayed(events[job_id])
        want = expected_relay(traces[job_id])
        assert [e["seq"] for e in got] == list(range(len(got)))
        assert [e["type"] for e in got] == [m["type"] for m in want], kind
        for e, m in zip(got, want, strict=True):
            if e["type"] != "executed":
                assert e["data"] == m["data"]
            else:
                assert e["data"]["node"] == m["data"]["node"]
                assert {k: len(v) for k, v in e["data"]["output"].items()} == \
                       {k: len(v) for k, v in m["data"]["output"].items()}
        if kind == "error":
            assert job["state"] == "failed"
            [comfy_error] = [m["data"] for m in want if m["type"] == "execution_error"]
            assert job["error"] == comfy_error
            assert comfy_error["exception_type"] == "PIL.UnidentifiedImageError"
            continue
        if kind == "cancel":
            assert job["state"] == "cancelled"
            assert got[-1]["type"] == "execution_interrupted"
            continue
        assert job["state"] == "succeeded", (kind, job)
        assert job["outputs"], kind
        for node, output in job["outputs"].items():
            for kind_of, items in output.items():
                for index, item in enumerate(items):
                    if not is_file(item):
                        continue
                    theirs = entry["outputs"][node][kind_of][index]
                    ours = harness.ctx.settings.data_dir / "users" / user / item["type"] / \
                        item["subfolder"] / item["filename"]
                    source = comfy.dirs[theirs["type"]] / theirs["subfolder"] / \
                        theirs["filename"]
                    assert ours.read_bytes() == source.read_bytes(), (kind, item)
                    owned[user].add(ours)
        if kind == "load":
            staged = comfy.dirs["input"] / f"cm-{job_id}" / "photo.png"
            assert staged.read_bytes() == photos[user]
            item = job["outputs"]["3"]["images"][0]
            path = harness.ctx.settings.data_dir / "users" / user / "output" / \
                item["subfolder"] / item["filename"]
            assert media_size(path.read_bytes()) == media_size(photos[user])
    for user in users:
        assert user_files(harness, user) == owned[user], user
    kinds = {kind for _u, kind in jobs.values()}
    assert kinds == {"image", "video", "webp", "temp", "load", "error", "cancel"}


def media_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def worker_process(url: str, token: str, comfy_url: str, name: str, prefetch: int,
                   log: Path) -> subprocess.Popen[bytes]:
    """`python -m comfymulti worker …` as a real process (for SIGKILL and SIGTERM)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYMULTI_")}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "comfymulti", "worker", "--hub", url, "--token", token,
             "--comfyui", comfy_url, "--name", name, "--prefetch", str(prefetch)],
            cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT)


def outputs_of(harness: HubHarness, job_id: str) -> list[Output]:
    with transaction(harness.ctx.factory) as s:
        return list(s.scalars(select(Output).where(Output.job_id == job_id)))


async def test_killed_worker_its_job_completes_elsewhere_once(live_hub, fakes, tmp_path) -> None:
    harness, url = live_hub(queue={"lease_seconds": 2, "reaper_seconds": 0.2,
                                   "long_poll_seconds": 1.0})
    harness.user("ann")
    token = harness.worker_token()
    slow = start_fake(fakes, node_seconds_by_type={"ImageSharpen": 5.0})
    fast = start_fake(fakes)
    prompt = {**image_prompt(prefix="k/first"),  # 1 EmptyImage → 2 SaveImage (fast)
              "3": {"class_type": "ImageSharpen", "inputs": {  # slow: killed during this
                  "image": ["1", 0], "sharpen_radius": 1, "sigma": 1.0, "alpha": 1.0}},
              "4": {"class_type": "SaveImage",
                    "inputs": {"images": ["3", 0], "filename_prefix": "k/second"}}}
    api = UserApi(url, harness.bearer("ann"))
    proc = worker_process(url, token, slow.url, "doomed", 0, tmp_path / "doomed.log")
    try:
        job_id = await api.submit(prompt)
        # Killed after delivering its first output: that attempt's file must not survive.
        await until(lambda: outputs_of(harness, job_id), timeout=20)
        proc.kill()
        proc.wait(10)
        async with RunningAgent(url, token, fast.url, "rescuer"):
            job = await api.finished(job_id, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await api.aclose()
    assert job["state"] == "succeeded" and job["attempts"] == 2
    rows = outputs_of(harness, job_id)
    assert sorted(r.attempt for r in rows) == [2, 2]
    files = user_files(harness, "ann")
    assert len(files) == 2
    listed = {(i["subfolder"], i["filename"]) for o in job["outputs"].values()
              for i in o["images"]}
    assert {(p.parent.name, p.name) for p in files} == listed


async def test_hub_restart_while_a_worker_runs_a_job(make_hub, fakes) -> None:
    harness = make_hub(queue={"long_poll_seconds": 1.0})
    server = LiveServer(harness.app).start()
    port, url = server.port, server.url
    harness.user("ann")
    token = harness.worker_token()
    fake = start_fake(fakes, node_seconds_by_type={"ImageSharpen": 0.6})
    api = UserApi(url, harness.bearer("ann"))
    again: LiveServer | None = None
    try:
        async with RunningAgent(url, token, fake.url, "w1"):
            job_id = await api.submit(sharpen_prompt(prefix="r/out"))
            await until(lambda: fake.executions)
            await asyncio.to_thread(server.stop)
            await until(lambda: fake.executions[0].ended, timeout=10)  # done while hub is down
            app = create_app(harness.ctx.settings)  # same database, same files
            again = LiveServer(app, port=port).start()
            job = await api.finished(job_id, timeout=20)
            events = await api.events(job_id)
    finally:
        await api.aclose()
        if again is not None:
            await asyncio.to_thread(again.stop)
    assert job["state"] == "succeeded" and job["attempts"] == 1
    types = [e["type"] for e in relayed(events)]
    assert types.count("execution_success") == 1 and types[0] == "execution_start"
    item = job["outputs"]["3"]["images"][0]
    ours = harness.ctx.settings.data_dir / "users/ann/output" / item["subfolder"] / \
        item["filename"]
    theirs = fake.dirs["output"] / "r" / (await history(fake, job_id))["outputs"]["3"][
        "images"][0]["filename"]
    assert ours.read_bytes() == theirs.read_bytes()


async def test_sigterm_drains_releases_the_prefetched_job_and_exits_zero(
        live_hub, fakes, tmp_path) -> None:
    harness, url = live_hub(queue={"long_poll_seconds": 1.0})
    harness.user("ann")
    fake = start_fake(fakes, node_seconds_by_type={"ImageSharpen": 1.0})
    api = UserApi(url, harness.bearer("ann"))
    proc = worker_process(url, harness.worker_token(), fake.url, "w1", 1, tmp_path / "w1.log")
    try:
        running = await api.submit(sharpen_prompt(prefix="d/a"))
        prefetched = await api.submit(image_prompt(prefix="d/b"))

        async def queued_in_comfyui() -> bool:
            async with httpx.AsyncClient() as c:
                queue = (await c.get(f"{fake.url}/queue")).json()
            return any(item[1] == prefetched for item in queue["queue_pending"])

        await until(lambda: fake.executions, timeout=20)
        await until(queued_in_comfyui)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
        one, two = await api.job(running), await api.job(prefetched)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await api.aclose()
    assert code == 0, (tmp_path / "w1.log").read_text()
    assert one["state"] == "succeeded"
    assert two["state"] == "queued" and two["attempts"] == 0
    assert [e.prompt_id for e in fake.executions] == [running]
