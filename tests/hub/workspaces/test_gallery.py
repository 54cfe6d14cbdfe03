"""The workshop's templates through the frontend's template-dialog routes, and the default
workflow a participant's first visit opens (once)."""

from __future__ import annotations

import json

from comfymulti.hub.services import templates
from tests.fakes.media import make_png
from tests.hub.workspaces.conftest import login

FLOW = {"nodes": [], "links": []}
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 "


def test_index_lists_workshop_templates_with_title_description_and_thumbnail(ws_hub) -> None:
    harness, client = ws_hub
    settings = harness.ctx.settings
    assert client.get("/u/user002/templates/index.json", headers=harness.basic("user002")
                      ).json() == []
    templates.publish(settings, "Day 1 - poster", json.dumps(FLOW).encode(),
                      title="Poster maker", description="A poster in steps",
                      thumbnail_bytes=WEBP)
    templates.publish(settings, "plain", b'{"nodes": []}')
    login(client, harness, "user002")

    r = client.get("/u/user002/templates/index.json")
    assert r.headers["content-type"] == "application/json"
    [category] = r.json()
    assert category["moduleName"] == "default" and category["title"] == "Workshop"
    assert category["templates"] == [
        {"name": "Day_1_-_poster", "title": "Poster maker", "description": "A poster in steps",
         "mediaType": "image", "mediaSubtype": "webp"},
        {"name": "plain", "title": "plain", "description": "", "mediaType": "image",
         "mediaSubtype": "png"}]

    assert client.get("/u/user002/templates/Day_1_-_poster.json").json() == FLOW
    thumb = client.get("/u/user002/templates/Day_1_-_poster-1.webp")
    assert thumb.status_code == 200 and thumb.content == WEBP
    placeholder = client.get("/u/user002/templates/plain-1.png")  # the frontend's own
    assert placeholder.status_code == 200 and placeholder.content.startswith(b"\x89PNG")
    for missing in ("nothing.json", "Day_1_-_poster-1.png", "Day_1_-_poster-2.webp",
                    "..%2Fsecret_key"):
        assert client.get(f"/u/user002/templates/{missing}").status_code == 404, missing
    # Another participant's session cannot read through user002's workspace.
    login(client, harness, "user003")
    assert client.get("/u/user002/templates/index.json").status_code in (403, 404)


def test_first_visit_opens_the_default_workflow_once(ws_hub) -> None:
    harness, client = ws_hub
    settings = harness.ctx.settings
    templates.publish(settings, "Welcome portrait", b'{"nodes": []}', title="Welcome",
                      thumbnail_bytes=make_png(8, 8))
    login(client, harness, "user002")
    assert client.get("/u/user002/", follow_redirects=False).status_code == 200  # no default

    templates.set_default(settings, "Welcome portrait")
    r = client.get("/u/user002/", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/u/user002/?template=Welcome_portrait"
    assert client.get(r.headers["location"], follow_redirects=False).status_code == 200

    # The frontend records the first run as done; from then on the page opens as it is.
    assert client.post("/u/user002/api/settings/Comfy.TutorialCompleted",
                       content=b"true", headers={"Origin": "http://testserver"}
                       ).status_code == 200
    assert client.get("/u/user002/", follow_redirects=False).status_code == 200
