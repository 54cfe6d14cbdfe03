"""One CSRF rule for browsers whatever credentials they carry: a state-changing request or a
socket that a browser marks as cross-site (Sec-Fetch-Site) or from another origin (Origin,
including the opaque `null`) is refused. Same-origin pages and scripts (no such headers)
still work, and no 401 invites a browser to cache Basic credentials."""

from __future__ import annotations

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.hub.workspaces.conftest import login

CROSS_SITE = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site",
              "Content-Type": "text/plain"}


def _settings(client, headers):
    return client.get("/u/user002/api/settings", headers=headers).json()


def test_cached_basic_credentials_are_not_a_way_around_the_rule(ws_hub) -> None:
    harness, client = ws_hub
    basic = harness.basic("user002")
    r = client.post("/u/user002/api/settings", content=b'{"Comfy.Evil": 1}',
                    headers={**basic, **CROSS_SITE})
    assert r.status_code == 403
    assert "Comfy.Evil" not in _settings(client, basic)


def test_origin_null_is_refused_on_writes_and_sockets(ws_hub) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    r = client.post("/u/user002/api/settings", json={"Comfy.X": 1}, headers={"Origin": "null"})
    assert r.status_code == 403
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(
            "/u/user002/ws", headers={"Origin": "null"}) as ws:
        ws.receive_json()
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(
            "/u/user002/ws", headers={"Origin": "https://evil.example"}) as ws:
        ws.receive_json()


def test_a_junk_authorization_header_does_not_skip_the_check(ws_hub) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    r = client.post("/u/user002/api/settings", content=b'{"Comfy.Evil": 2}',
                    headers={"Authorization": "Negotiate abc", **CROSS_SITE})
    assert r.status_code in (401, 403)
    r = client.post("/u/user002/api/settings", content=b'{"Comfy.Evil": 2}',
                    headers={**CROSS_SITE, "Sec-Fetch-Site": "same-site"})
    assert r.status_code == 403
    assert "Comfy.Evil" not in _settings(client, {})


def test_same_origin_pages_and_scripts_still_work(ws_hub) -> None:
    harness, client = ws_hub
    token = harness.bearer("user002")
    assert client.post("/u/user002/api/settings", json={"Comfy.A": 1},
                       headers=token).status_code == 200  # a script: no browser headers
    login(client, harness, "user002")
    r = client.post("/u/user002/api/settings", json={"Comfy.B": 2}, headers={
        "Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200
    assert {"Comfy.A": 1, "Comfy.B": 2}.items() <= _settings(client, {}).items()
    with client.websocket_connect("/u/user002/ws", headers={
            "Origin": "http://testserver"}) as ws:
        assert ws.receive_json()["type"] == "status"


def test_no_basic_challenge_for_browsers(ws_hub) -> None:
    _harness, client = ws_hub
    r = client.get("/u/user002/api/settings")
    assert r.status_code == 401
    assert "basic" not in r.headers.get("www-authenticate", "").lower()
