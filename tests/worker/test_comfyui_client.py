"""ComfyUIClient against the fake ComfyUI 0.33.0, and old-server fallbacks via MockTransport."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from comfymulti.errors import ComfyUIError
from comfymulti.worker.comfyui import ComfySocket, ComfyUIClient, history_status
from tests.worker.util import image_prompt, new_id, sharpen_prompt, until

pytestmark = pytest.mark.anyio


async def _until_done(ws: ComfySocket, prompt_id: str) -> list[dict[str, Any]]:
    seen = []
    while True:
        msg = await asyncio.wait_for(ws.recv(), 10)
        if isinstance(msg, bytes):
            continue
        seen.append(msg)
        data = msg.get("data") or {}
        if msg["type"] == "executing" and data.get("node") is None and \
                data.get("prompt_id") == prompt_id:
            return seen


async def test_ready_stats_and_catalog(make_comfy) -> None:
    fake = make_comfy(models={"checkpoints": ["sd15.safetensors"], "loras": ["a.safetensors"]})
    async with httpx.AsyncClient() as http:
        comfy = ComfyUIClient(fake.url, client=http)
        stats = await comfy.wait_ready(timeout=5)
        catalog = await comfy.catalog()
    assert stats["system"]["comfyui_version"] == "0.33.0"
    assert len(catalog["object_info"]) == 887
    assert catalog["models"]["checkpoints"] == ["sd15.safetensors"]
    assert catalog["models"]["loras"] == ["a.safetensors"]
    assert catalog["models"]["vae"] == []


async def test_prompt_runs_with_our_ids_and_files_stream_back(make_comfy) -> None:
    fake = make_comfy()
    comfy = ComfyUIClient(fake.url)
    prompt_id = new_id()
    async with comfy.websocket() as ws:
        first = await ws.recv()
        assert first == {"type": "status", "data": {
            "status": {"exec_info": {"queue_remaining": 0}}, "sid": comfy.client_id}}
        assert (await ws.recv())["type"] == "feature_flags"  # answer to ours: we sent first
        sent = await comfy.post_prompt(image_prompt(prefix="c/run"), prompt_id,
                                       {"extra_pnginfo": {"workflow": {"id": "w"}}})
        assert sent.accepted and sent.body["prompt_id"] == prompt_id
        events = await _until_done(ws, prompt_id)
    types = [m["type"] for m in events if m["type"] != "status"]
    assert types[0] == "execution_start" and "executed" in types
    assert types[-2:] == ["execution_success", "executing"]
    entry = await comfy.history(prompt_id)
    assert entry is not None and history_status(entry) == "completed"
    image = entry["outputs"]["2"]["images"][0]
    job = await comfy.job(prompt_id)
    assert job is not None and job["status"] == "completed"
    chunks = [c async for c in comfy.view(image["filename"], image["subfolder"], "output")]
    on_disk = (fake.dirs["output"] / image["subfolder"] / image["filename"]).read_bytes()
    assert b"".join(chunks) == on_disk
    with pytest.raises(ComfyUIError):
        await comfy.view_bytes("nope.png", "c", "output")
    assert await comfy.job(new_id()) is None
    assert await comfy.history(new_id()) is None
    await comfy.aclose()


async def test_validation_error_comes_back_with_node_errors(make_comfy) -> None:
    fake = make_comfy()
    comfy = ComfyUIClient(fake.url)
    bad = image_prompt(width=0)
    sent = await comfy.post_prompt(bad, new_id())
    await comfy.aclose()
    assert not sent.accepted
    assert sent.body["error"]["type"] == "prompt_outputs_failed_validation"
    assert sent.body["node_errors"]["1"]["errors"][0]["type"] == "value_smaller_than_min"


async def test_upload_into_a_job_subfolder_overwrites(make_comfy) -> None:
    fake = make_comfy()
    comfy = ComfyUIClient(fake.url)
    first = await comfy.upload_input(b"one", "photo.png", "cm-job1")
    second = await comfy.upload_input(b"two", "photo.png", "cm-job1")
    await comfy.aclose()
    assert first == second == {"name": "photo.png", "subfolder": "cm-job1", "type": "input"}
    assert (fake.dirs["input"] / "cm-job1" / "photo.png").read_bytes() == b"two"


async def test_cancel_running_and_pending(make_comfy) -> None:
    fake = make_comfy(hang_node_types={"ImageSharpen"})
    comfy = ComfyUIClient(fake.url)
    running, pending = new_id(), new_id()
    assert (await comfy.post_prompt(sharpen_prompt(), running)).accepted
    assert (await comfy.post_prompt(image_prompt(), pending)).accepted
    await until(lambda: any(e.prompt_id == running for e in fake.executions))
    assert await comfy.cancel(pending)
    assert await comfy.job(pending) is None  # dequeued: never ran, no history
    assert await comfy.cancel(running)

    async def cancelled() -> bool:
        job = await comfy.job(running)
        return job is not None and job["status"] == "cancelled"

    await until(cancelled)
    assert [e.prompt_id for e in fake.executions] == [running]
    assert not await comfy.cancel(new_id())
    await comfy.aclose()


async def test_remove_pending_and_forget(make_comfy) -> None:
    fake = make_comfy(hang_node_types={"ImageSharpen"})
    comfy = ComfyUIClient(fake.url)
    first, second = new_id(), new_id()
    await comfy.post_prompt(sharpen_prompt(), first)
    await comfy.post_prompt(image_prompt(), second)
    await comfy.remove_pending(second)
    await comfy.remove_pending(first)  # running: not touched
    assert await comfy.job(second) is None
    assert (await comfy.job(first) or {}).get("status") == "in_progress"
    await comfy.cancel(first)
    await until(lambda: fake.history_ids() == [first])
    await comfy.forget(first)
    assert fake.history_ids() == []
    await comfy.aclose()


async def test_transport_errors_become_comfyui_errors() -> None:
    comfy = ComfyUIClient("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(ComfyUIError):
        await comfy.system_stats()
    with pytest.raises(ComfyUIError):
        await comfy.wait_ready(timeout=0.3)
    with pytest.raises(ComfyUIError):
        async with comfy.websocket(open_timeout=1):
            pass
    await comfy.aclose()


def _old_server(calls: list[tuple[str, str, Any]], running: str,
                pending: str, finished: str) -> httpx.MockTransport:
    """A ComfyUI without the jobs API: /api/jobs/* answer aiohttp's plain 404."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        calls.append((request.method, request.url.path, body))
        path = request.url.path
        if path.startswith("/api/jobs"):
            return httpx.Response(404, text="404: Not Found")
        if path == "/queue" and request.method == "GET":
            return httpx.Response(200, json={"queue_running": [[0, running, {}, {}, []]],
                                             "queue_pending": [[1, pending, {}, {}, []]]})
        if path.startswith("/history/"):
            pid = path.rsplit("/", 1)[1]
            if pid == finished:
                return httpx.Response(200, json={pid: {"outputs": {}, "status": {
                    "status_str": "success", "completed": True,
                    "messages": [["execution_success", {}]]}}})
            return httpx.Response(200, json={})
        return httpx.Response(200)

    return httpx.MockTransport(handle)


async def test_old_server_cancel_dequeues_then_interrupts_only_its_own_prompt() -> None:
    calls: list[tuple[str, str, Any]] = []
    running, pending, finished = new_id(), new_id(), new_id()
    async with httpx.AsyncClient(transport=_old_server(calls, running, pending, finished)) as h:
        comfy = ComfyUIClient("http://comfy", client=h)
        await comfy.cancel(pending)
        assert ("POST", "/interrupt", {"prompt_id": pending}) not in calls
        assert ("POST", "/queue", {"delete": [pending]}) in calls
        calls.clear()
        await comfy.cancel(running)
        assert [c[1] for c in calls] == ["/api/jobs/" + running + "/cancel", "/queue", "/queue",
                                         "/interrupt"]
        assert calls[-1][2] == {"prompt_id": running}
        assert (await comfy.job(finished) or {})["status"] == "completed"
        assert (await comfy.job(running) or {})["status"] == "in_progress"
        assert (await comfy.job(pending) or {})["status"] == "pending"
        assert await comfy.job(new_id()) is None


def test_history_status_reads_the_messages() -> None:
    def entry(status: str, *names: str) -> dict[str, Any]:
        return {"status": {"status_str": status, "messages": [[n, {}] for n in names]}}

    assert history_status(entry("success", "execution_start", "execution_success")) == \
        "completed"
    assert history_status(entry("error", "execution_start", "execution_error")) == "failed"
    assert history_status(entry("error", "execution_interrupted")) == "cancelled"
