"""The fake ComfyUI must answer like the recordings of the real ComfyUI 0.33.0.

Each ``*.ws.jsonl`` recording is replayed against the fake (same API workflow, same
``feature_flags`` first message, same ``extra_data``) and the frame sequences, history
and jobs shapes are compared; the scenario file drives upload, runtime error, queue,
cancel and interrupt checks; ``invalid_value.summary.json`` pins the validation body.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import time
import uuid
import wave
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests import testdata
from tests.fakes import media
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.comfyui_nodes import FImage, websocket_pngs

REC = testdata.RECORDINGS
WF = testdata.API_WORKFLOWS
SCENARIO = json.loads((REC / "scenario_queue.json").read_text())
RECORDED = sorted(p.name.removesuffix(".ws.jsonl") for p in REC.glob("*.ws.jsonl"))
EXTRA = {"extra_pnginfo": {"workflow": {"note": "harness probe"}}}
CLIENT_FLAGS = {
    "supports_preview_metadata": True,
    "supports_manager_v4_ui": True,
    "supports_progress_text_metadata": True,
}


def workflow(name: str) -> dict[str, Any]:
    return json.loads((WF / f"{name}.json").read_text())


def recording(name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lines = [
        json.loads(x) for x in (REC / f"{name}.ws.jsonl").read_text().splitlines() if x.strip()
    ]
    return lines, json.loads((REC / f"{name}.summary.json").read_text())


# ------------------------------------------------------------------ helpers


def norm_name(name: str) -> str:
    name = re.sub(r"ComfyUI_temp_[a-z]{5}_", "ComfyUI_temp_XXXXX_", name)
    return re.sub(r"_\d{5}_?\.", "_NNNNN_.", name)


def norm_outputs(outputs: Any) -> Any:
    if isinstance(outputs, dict):
        return {k: norm_outputs(v) for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [norm_outputs(v) for v in outputs]
    if isinstance(outputs, str) and re.search(r"_\d{5}_?\.", outputs):
        return norm_name(outputs)
    return outputs


def frame_key(kind: str, msg: Any) -> tuple:
    """What must match between recording and fake for one server→client frame."""
    if kind == "bin":
        event = msg["event"]
        return ("binary", event, msg.get("node_id"), msg.get("text"))
    t, d = msg["type"], msg["data"]
    if t == "status":
        return (t, d["status"]["exec_info"]["queue_remaining"], "sid" in d)
    if t == "feature_flags":
        return (t, json.dumps(d, sort_keys=True))
    if t == "executing":
        return (t, d["node"], d.get("display_node"), sorted(d))
    if t == "executed":
        return (
            t,
            d["node"],
            d["display_node"],
            json.dumps(norm_outputs(d["output"]), sort_keys=True),
        )
    if t == "execution_cached":
        return (t, tuple(d["nodes"]), sorted(d))
    if t == "progress_state":
        return (
            t,
            tuple(
                (k, v["state"], v["value"], v["max"], v["display_node_id"], v["parent_node_id"])
                for k, v in d["nodes"].items()
            ),
        )
    if t == "progress":
        return (t, d["value"], d["max"], d["node"])
    return (t, sorted(d))


def decode_binary(data: bytes) -> dict[str, Any]:
    event = struct.unpack(">I", data[:4])[0]
    out: dict[str, Any] = {"event": event}
    if event == 3:
        n = struct.unpack(">I", data[4:8])[0]
        out["node_id"] = data[8 : 8 + n].decode()
        out["text"] = data[8 + n :].decode()
    return out


async def run_prompt(
    comfy: FakeComfyUI,
    prompt: dict[str, Any],
    *,
    client_id: str | None = None,
    flags: dict[str, Any] | None = CLIENT_FLAGS,
    extra_data: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    timeout: float = 15,
) -> tuple[httpx.Response, list[tuple[str, Any]], list[bytes]]:
    """Open the socket, send feature flags, POST the prompt, collect frames until
    ``executing {node: null}`` of that prompt."""
    client_id = client_id or uuid.uuid4().hex
    frames: list[tuple[str, Any]] = []
    raw_binary: list[bytes] = []
    async with websockets.connect(f"{comfy.ws_url}?clientId={client_id}") as ws:
        if flags is not None:
            await ws.send(json.dumps({"type": "feature_flags", "data": flags}))
        # the greeting(s) first, so the order matches the recordings
        for _ in range(2 if flags is not None else 1):
            frames.append(("json", json.loads(await asyncio.wait_for(ws.recv(), timeout))))
        payload = {
            "prompt": prompt,
            "client_id": client_id,
            "extra_data": json.loads(json.dumps(EXTRA if extra_data is None else extra_data)),
        }
        payload.update(body or {})
        async with httpx.AsyncClient() as http:
            resp = await http.post(comfy.url + "/prompt", json=payload)
        if resp.status_code != 200:
            return resp, frames, raw_binary
        prompt_id = resp.json()["prompt_id"]
        while True:
            msg = await asyncio.wait_for(ws.recv(), timeout)
            if isinstance(msg, bytes):
                raw_binary.append(msg)
                frames.append(("bin", decode_binary(msg)))
                continue
            j = json.loads(msg)
            frames.append(("json", j))
            if (
                j["type"] == "executing"
                and j["data"]["node"] is None
                and j["data"]["prompt_id"] == prompt_id
            ):
                return resp, frames, raw_binary


def recorded_keys(lines: list[dict[str, Any]]) -> list[tuple]:
    keys = []
    for r in lines:
        if r["dir"] != "in":
            continue
        if "binary_event" in r:
            keys.append(
                frame_key(
                    "bin",
                    {
                        "event": r["binary_event"],
                        "node_id": r.get("node_id"),
                        "text": r.get("text"),
                    },
                )
            )
        else:
            keys.append(frame_key("json", r["json"]))
    return keys


def shape(obj: Any) -> Any:
    """Keys and value types, recursively (lists by their element shapes)."""
    if isinstance(obj, dict):
        return {k: shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [shape(v) for v in obj]
    return (
        "number"
        if isinstance(obj, int | float) and not isinstance(obj, bool)
        else type(obj).__name__
    )


def get(comfy: FakeComfyUI, path: str, **kw: Any) -> httpx.Response:
    return httpx.get(comfy.url + path, timeout=10, **kw)


def post(comfy: FakeComfyUI, path: str, **kw: Any) -> httpx.Response:
    return httpx.post(comfy.url + path, timeout=10, **kw)


def wait_for(pred: Any, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


@pytest.fixture
def comfy() -> Any:
    with FakeComfyUI() as fake:
        yield fake
        assert fake.errors == []


# ------------------------------------------------------------ recordings


def compare_history_and_job(comfy: FakeComfyUI, prompt_id: str, summary: dict[str, Any]) -> None:
    rec_hist = next(iter(summary["history"].values()))
    hist = get(comfy, f"/history/{prompt_id}").json()[prompt_id]
    assert list(hist) == list(rec_hist)
    assert shape(hist["status"]) == shape(rec_hist["status"])
    assert {k: v for k, v in hist["status"].items() if k != "messages"} == {
        k: v for k, v in rec_hist["status"].items() if k != "messages"
    }
    assert [m[0] for m in hist["status"]["messages"]] == [
        m[0] for m in rec_hist["status"]["messages"]
    ]
    assert [sorted(m[1]) for m in hist["status"]["messages"]] == [
        sorted(m[1]) for m in rec_hist["status"]["messages"]
    ]
    assert norm_outputs(hist["outputs"]) == norm_outputs(rec_hist["outputs"])
    assert list(hist["outputs"]) == list(rec_hist["outputs"])  # execution order
    assert hist["meta"] == rec_hist["meta"]
    number, pid, prompt, extra, outputs = hist["prompt"]
    _, _, rec_prompt, rec_extra, rec_outputs = rec_hist["prompt"]
    assert pid == prompt_id and isinstance(number, int)
    assert prompt == rec_prompt
    assert list(extra) == list(rec_extra) and extra["extra_pnginfo"] == rec_extra["extra_pnginfo"]
    assert sorted(outputs) == sorted(rec_outputs)

    rec_job = summary["job"]
    job = get(comfy, f"/api/jobs/{prompt_id}").json()
    assert list(job) == list(rec_job)
    for key in ("status", "outputs_count", "previewable_outputs_count"):
        assert job[key] == rec_job[key]
    assert norm_outputs(job["outputs"]) == norm_outputs(rec_job["outputs"])
    assert norm_outputs(job["preview_output"]) == norm_outputs(rec_job["preview_output"])
    assert job["workflow"]["prompt"] == rec_job["workflow"]["prompt"]
    assert list(job["workflow"]["extra_data"]) == list(rec_job["workflow"]["extra_data"])
    assert job["execution_status"] == hist["status"]
    assert job["create_time"] <= job["execution_start_time"] <= job["execution_end_time"]
    listed = get(comfy, "/api/jobs", params={"status": "completed"}).json()["jobs"]
    assert next(j for j in listed if j["id"] == prompt_id) == {
        k: v for k, v in job.items() if k not in ("outputs", "execution_status", "workflow")
    }


@pytest.mark.parametrize("name", [n for n in RECORDED if n != "empty_image_save_again"])
def test_recording_replay(comfy: FakeComfyUI, name: str) -> None:
    lines, summary = recording(name)
    assert lines[0]["dir"] == "out" and lines[0]["json"] == {
        "type": "feature_flags",
        "data": CLIENT_FLAGS,
    }
    resp, frames, _ = asyncio.run(run_prompt(comfy, workflow(name)))
    assert resp.status_code == summary["post_prompt_status"] == 200
    assert list(resp.json()) == list(summary["post_prompt_response"])
    assert resp.json()["node_errors"] == {}
    assert [frame_key(k, m) for k, m in frames] == recorded_keys(lines)
    compare_history_and_job(comfy, resp.json()["prompt_id"], summary)
    # files are real and served with the recorded content types
    for f in summary["files"]:
        out = get(comfy, f"/history/{resp.json()['prompt_id']}").json()[resp.json()["prompt_id"]][
            "outputs"
        ]
        item = next(
            i
            for i in out[f["node"]][f["key"]]
            if norm_name(i["filename"]) == norm_name(f["filename"])
        )
        view = get(
            comfy,
            "/view",
            params={
                "filename": item["filename"],
                "subfolder": item["subfolder"],
                "type": item["type"],
            },
        )
        assert view.status_code == f["view_status"]
        assert view.headers["content-type"] == f["content_type"]
        assert view.headers["x-content-type-options"] == "nosniff"
        assert len(view.content) > 0


def test_cached_rerun_matches_recording(comfy: FakeComfyUI) -> None:
    _, first_frames, _ = asyncio.run(run_prompt(comfy, workflow("empty_image_save")))
    files_before = sorted(p.name for p in (comfy.dirs["output"] / "harness").iterdir())
    lines, summary = recording("empty_image_save_again")
    resp, frames, _ = asyncio.run(run_prompt(comfy, workflow("empty_image_save_again")))
    assert [frame_key(k, m) for k, m in frames] == recorded_keys(lines)
    # same file name as the first run, no new file
    executed = [m for k, m in frames if k == "json" and m["type"] == "executed"]
    first_exec = [m for k, m in first_frames if k == "json" and m["type"] == "executed"]
    assert executed[0]["data"]["output"] == first_exec[0]["data"]["output"]
    assert sorted(p.name for p in (comfy.dirs["output"] / "harness").iterdir()) == files_before
    compare_history_and_job(comfy, resp.json()["prompt_id"], summary)
    assert comfy.executions[-1].cached == ["1", "2"] and comfy.executions[-1].executed == []


# ------------------------------------------------------------- validation


def test_validation_error_body_matches_recording(comfy: FakeComfyUI) -> None:
    summary = json.loads((REC / "invalid_value.summary.json").read_text())
    r = post(comfy, "/prompt", json={"prompt": workflow("invalid_value"), "client_id": "x"})
    assert r.status_code == summary["post_prompt_status"]
    assert r.json() == summary["post_prompt_response"]
    assert get(comfy, "/api/jobs").json()["jobs"] == []


def test_validation_error_types(comfy: FakeComfyUI) -> None:
    def err(prompt: dict[str, Any], **extra: Any) -> dict[str, Any]:
        r = post(comfy, "/api/prompt", json={"prompt": prompt, **extra})
        assert r.status_code == 400
        return r.json()

    bad = SCENARIO["post_bad_prompt_id"]
    assert err(workflow("empty_image_save"), prompt_id="ABC") == bad["body"]
    assert err(workflow("empty_image_save"), prompt_id=str(uuid.uuid4()).upper()) == bad["body"]
    body = err({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert body["error"]["type"] == "missing_node_type"
    assert body["error"]["extra_info"] == {
        "node_id": "1",
        "class_type": "NoSuchNode",
        "node_title": "NoSuchNode",
    }
    assert (
        err({"1": {"class_type": "EmptyImage", "inputs": {}}})["error"]["type"]
        == "prompt_no_outputs"
    )
    assert err({})["error"]["type"] == "prompt_no_outputs"
    r = post(comfy, "/prompt", json={"client_id": "x"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "no_prompt"

    wf = workflow("empty_image_save")
    del wf["1"]["inputs"]["height"]
    wf["1"]["inputs"]["width"] = 99999
    body = err(wf)
    errors = {e["type"]: e for e in body["node_errors"]["1"]["errors"]}
    assert errors["required_input_missing"]["details"] == "height"
    assert errors["value_bigger_than_max"]["message"] == "Value 99999 bigger than max of 16384"
    assert body["node_errors"]["1"]["dependent_outputs"] == ["2"]

    # runtime_error.json has a blend mode the V3 combo does not list
    body = err(workflow("runtime_error"))
    (e,) = body["node_errors"]["2"]["errors"]
    assert e["type"] == "value_not_in_list"
    assert e["details"] == (
        "blend_mode: 'no-such-mode' not in "
        "['normal', 'multiply', 'screen', 'overlay', 'soft_light', 'difference']"
    )
    assert body["node_errors"]["2"]["dependent_outputs"] == ["3"]

    wf = workflow("empty_image_save")
    wf["2"] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}
    wf["3"] = {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}
    wf["4"] = {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": "x"}}
    r = post(comfy, "/prompt", json={"prompt": wf})
    assert r.status_code == 200  # valid outputs run, the bad one is reported
    (e,) = r.json()["node_errors"]["4"]["errors"]
    assert e["type"] == "return_type_mismatch"
    assert e["details"] == "audio, received_type(IMAGE) mismatch input_type(AUDIO)"

    body = err(
        {
            "1": {"class_type": "LoadImage", "inputs": {"image": "harness/missing.png"}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        }
    )
    (e,) = body["node_errors"]["1"]["errors"]
    assert e == {
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": "image - Invalid image file: harness/missing.png",
        "extra_info": {"input_name": "image"},
    }


# -------------------------------------------------------- runtime error / queue


def test_runtime_error_matches_scenario(comfy: FakeComfyUI) -> None:
    up = post(comfy, "/upload/image", files={"image": ("bad.png", b"this is not an image")})
    assert up.json() == SCENARIO["upload_bad"]["body"]
    prompt = SCENARIO["runtime_error_job"]["workflow"]["prompt"]
    resp, frames, _ = asyncio.run(run_prompt(comfy, prompt, extra_data={}))
    assert resp.status_code == 200
    expected = []
    for f in SCENARIO["ws_frames"][:11]:
        if f["type"] == "progress_state":
            expected.append(("progress_state", tuple(f["data"]["nodes"].items())))
        else:
            expected.append(
                frame_key("json", f) if f["type"] != "execution_error" else ("execution_error",)
            )
    got = []
    for _k, m in frames:
        if m["type"] == "progress_state":
            got.append(
                ("progress_state", tuple((n, v["state"]) for n, v in m["data"]["nodes"].items()))
            )
        else:
            got.append(
                frame_key("json", m) if m["type"] != "execution_error" else ("execution_error",)
            )
    assert got == expected

    rec = SCENARIO["runtime_error_job"]
    job = get(comfy, f"/api/jobs/{resp.json()['prompt_id']}").json()
    assert list(job) == list(rec)
    assert job["status"] == "failed" and job["outputs"] == {} and job["outputs_count"] == 0
    err, rec_err = job["execution_error"], rec["execution_error"]
    assert list(err) == list(rec_err)
    assert (err["node_id"], err["node_type"], err["executed"], err["exception_type"]) == (
        "1",
        "LoadImage",
        [],
        rec_err["exception_type"],
    )
    assert err["current_inputs"] == rec_err["current_inputs"]
    assert sorted(err["current_outputs"]) == sorted(rec_err["current_outputs"])
    assert err["exception_message"].startswith("cannot identify image file '")
    assert err["exception_message"].endswith("bad.png'\n")
    assert len(err["traceback"]) == len(rec_err["traceback"]) and all(
        "File " in t for t in err["traceback"]
    )
    status = get(comfy, f"/history/{resp.json()['prompt_id']}").json()[resp.json()["prompt_id"]][
        "status"
    ]
    assert shape(status) == shape(SCENARIO["runtime_error_history_status"])
    assert status["status_str"] == "error" and status["completed"] is False
    assert comfy.executions[-1].status == "error"


def test_fail_node_types_knob() -> None:
    with FakeComfyUI(fail_node_types={"ImageInvert"}) as comfy:
        resp, frames, _ = asyncio.run(run_prompt(comfy, workflow("preview_temp")))
        err = next(m["data"] for _k, m in frames if m["type"] == "execution_error")
        assert err["node_type"] == "ImageInvert" and err["executed"] == ["1"]
        assert err["exception_type"] == "PIL.UnidentifiedImageError"
        assert err["current_inputs"]["image"][0].startswith("tensor(")
        job = get(comfy, f"/api/jobs/{resp.json()['prompt_id']}").json()
        assert job["status"] == "failed"


def test_queue_cancel_interrupt_matches_scenario() -> None:
    prompt = SCENARIO["job_A_after"]["body"]["workflow"]["prompt"]
    with FakeComfyUI(hang_node_types={"ColorTransfer"}) as comfy:

        async def scenario() -> list[dict[str, Any]]:
            frames: list[dict[str, Any]] = []
            async with websockets.connect(f"{comfy.ws_url}?clientId=scn") as ws:
                await ws.send(json.dumps({"type": "feature_flags", "data": CLIENT_FLAGS}))

                async def reader() -> None:
                    while True:
                        msg = json.loads(await ws.recv())
                        frames.append(msg)
                        if msg["type"] == "executing" and msg["data"]["node"] is None:
                            return

                task = asyncio.create_task(reader())
                async with httpx.AsyncClient(base_url=comfy.url) as http:
                    a = (
                        await http.post("/prompt", json={"prompt": prompt, "client_id": "scn"})
                    ).json()
                    while not any(
                        f["type"] == "executing" and f["data"]["node"] == "3" for f in frames
                    ):
                        await asyncio.sleep(0.01)
                    b = (
                        await http.post("/prompt", json={"prompt": prompt, "client_id": "scn"})
                    ).json()
                    c = (
                        await http.post(
                            "/prompt", json={"prompt": prompt, "client_id": "scn", "front": True}
                        )
                    ).json()
                    assert (b["number"], c["number"]) == (a["number"] + 1, -(a["number"] + 2))
                    queue = (await http.get("/queue")).json()
                    rec_q = SCENARIO["queue_snapshot"]
                    assert [i[1] for i in queue["queue_running"]] == [a["prompt_id"]]
                    assert [i[1] for i in queue["queue_pending"]] == [
                        c["prompt_id"],
                        b["prompt_id"],
                    ]
                    assert [[i[0] < 0, sorted(i[3]), i[4]] for i in queue["queue_pending"]] == [
                        [i[0] < 0, i[3], i[4]] for i in rec_q["queue_pending"]
                    ]
                    jobs = (await http.get("/api/jobs", params={"limit": 200})).json()
                    rec_j = SCENARIO["jobs_snapshot"]
                    assert [(j["id"], j["status"]) for j in jobs["jobs"]] == [
                        (c["prompt_id"], "pending"),
                        (b["prompt_id"], "pending"),
                        (a["prompt_id"], "in_progress"),
                    ]
                    assert [list(j) for j in jobs["jobs"]] == [list(j) for j in rec_j["jobs"]]
                    assert jobs["pagination"] == rec_j["pagination"]
                    assert (await http.get("/prompt")).json() == SCENARIO["get_prompt_during_run"]
                    r = await http.post("/queue", json={"delete": [b["prompt_id"]]})
                    assert r.status_code == SCENARIO["delete_B_status"]
                    r = await http.post(f"/api/jobs/{c['prompt_id']}/cancel")
                    assert r.json() == SCENARIO["cancel_C_via_jobs"]["body"]
                    r = await http.post("/interrupt", json={"prompt_id": a["prompt_id"]})
                    assert r.status_code == SCENARIO["interrupt_A_status"]
                    await asyncio.wait_for(task, 10)
                    job_a = (await http.get(f"/api/jobs/{a['prompt_id']}")).json()
                    rec_a = SCENARIO["job_A_after"]["body"]
                    assert list(job_a) == list(rec_a) and job_a["status"] == "cancelled"
                    msgs = job_a["execution_status"]["messages"]
                    assert [m[0] for m in msgs] == [
                        m[0] for m in rec_a["execution_status"]["messages"]
                    ]
                    assert {
                        k: v for k, v in msgs[-1][1].items() if k not in ("prompt_id", "timestamp")
                    } == {
                        k: v
                        for k, v in rec_a["execution_status"]["messages"][-1][1].items()
                        if k not in ("prompt_id", "timestamp")
                    }
                    for pid, key in (
                        (b["prompt_id"], "job_B_after"),
                        (c["prompt_id"], "job_C_after"),
                    ):
                        r = await http.get(f"/api/jobs/{pid}")
                        assert (r.status_code, r.json()) == (
                            SCENARIO[key]["http"],
                            SCENARIO[key]["body"],
                        )
                    r = await http.post(f"/api/jobs/{a['prompt_id']}/cancel")
                    assert r.json() == SCENARIO["cancel_A_again"]
            return frames

        frames = asyncio.run(scenario())
        rec = SCENARIO["ws_frames"][11:]
        assert [
            f["data"]["status"]["exec_info"]["queue_remaining"]
            for f in frames
            if f["type"] == "status"
        ][1:] == [
            f["data"]["status"]["exec_info"]["queue_remaining"]
            for f in rec
            if f["type"] == "status"
        ]

        def per_prompt(fs: list[dict[str, Any]]) -> list[tuple]:
            out = []
            for f in fs:
                if f["type"] in ("status", "feature_flags"):
                    continue
                if f["type"] == "progress_state":
                    out.append(
                        (
                            "progress_state",
                            tuple(
                                (n, v if isinstance(v, str) else v["state"])
                                for n, v in f["data"]["nodes"].items()
                            ),
                        )
                    )
                else:
                    out.append((f["type"], f["data"].get("node"), f["data"].get("node_id")))
            return out

        assert per_prompt(frames) == per_prompt(rec)
        assert comfy.executions[-1].status == "interrupted"
        assert get(comfy, "/api/jobs").json()["pagination"]["total"] == 1


def test_interrupt_global_and_cancel_pending() -> None:
    with FakeComfyUI(hang=True) as comfy:
        wf = workflow("empty_image_save")
        a = post(comfy, "/prompt", json={"prompt": wf}).json()["prompt_id"]
        b = post(comfy, "/prompt", json={"prompt": wf}).json()["prompt_id"]
        wait_for(lambda: get(comfy, f"/api/jobs/{a}").json()["status"] == "in_progress")
        assert get(comfy, f"/api/jobs/{b}").json()["status"] == "pending"
        assert post(comfy, f"/api/jobs/{b}/cancel").json() == {"cancelled": True}
        assert post(comfy, f"/api/jobs/{b}/cancel").json() == {"cancelled": False}
        post(comfy, "/interrupt")  # no body: global interrupt
        wait_for(lambda: get(comfy, f"/api/jobs/{a}").json()["status"] == "cancelled")
        assert get(comfy, f"/history/{b}").json() == {}
        assert post(comfy, f"/api/jobs/{uuid.uuid4()}/cancel").json() == {"cancelled": False}


# ------------------------------------------------------------- uploads / view


def test_upload_naming_matches_scenario(comfy: FakeComfyUI) -> None:
    png1, png2 = media.make_png(8, 8, 0xFF0000), media.make_png(8, 8, 0x00FF00)

    def up(data: bytes, **fields: str) -> httpx.Response:
        return post(
            comfy,
            "/api/upload/image",
            files={"image": ("dup.png", data)},
            data={"subfolder": "harness", **fields},
        )

    assert up(png1).json() == SCENARIO["upload_first"]["body"]
    assert up(png1).json() == SCENARIO["upload_same_bytes"]["body"]
    assert up(png2).json() == SCENARIO["upload_different_bytes"]["body"]
    assert up(png2, overwrite="true").json() == SCENARIO["upload_different_overwrite"]["body"]
    assert (comfy.dirs["input"] / "harness" / "dup.png").read_bytes() == png2
    assert [u["written"] for u in comfy.uploads] == [True, False, True, True]
    assert (
        post(
            comfy,
            "/upload/image",
            files={"image": ("x.png", png1)},
            data={"subfolder": "../../etc"},
        ).status_code
        == 400
    )
    assert (
        post(
            comfy, "/upload/image", data={"subfolder": "a"}, files={"other": ("x", b"1")}
        ).status_code
        == 400
    )
    r = post(comfy, "/upload/image", files={"image": ("t.png", png1)}, data={"type": "temp"})
    assert r.json() == {"name": "t.png", "subfolder": "", "type": "temp"}
    # the uploaded top-level input file shows up in LoadImage's combo, subfolder files do not
    post(comfy, "/upload/image", files={"image": ("top.png", png1)})
    assert get(comfy, "/object_info/LoadImage").json()["LoadImage"]["input"]["required"]["image"][
        0
    ] == ["example.png", "top.png"]
    # an uploaded input runs through LoadImage with the "subfolder/name" reference
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "harness/dup.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    resp, frames, _ = asyncio.run(run_prompt(comfy, prompt))
    assert resp.status_code == 200
    assert any(m["type"] == "execution_success" for _k, m in frames)


def test_view_rules(comfy: FakeComfyUI) -> None:
    resp, _frames, _ = asyncio.run(run_prompt(comfy, workflow("empty_image_save")))
    item = get(comfy, f"/history/{resp.json()['prompt_id']}").json()[resp.json()["prompt_id"]][
        "outputs"
    ]["2"]["images"][0]
    ok = get(
        comfy,
        "/api/view",
        params={**{k: item[k] for k in ("filename", "subfolder", "type")}, "rand": "1"},
    )
    assert ok.status_code == 200 and ok.content.startswith(b"\x89PNG")
    assert ok.headers["content-type"] == "image/png"
    assert b"tEXtprompt" in ok.content and b"harness probe" in ok.content
    # type defaults to output; annotated names pick the folder
    assert (
        get(
            comfy, "/view", params={"filename": item["filename"], "subfolder": "harness"}
        ).status_code
        == 200
    )
    assert get(comfy, "/view", params={"filename": "example.png [input]"}).status_code == 200
    assert (
        get(comfy, "/view", params={"filename": "example.png", "type": "input"}).status_code == 200
    )
    assert get(comfy, "/view", params={"filename": "../secret.png"}).status_code == 400
    assert get(comfy, "/view", params={"filename": "/etc/passwd"}).status_code == 400
    assert get(comfy, "/view", params={"filename": "missing.png"}).status_code == 404
    assert get(comfy, "/view", params={"filename": "x.png", "type": "nope"}).status_code == 400
    assert (
        get(
            comfy,
            "/view",
            params={"filename": "example.png", "subfolder": "../../", "type": "input"},
        ).status_code
        == 403
    )
    post(comfy, "/upload/image", files={"image": ("page.html", b"<script>1</script>")})
    html = get(comfy, "/view", params={"filename": "page.html", "type": "input"})
    assert html.headers["content-type"] == "application/octet-stream"
    assert html.headers["content-disposition"].startswith("attachment")


# ------------------------------------------------------ catalog and info routes


def test_catalog_and_models() -> None:
    with FakeComfyUI(
        models={"checkpoints": ["b.safetensors", "a.safetensors"], "unet": ["flux.gguf"]}
    ) as comfy:
        info = get(comfy, "/object_info").json()
        assert len(info) == 887
        assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
            "a.safetensors",
            "b.safetensors",
        ]
        assert info["UNETLoader"]["input"]["required"]["unet_name"][0] == ["flux.gguf"]
        assert info["VAELoader"]["input"]["required"]["vae_name"][0] == ["pixel_space"]
        assert get(comfy, "/api/models/checkpoints").json() == ["a.safetensors", "b.safetensors"]
        assert get(comfy, "/models/nope").status_code == 404
        assert "checkpoints" in get(comfy, "/models").json()
        comfy.set_models(
            {
                "vae": ["ae.safetensors"],
                "latent_upscale_models": ["up.safetensors"],
                "text_encoders": ["gemma.safetensors"],
            }
        )
        info = get(comfy, "/api/object_info").json()
        assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == []
        assert info["VAELoader"]["input"]["required"]["vae_name"][0] == [
            "ae.safetensors",
            "pixel_space",
        ]
        assert info["LatentUpscaleModelLoader"]["input"]["required"]["model_name"][1][
            "options"
        ] == ["up.safetensors"]
        assert info["LTXAVTextEncoderLoader"]["input"]["required"]["text_encoder"][1][
            "options"
        ] == ["gemma.safetensors"]
        one = get(comfy, "/object_info/VAELoader").json()
        assert list(one) == ["VAELoader"] and get(comfy, "/object_info/Nope").json() == {}
        flags = get(comfy, "/api/features").json()
        assert flags == recording("empty_image_save")[0][2]["json"]["data"]
        stats = get(comfy, "/system_stats").json()
        assert stats["system"]["comfyui_version"] == "0.33.0"
        assert set(stats["system"]) >= {
            "os",
            "ram_total",
            "ram_free",
            "required_frontend_version",
            "comfy_package_versions",
            "python_version",
            "pytorch_version",
            "argv",
        }
        (dev,) = stats["devices"]
        assert set(dev) == {
            "name",
            "type",
            "index",
            "vram_total",
            "vram_free",
            "torch_vram_total",
            "torch_vram_free",
        }
        assert dev["vram_total"] >= dev["vram_free"] > 0
        assert (
            post(comfy, "/free", json={"unload_models": True, "free_memory": True}).status_code
            == 200
        )


def test_sampler_progress_and_previews() -> None:
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 512, "height": 768, "batch_size": 1},
        },
        "4": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "seed": 1,
                "steps": 20,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["2", 0],
                "negative": ["2", 0],
                "latent_image": ["3", 0],
                "denoise": 1.0,
            },
        },
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "6": {
            "class_type": "SaveImage",
            "inputs": {"images": ["5", 0], "filename_prefix": "sd/out"},
        },
    }
    with FakeComfyUI(
        models={"checkpoints": ["m.safetensors"]}, progress_steps=3, node_seconds=0.01
    ) as comfy:
        _r, frames, raw = asyncio.run(run_prompt(comfy, prompt))
        kinds = [m["type"] if k == "json" else m["event"] for k, m in frames]
        i = kinds.index("executing", kinds.index("executing") + 1)
        assert [kinds[j] for j in range(len(kinds)) if kinds[j] in (4, "progress", 1)] == [
            4,
            "progress",
        ] * 3
        assert all(struct.unpack(">I", b[:4])[0] == 4 for b in raw)
        n = struct.unpack(">I", raw[0][4:8])[0]
        meta = json.loads(raw[0][8 : 8 + n])
        assert meta == {
            "node_id": "4",
            "prompt_id": _r.json()["prompt_id"],
            "display_node_id": "4",
            "parent_node_id": None,
            "real_node_id": "4",
            "image_type": "image/jpeg",
        }
        assert raw[0][8 + n : 8 + n + 3] == b"\xff\xd8\xff"
        assert i > 0
        # without supports_preview_metadata: legacy type 1 (image type 1 = JPEG) after progress
        _r, frames, raw = asyncio.run(
            run_prompt(
                comfy,
                {
                    **prompt,
                    "3": {**prompt["3"], "inputs": {"width": 256, "height": 256, "batch_size": 1}},
                },
                flags={},
            )
        )
        kinds = [m["type"] if k == "json" else m["event"] for k, m in frames]
        assert [k for k in kinds if k in (4, "progress", 1)] == ["progress", 1] * 3
        assert all(b[:8] == struct.pack(">II", 1, 1) and b[8:10] == b"\xff\xd8" for b in raw)
        out = get(comfy, f"/history/{_r.json()['prompt_id']}").json()[_r.json()["prompt_id"]][
            "outputs"
        ]
        assert out["6"]["images"][0] == {
            "filename": "out_00002_.png",
            "subfolder": "sd",
            "type": "output",
        }


def test_save_image_websocket_sends_each_image_through_the_progress_hook() -> None:
    """As custom_nodes/websocket_image_save.py with main.py's hook: per image
    ``progress_state`` → [type 4 PNG] → ``progress {value: i}`` → [type 1, image type 2];
    no file, no ``executed``, and the node runs again for the same prompt."""
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 24, "height": 16, "batch_size": 3, "color": 0x102030},
        },
        "ws": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }
    pngs = websocket_pngs(FImage(24, 16, 3, 0x102030))
    assert len(set(pngs)) == 3 and media.png_size(pngs[0]) == (24, 16)
    with FakeComfyUI() as comfy:
        for flags, event in ((CLIENT_FLAGS, 4), ({}, 1)):
            resp, frames, raw = asyncio.run(run_prompt(comfy, prompt, flags=flags))
            kinds = [m["type"] if k == "json" else m["event"] for k, m in frames]
            start = next(i for i, (k, m) in enumerate(frames) if k == "json"
                         and m["type"] == "executing" and m["data"]["node"] == "ws")
            per_image = ["progress_state", 4, "progress"] if event == 4 else [
                "progress_state", "progress", 1]
            assert kinds[start + 1 : start + 1 + 9] == per_image * 3
            assert "executed" not in kinds
            values = [m["data"]["value"] for k, m in frames if k == "json"
                      and m["type"] == "progress"]
            assert values == [0, 1, 2]
            if event == 4:
                n = struct.unpack(">I", raw[0][4:8])[0]
                assert json.loads(raw[0][8 : 8 + n]) == {
                    "node_id": "ws", "prompt_id": resp.json()["prompt_id"],
                    "display_node_id": "ws", "parent_node_id": None, "real_node_id": "ws",
                    "image_type": "image/png"}
                assert [b[8 + struct.unpack(">I", b[4:8])[0]:] for b in raw] == pngs
            else:
                assert [b[:8] for b in raw] == [struct.pack(">II", 1, 2)] * 3
                assert [b[8:] for b in raw] == pngs
        assert not any(comfy.dirs["output"].iterdir())


# ------------------------------------------------------- sockets and restarts


def test_restart_forgets_everything_but_files(comfy: FakeComfyUI) -> None:
    port = comfy.url
    resp, _f, _ = asyncio.run(run_prompt(comfy, workflow("empty_image_save")))
    pid = resp.json()["prompt_id"]
    assert pid in get(comfy, "/history").json()

    async def dropped() -> Any:
        async with websockets.connect(comfy.ws_url) as ws:
            await ws.recv()
            await asyncio.get_running_loop().run_in_executor(None, comfy.restart)
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)

    asyncio.run(dropped())
    assert comfy.url == port
    assert get(comfy, "/history").json() == {}
    assert get(comfy, f"/api/jobs/{pid}").status_code == 404
    assert get(comfy, "/api/jobs").json()["jobs"] == []
    assert (comfy.dirs["output"] / "harness" / "empty_00001_.png").is_file()
    resp, frames, _ = asyncio.run(run_prompt(comfy, workflow("empty_image_save")))
    executed = next(m for _k, m in frames if m["type"] == "executed")
    assert (
        executed["data"]["output"]["images"][0]["filename"] == "empty_00002_.png"
    )  # no cache after restart
    assert resp.json()["number"] == 0  # the counter restarts too


def test_known_client_id_replaces_socket_and_no_client_id(comfy: FakeComfyUI) -> None:
    async def main() -> None:
        async with websockets.connect(f"{comfy.ws_url}?clientId=same") as old:
            greeting = json.loads(await old.recv())
            assert greeting["data"]["sid"] == "same"
            async with websockets.connect(f"{comfy.ws_url}?clientId=same") as new:
                await new.recv()
                async with httpx.AsyncClient() as http:
                    await http.post(
                        comfy.url + "/prompt",
                        json={"prompt": workflow("preview_temp"), "client_id": "same"},
                    )
                seen = []
                while not seen or seen[-1] != ("executing", None):
                    m = json.loads(await asyncio.wait_for(new.recv(), 5))
                    seen.append((m["type"], m["data"].get("node", "-")))
                assert ("execution_start", "-") in seen
            # the replaced socket is out of the registry: not even broadcasts reach it
            old_types = set()
            with pytest.raises(TimeoutError):
                while True:
                    old_types.add(json.loads(await asyncio.wait_for(old.recv(), 0.3))["type"])
            assert old_types == set()
        # unnamed socket gets a generated 32-hex sid and nothing is sent before its first message
        async with websockets.connect(comfy.ws_url) as ws:
            sid = json.loads(await ws.recv())["data"]["sid"]
            assert re.fullmatch(r"[0-9a-f]{32}", sid)
            await ws.send(json.dumps({"type": "hello"}))
            await ws.send(
                json.dumps({"type": "feature_flags", "data": {}})
            )  # not the first message: ignored
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.3)

    asyncio.run(main())


def test_history_and_jobs_queries(comfy: FakeComfyUI) -> None:
    ids = []
    for i in range(3):
        wf = workflow("empty_image_save")
        wf["1"]["inputs"]["color"] = i
        pid = str(uuid.uuid4())
        r = post(
            comfy,
            "/prompt",
            json={
                "prompt": wf,
                "prompt_id": pid,
                "number": 100 - i,
                "extra_data": {"extra_pnginfo": {"workflow": {"id": f"w{i % 2}"}}},
            },
        )
        assert r.json() == {"prompt_id": pid, "number": 100.0 - i, "node_errors": {}}
        ids.append(pid)
    wait_for(lambda: len(get(comfy, "/history").json()) == 3)
    assert list(get(comfy, "/history", params={"max_items": 2}).json()) == ids[1:]
    assert list(get(comfy, "/history", params={"max_items": 1, "offset": 0}).json()) == ids[:1]
    page = get(comfy, "/api/jobs", params={"limit": 2, "offset": 1, "sort_order": "asc"}).json()
    assert [j["id"] for j in page["jobs"]] == ids[1:]
    assert page["pagination"] == {"offset": 1, "limit": 2, "total": 3, "has_more": False}
    assert [
        j["id"] for j in get(comfy, "/api/jobs", params={"workflow_id": "w0"}).json()["jobs"]
    ] == [ids[2], ids[0]]
    assert get(comfy, "/api/jobs", params={"sort_by": "execution_duration"}).status_code == 200
    assert get(comfy, "/api/jobs", params={"status": "done"}).status_code == 400
    assert get(comfy, "/api/jobs", params={"limit": 0}).status_code == 400
    assert get(comfy, "/api/jobs/nope").status_code == 404
    assert get(comfy, "/jobs").status_code == 404  # only registered under /api upstream
    post(comfy, "/history", json={"delete": [ids[0]]})
    assert list(get(comfy, "/api/history").json()) == ids[1:]
    post(comfy, "/api/history", json={"clear": True})
    assert get(comfy, "/history").json() == {}
    assert [r.prompt_id for r in comfy.executions] == ids


def test_media_files_are_valid() -> None:
    png = media.make_png(5, 3, 0x010203)
    assert media.png_size(png) == (5, 3) and png == media.make_png(5, 3, 0x010203)
    with wave.open(BytesIO(media.make_wav(0.1, sample_rate=8000, channels=2))) as w:
        assert (w.getnframes(), w.getnchannels(), w.getframerate()) == (800, 2, 8000)
    jpeg = media.make_jpeg(20, 10, 0xFFFFFF)
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    webp = media.make_animated_webp(16, 16, [0, 1, 2])
    assert webp[:4] == b"RIFF" and webp[8:16] == b"WEBPVP8X" and webp.count(b"ANMF") == 3
    mp4 = media.make_mp4(32, 16, frames=4, fps=2.0)

    def boxes(data: bytes) -> list[bytes]:
        out, i = [], 0
        while i < len(data):
            size = struct.unpack(">I", data[i : i + 4])[0]
            out.append(data[i + 4 : i + 8])
            i += size
        return out

    assert boxes(mp4) == [b"ftyp", b"moov", b"mdat"]
    assert b"avc1" in mp4 and b"avcC" in mp4 and mp4 == media.make_mp4(32, 16, frames=4, fps=2.0)


def test_outputs_written_to_disk(comfy: FakeComfyUI) -> None:
    asyncio.run(run_prompt(comfy, workflow("video_mp4")))
    asyncio.run(run_prompt(comfy, workflow("anim_webp")))
    mp4 = (comfy.dirs["output"] / "harness" / "video_00001_.mp4").read_bytes()
    assert mp4[4:8] == b"ftyp"
    webp = (comfy.dirs["output"] / "harness" / "anim_00001_.webp").read_bytes()
    assert webp[:4] == b"RIFF" and webp.count(b"ANMF") == 12
    assert Path(comfy.root).is_dir()


def test_audio_text_outputs_and_timing_knobs() -> None:
    prompt = {
        "1": {
            "class_type": "EmptyAudio",
            "inputs": {"duration": 0.5, "sample_rate": 8000, "channels": 1},
        },
        "2": {
            "class_type": "SaveAudio",
            "inputs": {"audio": ["1", 0], "filename_prefix": "audio/ComfyUI"},
        },
        "3": {"class_type": "PrimitiveString", "inputs": {"value": "hello"}},
        "4": {
            "class_type": "SaveText",
            "inputs": {"text": ["3", 0], "filename_prefix": "t/x", "format": "txt"},
        },
    }
    with FakeComfyUI(node_seconds=0.05, duration_for=lambda p: 0.2 if "4" in p else 0.0) as comfy:
        resp, frames, _ = asyncio.run(run_prompt(comfy, prompt))
        outputs = {
            m["data"]["node"]: m["data"]["output"] for _k, m in frames if m["type"] == "executed"
        }
        assert outputs["2"] == {
            "audio": [{"filename": "ComfyUI_00001.flac", "subfolder": "audio", "type": "output"}]
        }
        assert outputs["4"] == {
            "text": ["hello"],
            "files": [{"filename": "x_00001.txt", "subfolder": "t", "type": "output"}],
        }
        assert (comfy.dirs["output"] / "t" / "x_00001.txt").read_text() == "hello"
        with wave.open(str(comfy.dirs["output"] / "audio" / "ComfyUI_00001.flac")) as w:
            assert w.getframerate() == 8000
        job = get(comfy, f"/api/jobs/{resp.json()['prompt_id']}").json()
        assert job["preview_output"]["mediaType"] == "audio" and job["outputs_count"] == 2
        (rec,) = comfy.executions
        assert rec.status == "success" and rec.client_id and rec.ended is not None
        assert sorted(rec.executed) == ["1", "2", "3", "4"]
        assert rec.ended - rec.started >= 4 * 0.05 + 0.2
