"""Workshop templates: published once, in every participant's workflow list, read-only."""

from __future__ import annotations

import json

from comfymulti.queue.jobs import Role
from tests.hub.workspaces.conftest import login

WORKFLOW = json.dumps({"nodes": [], "links": [], "version": 0.4}).encode()
LIST = "/u/{u}/api/userdata?dir=workflows&recurse=true&split=false&full_info=true"


def test_instructor_publishes_everyone_sees_it(ws_hub) -> None:
    harness, client = ws_hub
    harness.user("teacher", Role.INSTRUCTOR)
    r = client.put("/api/v1/templates/Day 1 portrait", content=WORKFLOW,
                   headers=harness.bearer("user002"))
    assert r.status_code == 403
    r = client.put("/api/v1/templates/Day 1 portrait", content=WORKFLOW,
                   headers=harness.bearer("teacher"))
    assert r.status_code == 201 and r.json()["path"] == "workflows/Workshop/Day 1 portrait.json"
    assert client.put("/api/v1/templates/bad", content=b"not json",
                      headers=harness.bearer("teacher")).status_code == 400
    assert client.put("/api/v1/templates/..%2Fescape", content=WORKFLOW,
                      headers=harness.bearer("teacher")).status_code in (400, 404)
    for user in ("user002", "user003"):
        listing = client.get(LIST.format(u=user), headers=harness.bearer(user)).json()
        assert [e["path"] for e in listing] == ["Workshop/Day 1 portrait.json"]
        body = client.get(f"/u/{user}/api/userdata/workflows%2FWorkshop%2FDay%201%20portrait.json",
                          headers=harness.bearer(user))
        assert body.status_code == 200 and body.content == WORKFLOW


def test_own_copy_wins_and_template_can_be_withdrawn(ws_hub) -> None:
    harness, client = ws_hub
    harness.user("teacher", Role.INSTRUCTOR)
    client.put("/api/v1/templates/shot", content=WORKFLOW, headers=harness.bearer("teacher"))
    login(client, harness, "user002")
    mine = b'{"nodes": [1]}'
    r = client.post("/u/user002/api/userdata/workflows%2FWorkshop%2Fshot.json"
                    "?overwrite=true&full_info=true", content=mine)
    assert r.status_code == 200
    assert client.get("/u/user002/api/userdata/workflows%2FWorkshop%2Fshot.json"
                      ).content == mine
    listing = client.get(LIST.format(u="user002")).json()
    assert [e["path"] for e in listing] == ["Workshop/shot.json"]
    assert client.delete("/api/v1/templates/shot",
                         headers=harness.bearer("teacher")).status_code == 204
    assert client.get("/api/v1/templates", headers=harness.bearer("user003")).json() == {
        "templates": []}
    assert client.get("/u/user002/api/userdata/workflows%2FWorkshop%2Fshot.json"
                      ).content == mine  # the participant's own copy stays
