"""Announcements from the dashboard reach every open workspace as a custom socket message,
which the workspace's own extension script shows as a toast."""

from __future__ import annotations

from comfymulti.hub.services.announcements import MESSAGE_TYPE
from comfymulti.queue.jobs import Role
from tests.hub.workspaces.conftest import login


def test_announcements_reach_every_open_workspace_socket(ws_hub) -> None:
    harness, client = ws_hub
    harness.user("boss", Role.ADMIN)
    login(client, harness, "user003")
    with client.websocket_connect("/u/user003/ws") as ws:
        assert ws.receive_json()["type"] == "status"
        r = client.post("/admin/api/announcements", json={"text": "Lunch at 12:30"},
                        headers=harness.bearer("boss"))
        assert r.status_code == 200
        message = ws.receive_json()
    assert message["type"] == MESSAGE_TYPE
    assert message["data"]["text"] == "Lunch at 12:30" and message["data"]["by"] == "boss"
    listed = client.get("/admin/api/dashboard", headers=harness.bearer("boss")).json()
    assert [a["text"] for a in listed["announcements"]] == ["Lunch at 12:30"]
    assert "/extensions/comfymulti/announcements.js" in client.get(
        "/u/user003/api/extensions").json()
    assert client.get("/u/user003/extensions/comfymulti/announcements.js").status_code == 200
