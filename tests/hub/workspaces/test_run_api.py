"""The workspace's ComfyUI-compatible run API, login, and isolation between users."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from starlette.testclient import TestClient

from comfymulti.db import transaction
from comfymulti.models import Job
from tests.hub.workspaces.conftest import login

IMAGE = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64,
                                                       "batch_size": 1, "color": 0}},
         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                      "filename_prefix": "ComfyUI"}}}


def post_prompt(client: TestClient, user: str, prompt: dict[str, Any] = IMAGE,
                **kw: Any) -> Any:
    return client.post(f"/u/{user}/api/prompt", json={"prompt": prompt, **kw})


# --- login ---------------------------------------------------------------------------------

def test_login_page_redirects_and_sessions(ws_hub) -> None:
    harness, client = ws_hub
    assert "Log in" in client.get("/").text
    r = client.get("/u/user002/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?next=/u/user002/"
    assert client.get("/u/user002", follow_redirects=False).headers["location"] == "/u/user002/"
    assert client.get("/user002/", follow_redirects=False).headers["location"] == "/u/user002/"
    bad = client.post("/login", data={"username": "user002", "password": "nope"})
    assert bad.status_code == 401 and "Wrong user name or password" in bad.text
    r = client.post("/login", data={"username": "user002",
                                    "password": harness.passwords["user002"],
                                    "next": "https://evil.example/"}, follow_redirects=False)
    assert r.headers["location"] == "/u/user002/"  # never an outside URL
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    page = client.get("/u/user002/")
    assert page.status_code == 200 and "<!doctype html>" in page.text.lower()
    assert client.get("/").status_code == 200  # logged in: / redirects to own workspace
    assert client.get("/", follow_redirects=False).headers["location"] == "/u/user002/"
    assert client.get("/u/user003/").status_code == 404
    client.get("/logout")
    assert client.get("/u/user002/api/settings").status_code == 401


def test_password_reset_ends_sessions(ws_hub) -> None:
    from comfymulti.hub.services.users import reset_password

    harness, client = ws_hub
    login(client, harness, "user002")
    assert client.get("/u/user002/api/settings").status_code == 200
    with transaction(harness.ctx.factory) as s:
        reset_password(s, "user002")
    assert client.get("/u/user002/api/settings").status_code == 401


def test_login_rate_limit(ws_hub) -> None:
    harness, client = ws_hub
    for _ in range(10):
        assert client.post("/login", data={"username": "user002",
                                           "password": "x"}).status_code == 401
    r = client.post("/login", data={"username": "user002",
                                    "password": harness.passwords["user002"]})
    assert r.status_code == 429
    assert client.get("/u/user003/api/settings", headers=harness.basic("user003")
                      ).status_code == 200  # other accounts unaffected


def test_cross_site_cookie_writes_are_refused(ws_hub) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    r = client.post("/u/user002/api/prompt", json={"prompt": IMAGE},
                    headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = client.post("/u/user002/api/prompt", json={"prompt": IMAGE},
                    headers={"Origin": "http://testserver"})
    assert r.status_code == 200


# --- prompts -------------------------------------------------------------------------------

def test_prompt_validation_uses_comfyui_shapes(ws_hub) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    bad = json.loads(json.dumps(IMAGE))
    bad["1"]["inputs"]["width"] = 0
    r = post_prompt(client, "user002", bad)
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    err = body["node_errors"]["1"]
    assert err["class_type"] == "EmptyImage" and err["dependent_outputs"] == ["2"]
    assert err["errors"][0]["type"] == "value_smaller_than_min"
    assert err["errors"][0]["message"] == "Value 0 smaller than min of 1"
    r = post_prompt(client, "user002", {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert r.json()["error"]["type"] == "missing_node_type"
    r = post_prompt(client, "user002", {"1": IMAGE["1"]})
    assert r.json()["error"]["type"] == "prompt_no_outputs"
    ckpt = {"1": {"class_type": "CheckpointLoaderSimple",
                  "inputs": {"ckpt_name": "missing.safetensors"}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    r = post_prompt(client, "user002", ckpt)
    assert r.json()["node_errors"]["1"]["errors"][0]["type"] == "value_not_in_list"
    load = {"1": {"class_type": "LoadImage", "inputs": {"image": "nothere.png"}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    r = post_prompt(client, "user002", load)
    assert r.json()["node_errors"]["1"]["errors"][0]["type"] == "custom_validation_failed"
    (harness.ctx.settings.data_dir / "users/user002/input/here.png").write_bytes(b"x")
    load["1"]["inputs"]["image"] = "here.png"
    assert post_prompt(client, "user002", load).status_code == 200
    assert client.post("/u/user002/api/prompt", content=b"{").status_code == 400
    with transaction(harness.ctx.factory) as s:
        assert s.query(Job).count() == 1


def test_prompt_jobs_queue_history_shapes(ws_hub) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    pid = str(uuid.uuid4())
    r = post_prompt(client, "user002", client_id="abc", prompt_id=pid,
                    extra_data={"extra_pnginfo": {"workflow": {"id": "wf-1"}},
                                "auth_token_comfy_org": "secret"})
    assert r.json() == {"prompt_id": pid, "number": 1, "node_errors": {}}
    post_prompt(client, "user002")
    jobs = client.get("/u/user002/api/jobs?status=in_progress,pending&limit=200&offset=0").json()
    assert [j["status"] for j in jobs["jobs"]] == ["pending", "pending"]
    first = jobs["jobs"][1]
    assert first["id"] == pid and first["workflow_id"] == "wf-1"
    assert isinstance(first["create_time"], int) and first["queue_position"] == 1
    assert first["eta_seconds"] > 0
    assert jobs["pagination"] == {"offset": 0, "limit": 200, "total": 2, "has_more": False}
    detail = client.get(f"/u/user002/api/jobs/{pid}").json()
    assert "auth_token_comfy_org" not in detail["workflow"]["extra_data"]
    queue = client.get("/u/user002/api/queue").json()
    assert queue["queue_pending"][0][1] == pid
    assert queue["queue_pending"][0][4] == ["2"]
    assert client.get("/u/user002/api/prompt").json() == {"exec_info": {"queue_remaining": 2}}
    assert client.post("/u/user002/api/queue", json={"delete": [pid]}).status_code == 200
    assert client.get(f"/u/user002/api/jobs/{pid}").json()["status"] == "cancelled"
    assert client.get(f"/u/user002/api/history/{pid}").json()[pid]["status"]["completed"] is False
    assert client.post(f"/u/user002/api/jobs/{pid}/cancel").json() == {"cancelled": False}
    assert client.get("/u/user002/api/jobs?status=bogus").status_code == 400
    assert client.get("/u/user002/api/jobs/nope").status_code == 404
    client.post("/u/user002/api/history", json={"delete": [pid]})
    assert client.get(f"/u/user002/api/history/{pid}").json() == {}


def test_bootstrap_routes_answer_json(ws_hub) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    base = "/u/user002"
    info = client.get(f"{base}/api/object_info").json()
    assert len(info) == 887
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
        "ltx-2-19b-distilled.safetensors"]
    assert client.get(f"{base}/api/object_info/EmptyImage").json()["EmptyImage"]["name"]
    assert client.get(f"{base}/api/users").json() == {"storage": "server", "migrated": True}
    stats = client.get(f"{base}/api/system_stats").json()
    assert stats["devices"][0]["name"] == "gpu-1: Fake GPU"
    assert client.get(f"{base}/api/extensions").json()[0] == "/extensions/comfymulti/queue_eta.js"
    assert "queue_position" in client.get(f"{base}/extensions/comfymulti/queue_eta.js").text
    models = client.get(f"{base}/api/experiment/models").json()
    assert {m["name"] for m in models} == {"checkpoints", "vae"}
    assert client.get(f"{base}/api/experiment/models/vae").json() == [
        {"name": "flux2-vae.safetensors", "pathIndex": 0}]
    for path in ("api/i18n", "api/global_subgraphs", "api/node_replacements",
                 "api/workflow_templates", "api/features", "internal/folder_paths"):
        assert isinstance(client.get(f"{base}/{path}").json(), dict), path
    assert client.get("/assets/images/comfy-icon-192.png").status_code in (200, 404)


# --- the socket ----------------------------------------------------------------------------

def _next_of(ws: Any, wanted: str) -> dict[str, Any]:
    while True:
        msg = ws.receive_json()
        if msg["type"] == wanted:
            return msg


def test_socket_status_flags_and_events_for_own_client_only(ws_hub) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    with client.websocket_connect("/u/user002/ws") as ws:
        hello = ws.receive_json()
        sid = hello["data"]["sid"]
        assert hello["data"]["status"] == {"exec_info": {"queue_remaining": 0}}
        ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        assert ws.receive_json()["data"]["supports_preview_metadata"] is True
        pid = post_prompt(client, "user002", client_id=sid).json()["prompt_id"]
        assert _next_of(ws, "status")["data"]["status"]["exec_info"]["queue_remaining"] == 1
        user = harness.ctx.bus
        with transaction(harness.ctx.factory) as s:
            owner = s.query(Job).filter_by(id=pid).one().user_id
        user.publish(owner, {"client_id": "someone-else", "type": "executing",
                             "data": {"node": "9"}})
        user.publish(owner, {"client_id": sid, "type": "executing",
                             "data": {"node": "1", "prompt_id": pid}})
        msg = ws.receive_json()
        assert msg == {"type": "executing", "data": {"node": "1", "prompt_id": pid}}


def test_socket_refuses_other_users_and_anonymous(ws_hub) -> None:
    from starlette.websockets import WebSocketDisconnect

    harness, client = ws_hub
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/u/user002/ws"):
        pass
    login(client, harness, "user003")
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/u/user002/ws"):
        pass
    token = harness.token("user002")
    with client.websocket_connect("/u/user002/ws",
                                  headers={"Authorization": f"Bearer {token}"}) as ws:
        assert ws.receive_json()["type"] == "status"


# --- isolation -----------------------------------------------------------------------------

RUN_ROUTES = [
    ("get", "api/jobs"), ("get", "api/jobs/{pid}"), ("post", "api/jobs/{pid}/cancel"),
    ("get", "api/history"), ("get", "api/history/{pid}"), ("get", "api/queue"),
    ("get", "api/prompt"), ("post", "api/prompt"), ("post", "api/interrupt"),
    ("post", "api/queue"), ("post", "api/history"), ("get", "api/object_info"),
    ("get", "api/system_stats"), ("get", "api/settings"), ("get", "api/features"),
    ("get", "api/view?filename=x.png"), ("get", "api/userdata?dir=workflows"),
    ("post", "api/upload/image"), ("get", "internal/folder_paths"),
    ("get", "api/experiment/models"), ("get", "api/extensions"),
]


@pytest.mark.parametrize("auth", ["session", "token"])
def test_user003_gets_nothing_of_user002(ws_hub, auth: str) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    pid = post_prompt(client, "user002").json()["prompt_id"]
    client.get("/logout")
    other = TestClient(harness.app, base_url="http://testserver")
    if auth == "session":
        login(other, harness, "user003")
        headers = {}
    else:
        headers = harness.bearer("user003")
    for method, path in RUN_ROUTES:
        kwargs: dict[str, Any] = {"headers": headers}
        if method == "post":
            kwargs["json"] = {"prompt": IMAGE, "delete": [pid], "clear": True,
                              "prompt_id": pid}
        r = getattr(other, method)(f"/u/user002/{path.format(pid=pid)}", **kwargs)
        assert r.status_code in (403, 404), (path, r.status_code)
    # Their own views never show user002's job.
    assert other.get("/u/user003/api/jobs", headers=headers).json()["jobs"] == []
    assert other.get("/u/user003/api/queue", headers=headers).json()["queue_pending"] == []
    assert other.get("/u/user003/api/history", headers=headers).json() == {}
    r = other.post(f"/u/user003/api/jobs/{pid}/cancel", headers=headers)
    assert r.json() == {"cancelled": False}
    other.post("/u/user003/api/queue", json={"delete": [pid]}, headers=headers)
    other.post("/u/user003/api/interrupt", json={"prompt_id": pid}, headers=headers)
    other.close()
    assert harness.ctx.queue.get(pid).state == "queued"


def test_other_users_prompts_never_reach_my_socket(ws_hub) -> None:
    harness, client = ws_hub
    other = TestClient(harness.app, base_url="http://testserver")
    login(other, harness, "user003")
    login(client, harness, "user002")
    # `other` in a `with`: its event loop must outlive the request that changes the queue.
    with other, other.websocket_connect("/u/user003/ws") as ws3:
        sid3 = ws3.receive_json()["data"]["sid"]
        pid2 = post_prompt(client, "user002", client_id=sid3).json()["prompt_id"]
        with transaction(harness.ctx.factory) as s:
            owner2 = s.query(Job).filter_by(id=pid2).one().user_id
        # Even an event carrying user003's socket id goes only to user002's sockets.
        harness.ctx.bus.publish(owner2, {"client_id": sid3, "type": "executing",
                                         "data": {"node": "1", "prompt_id": pid2}})
        post_prompt(other, "user003", client_id=sid3)
        first = ws3.receive_json()
        assert first == {"type": "status",
                         "data": {"status": {"exec_info": {"queue_remaining": 1}}}}
        assert [j["id"] for j in other.get("/u/user003/api/jobs").json()["jobs"]] != [pid2]
