from __future__ import annotations

import base64
import json
import struct
from typing import Any

from comfymulti.catalog.codec import catalog_hash
from comfymulti.hub.workspaces.ws import _as_legacy_preview
from comfymulti.protocol import WORKER_ID_HEADER
from tests.hub.workspaces.conftest import login, real_catalog


def test_metadata_preview_becomes_legacy_for_clients_without_the_flag() -> None:
    meta = json.dumps({"node_id": "3", "prompt_id": "p", "image_type": "image/png"}).encode()
    frame = struct.pack(">II", 4, len(meta)) + meta + b"\x89PNG..."
    assert _as_legacy_preview(frame) == struct.pack(">II", 1, 2) + b"\x89PNG..."
    jpeg = json.dumps({"image_type": "image/jpeg"}).encode()
    frame = struct.pack(">II", 4, len(jpeg)) + jpeg + b"\xff\xd8"
    assert _as_legacy_preview(frame) == struct.pack(">II", 1, 1) + b"\xff\xd8"


def test_other_frames_pass_unchanged() -> None:
    text = struct.pack(">II", 3, 1) + b"7" + b"width: 64"
    assert _as_legacy_preview(text) == text

def _worker(client: Any, harness: Any, name: str) -> dict[str, str]:
    """Headers of a worker registered with the real catalog."""
    token = harness.worker_token(name)
    reg = client.post("/worker/v1/register", headers={"Authorization": f"Bearer {token}"},
                      json={"name": name, "catalog_hash": catalog_hash(real_catalog())})
    return {"Authorization": f"Bearer {token}", WORKER_ID_HEADER: reg.json()["worker_id"]}


IMAGE = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64,
                                                       "batch_size": 1, "color": 0}},
         "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}


def test_output_frame_parts_reach_the_socket_joined_in_order(ws_hub) -> None:
    """A frame relayed in two parts, then a progress event: the client (no feature flags, as
    ComfyUI's websockets example) gets one type-1 frame, then the event. The hub keeps only
    the size of each part; a part that is not base64 refuses its batch."""
    harness, client = ws_hub
    login(client, harness, "user002")
    worker = _worker(client, harness, "w2")
    meta = json.dumps({"node_id": "2", "prompt_id": "p", "image_type": "image/png"}).encode()
    png = b"\x89PNG" + bytes(range(256)) * 3
    frame = struct.pack(">II", 4, len(meta)) + meta + png
    cut = len(frame) // 2
    with client.websocket_connect("/u/user002/ws") as ws:
        sid = ws.receive_json()["data"]["sid"]
        pid = client.post("/u/user002/api/prompt", json={
            "prompt": IMAGE, "client_id": sid}).json()["prompt_id"]
        leased = client.post("/worker/v1/lease", headers=worker).json()
        assert leased["job_id"] == pid
        events = [
            {"seq": 0, "type": "binary", "data": {"frame": _b64(frame[:cut]), "more": True}},
            {"seq": 1, "type": "binary", "data": {"frame": _b64(frame[cut:])}},
            {"seq": 2, "type": "progress", "data": {"value": 0, "max": 1, "node": "2"}},
        ]
        bad = [{"seq": 3, "type": "binary", "data": {"frame": "not base64!"}}]
        url = f"/worker/v1/jobs/{pid}/events"
        assert client.post(url, headers=worker, json={"lease_id": leased["lease_id"],
                                                      "events": bad}).status_code == 400
        r = client.post(url, headers=worker, json={"lease_id": leased["lease_id"],
                                                   "events": events})
        assert r.status_code == 200, r.text
        received: list[Any] = []
        while len(received) < 2:
            message = ws.receive()
            if message.get("text") and json.loads(message["text"])["type"] == "status":
                continue
            received.append(message.get("bytes") or json.loads(message["text"])["type"])
        assert received == [struct.pack(">II", 1, 2) + png, "progress"]
    stored = client.get(f"/api/v1/jobs/{pid}/events").json()["events"]
    assert [e["data"] for e in stored if e["type"] == "binary"] == [
        {"bytes": cut, "more": True}, {"bytes": len(frame) - cut, "more": False}]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_preview_that_arrives_after_comfyui_moved_on_is_dropped(ws_hub) -> None:
    """Previews travel apart from the ordered events: one of the sampler's that reaches the
    hub after `executing` of the next node would be taken for that node's image by clients
    (ComfyUI's websockets example files frames under the last executing node)."""
    harness, client = ws_hub
    login(client, harness, "user002")
    worker = _worker(client, harness, "w3")
    with client.websocket_connect("/u/user002/ws") as ws:
        sid = ws.receive_json()["data"]["sid"]
        pid = client.post("/u/user002/api/prompt", json={
            "prompt": IMAGE, "client_id": sid}).json()["prompt_id"]
        leased = client.post("/worker/v1/lease", headers=worker).json()
        lease = leased["lease_id"]
        client.post(f"/worker/v1/jobs/{pid}/events", headers=worker, json={
            "lease_id": lease, "events": [
                {"seq": 0, "type": "execution_start", "data": {"prompt_id": pid}},
                {"seq": 1, "type": "executing", "data": {"node": "2", "prompt_id": pid}}]})
        preview = f"/worker/v1/jobs/{pid}/preview"
        stale = struct.pack(">II", 1, 1) + b"\xff\xd8stale"
        fresh = struct.pack(">II", 1, 1) + b"\xff\xd8fresh"
        for frame, node in ((stale, "1"), (fresh, "2")):
            r = client.post(preview, params={"lease_id": lease, "node": node}, content=frame,
                            headers=worker)
            assert r.status_code == 204
        seen: list[Any] = []
        while fresh not in seen and len(seen) < 10:
            message = ws.receive()
            seen.append(message.get("bytes") or json.loads(message["text"])["type"])
        assert stale not in seen and fresh in seen, seen


def test_a_completion_carrying_the_last_events_relays_them_before_the_end(ws_hub) -> None:
    """The worker sends a job's last events with its completion (one request less per job):
    they are stored and reach the owner's socket, an output frame among them, before
    ComfyUI's last word for the prompt; a completion refused (lease lost) stores none."""
    harness, client = ws_hub
    login(client, harness, "user002")
    worker = _worker(client, harness, "w3")
    png = b"\x89PNG" + bytes(range(64))
    frame = struct.pack(">II", 1, 2) + png
    with client.websocket_connect("/u/user002/ws") as ws:
        sid = ws.receive_json()["data"]["sid"]
        pid = client.post("/u/user002/api/prompt", json={
            "prompt": IMAGE, "client_id": sid}).json()["prompt_id"]
        leased = client.post("/worker/v1/lease", headers=worker).json()
        last = [
            {"seq": 0, "type": "executing", "data": {"node": "2", "prompt_id": pid}},
            {"seq": 1, "type": "binary", "data": {"frame": _b64(frame)}},
            {"seq": 2, "type": "executed", "data": {"node": "2", "prompt_id": pid,
                                                    "output": {"text": ["done"]}}},
            {"seq": 3, "type": "execution_success", "data": {"prompt_id": pid}},
        ]
        url = f"/worker/v1/jobs/{pid}/complete"
        lost = client.post(url, headers=worker, json={
            "lease_id": "not-the-lease", "status": "success", "events": last})
        assert lost.status_code == 409, lost.text
        r = client.post(url, headers=worker, json={
            "lease_id": leased["lease_id"], "status": "success", "events": last})
        assert r.status_code == 200 and r.json()["state"] == "succeeded", r.text
        received: list[Any] = []
        while ("executing", None) not in received:
            message = ws.receive()
            if message.get("text"):
                body = json.loads(message["text"])
                if body["type"] != "status":
                    received.append((body["type"], body["data"].get("node")))
            else:
                received.append(message["bytes"])
        assert received == [("executing", "2"), frame, ("executed", "2"),
                            ("execution_success", None), ("executing", None)]
    stored = client.get(f"/api/v1/jobs/{pid}/events").json()["events"]
    assert [e["seq"] for e in stored if e["seq"] is not None] == [0, 1, 2, 3]
    assert client.get(f"/api/v1/jobs/{pid}").json()["outputs"] == {"2": {"text": ["done"]}}
