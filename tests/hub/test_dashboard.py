"""The organiser's dashboard: who may see it, its live channel, and the levers behind it
(dispatch pause, worker forget, accounts, templates, announcements)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from comfymulti.catalog.codec import catalog_hash, pack
from comfymulti.db import transaction
from comfymulti.hub.services import templates
from comfymulti.models import Worker
from comfymulti.queue.jobs import Role
from comfymulti.userfiles import user_root
from tests.conftest import simple_prompt, tiny_catalog
from tests.hub.test_route_access import all_routes, concrete
from tests.hub.workspaces.conftest import give_catalog, login

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
                       "DwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
WORKFLOW = {"nodes": [], "links": [], "version": 0.4}


def _ws_url(url: str) -> str:
    return url.replace("http", "ws") + "/admin/ws"


def _snapshot(ws: Any, timeout: float = 5) -> dict[str, Any]:
    message = json.loads(ws.recv(timeout=timeout))
    assert message["type"] == "snapshot"
    return message["data"]


def test_participants_get_403_on_every_admin_route_and_the_live_channel(live_hub) -> None:
    harness, url = live_hub()
    harness.user("user002")
    user = harness.bearer("user002")
    routes = [(m, r.path) for r in all_routes(harness.app) for m in r.methods - {"HEAD"}
              if r.path == "/admin" or r.path.startswith("/admin/")]
    assert ("GET", "/admin") in routes and ("GET", "/admin/static/{name}") in routes
    assert len(routes) >= 20
    with httpx.Client(base_url=url) as client:
        for method, path in routes:
            r = client.request(method, concrete(path), headers=user)
            assert r.status_code == 403, (method, path, r.status_code)
        # Anonymous: the page sends to the login, everything else is 401.
        r = client.get("/admin", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/?next=/admin"
        assert client.get("/admin/static/admin.js").status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        connect(_ws_url(url), additional_headers=user)
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as refused:
        connect(_ws_url(url))
    assert refused.value.response.status_code == 403


def test_instructors_get_the_view_read_only(live_hub) -> None:
    harness, url = live_hub()
    harness.user("teacher", Role.INSTRUCTOR)
    teacher = harness.bearer("teacher")
    with httpx.Client(base_url=url, headers=teacher) as client:
        page = client.get("/admin")
        assert page.status_code == 200 and 'data-role="instructor"' in page.text
        assert client.get("/admin/static/admin.css").status_code == 200
        assert client.get("/admin/api/dashboard").status_code == 403
        assert client.put("/admin/api/dispatch", json={"paused": True}).status_code == 403
    with connect(_ws_url(url), additional_headers=teacher) as ws:
        assert [u["name"] for u in _snapshot(ws)["users"]] == ["teacher"]


def test_the_live_channel_pushes_jobs_and_workers_as_they_change(live_hub) -> None:
    harness, url = live_hub()
    harness.user("boss", Role.ADMIN)
    harness.user("user002")
    admin = harness.bearer("boss")
    with connect(_ws_url(url), additional_headers=admin) as ws:
        first = _snapshot(ws)
        assert first["queue"] == [] and first["workers"] == []
        give_catalog(harness, tiny_catalog())  # a worker registers (in-process)
        harness.ctx.queue.notify.changed()
        assert [w["name"] for w in _snapshot(ws)["workers"]] == ["gpu-1"]
        started = time.monotonic()
        r = httpx.post(f"{url}/api/v1/jobs", json={"prompt": simple_prompt()},
                       headers=harness.bearer("user002"))
        assert r.status_code == 201, r.text
        view = _snapshot(ws)
        assert time.monotonic() - started < 2, "pushed on change, not on the slow tick"
        job, = view["queue"]
        assert (job["user"], job["state"], job["position"]) == ("user002", "queued", 1)
        assert view["health"]["queue_depth"] == 1 and view["health"]["oldest_waiting"]
        assert view["users"][1]["name"] == "user002" and view["users"][1]["jobs_today"] == 1


def test_cross_site_writes_to_the_admin_api_are_refused(hub) -> None:
    harness, client = hub
    harness.user("boss", Role.ADMIN)
    login(client, harness, "boss")
    evil = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert client.post("/admin/api/announcements", json={"text": "hi"},
                       headers=evil).status_code == 403
    ok = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/admin/api/announcements", json={"text": "hi"},
                       headers=ok).status_code == 200


def test_admins_land_on_the_dashboard_participants_in_their_workspace(hub) -> None:
    harness, client = hub
    harness.user("boss", Role.ADMIN)
    harness.user("user002")
    for name, target in (("boss", "/admin"), ("user002", "/u/user002/")):
        r = client.post("/login", data={"username": name, "password": harness.passwords[name]},
                        follow_redirects=False)
        assert r.headers["location"] == target
    r = client.post("/login", data={"username": "user002", "next": "/admin",
                                    "password": harness.passwords["user002"]},
                    follow_redirects=False)
    assert r.headers["location"] == "/u/user002/"


def test_paused_dispatch_leases_nothing_until_resumed(hub) -> None:
    harness, client = hub
    harness.user("boss", Role.ADMIN)
    harness.user("user002")
    admin = harness.bearer("boss")
    token = {"Authorization": f"Bearer {harness.worker_token()}"}
    catalog = tiny_catalog()
    reg = client.post("/worker/v1/register", headers=token, json={
        "name": "gpu", "catalog_hash": catalog_hash(catalog)}).json()
    worker = {**token, "X-Worker-Id": reg["worker_id"]}
    assert client.put(f"/worker/v1/catalog/{catalog_hash(catalog)}", content=pack(catalog),
                      headers={**worker, "Content-Type": "application/gzip"}).status_code == 204
    client.post("/api/v1/jobs", json={"prompt": simple_prompt()}, headers=harness.bearer("user002"))
    assert client.put("/admin/api/dispatch", json={"paused": True}, headers=admin).json() == {
        "paused": True}
    assert client.post("/worker/v1/lease?wait=0", headers=worker).status_code == 204
    assert client.get("/admin/api/dashboard", headers=admin).json()["health"]["paused"] is True
    client.put("/admin/api/dispatch", json={"paused": False}, headers=admin)
    assert client.post("/worker/v1/lease?wait=0", headers=worker).status_code == 200


def test_only_offline_workers_are_forgotten_and_a_stopped_drainer_shows_offline(hub) -> None:
    harness, client = hub
    harness.user("boss", Role.ADMIN)
    admin = harness.bearer("boss")
    give_catalog(harness, name="gpu-old")
    give_catalog(harness, name="gpu-new")
    workers = {w["name"]: w for w in client.get("/admin/api/workers", headers=admin).json()[
        "workers"]}
    client.post(f"/admin/api/workers/{workers['gpu-old']['id']}/drain", headers=admin)
    # gpu-old's machine went away (no SIGTERM, no goodbye): last heard of long ago.
    with transaction(harness.ctx.factory) as s:
        s.execute(update(Worker).where(Worker.name == "gpu-old").values(
            last_seen=time.time() - 3600))
    states = {w["name"]: w["state"] for w in client.get(
        "/admin/api/dashboard", headers=admin).json()["workers"]}
    assert states == {"gpu-old": "offline", "gpu-new": "online"}
    r = client.delete(f"/admin/api/workers/{workers['gpu-new']['id']}", headers=admin)
    assert r.status_code == 409 and "online" in r.json()["error"]["message"]
    r = client.delete(f"/admin/api/workers/{workers['gpu-old']['id']}", headers=admin)
    assert r.json() == {"forgotten": ["gpu-old"]}
    assert [w["name"] for w in client.get("/admin/api/workers", headers=admin).json()[
        "workers"]] == ["gpu-new"]


def test_templates_with_details_thumbnail_order_and_default(hub) -> None:
    harness, client = hub
    harness.user("boss", Role.ADMIN)
    admin = harness.bearer("boss")
    settings = harness.ctx.settings
    r = client.post("/admin/api/templates", headers=admin, json={
        "name": "Portrait", "workflow": WORKFLOW, "title": "Portrait in 4 steps",
        "description": "Start here", "thumbnail": "data:image/png;base64,"
        + base64.b64encode(PNG).decode()})
    assert r.status_code == 201 and r.json()["name"] == "Portrait.json", r.text
    client.post("/admin/api/templates", headers=admin, json={"name": "Video",
                                                            "workflow": WORKFLOW})
    bad = client.post("/admin/api/templates", headers=admin, json={
        "name": "x", "workflow": WORKFLOW, "thumbnail": base64.b64encode(b"GIF89a").decode()})
    assert bad.status_code == 400 and "PNG, JPEG or WebP" in bad.json()["error"]["message"]
    info = {t.name: t for t in templates.describe(settings)}
    assert info["Portrait.json"].title == "Portrait in 4 steps"
    assert info["Portrait.json"].description == "Start here"
    assert info["Portrait.json"].thumbnail.read_bytes() == PNG
    assert info["Video.json"].title == "Video" and info["Video.json"].thumbnail is None
    thumb = client.get("/admin/api/templates/Portrait.json/thumbnail", headers=admin)
    assert thumb.headers["content-type"] == "image/png" and thumb.content == PNG
    # Hidden files beside the templates are no templates.
    assert [p.name for p in templates.list_templates(settings)] == ["Portrait.json",
                                                                   "Video.json"]
    client.put("/admin/api/templates/order", json={"names": ["Video.json"]}, headers=admin)
    assert [p.name for p in templates.list_templates(settings)] == ["Video.json",
                                                                   "Portrait.json"]
    assert templates.default_workflow(settings) is None
    r = client.put("/admin/api/templates/default", json={"name": "Portrait.json"},
                   headers=admin)
    assert r.json() == {"default": "Portrait.json"}
    assert templates.default_workflow(settings) == "Portrait.json"
    assert client.put("/admin/api/templates/default", json={"name": "nope.json"},
                      headers=admin).status_code == 404
    assert client.delete("/admin/api/templates/Portrait.json", headers=admin).status_code == 204
    assert templates.default_workflow(settings) is None
    assert templates.thumbnail(settings, "Portrait.json") is None


def test_accounts_batch_cards_disable_and_tokens(hub) -> None:
    harness, client = hub
    harness.user("boss", Role.ADMIN)
    harness.user("user002")
    harness.user("user003")
    admin = harness.bearer("boss")
    r = client.post("/admin/api/users", json={"count": 2, "prefix": "guest"}, headers=admin)
    assert r.status_code == 201 and r.json()["names"] == ["guest001", "guest002"]
    assert "guest002" in r.json()["cards"] and harness.ctx.settings.public_url in r.json()["cards"]
    assert user_root(harness.ctx.settings.data_dir, "guest001").is_dir()
    assert client.post("/admin/api/users", json={"names": ["user002"]},
                       headers=admin).status_code == 409
    assert client.post("/admin/api/users", json={}, headers=admin).status_code == 400
    # New cards for user002 only: its old password stops working, user003's does not.
    old = harness.basic("user002")
    r = client.post("/admin/api/users/cards", json={"names": ["user002"]}, headers=admin)
    assert r.status_code == 200 and r.json()["names"] == ["user002"]
    assert client.get("/api/v1/jobs", headers=old).status_code == 401
    assert client.get("/api/v1/jobs", headers=harness.basic("user003")).status_code == 200
    assert client.post("/admin/api/users/user003/disable", headers=admin).status_code == 200
    assert client.get("/api/v1/jobs", headers=harness.basic("user003")).status_code == 401
    client.post("/admin/api/users/user003/enable", headers=admin)
    assert client.get("/api/v1/jobs", headers=harness.basic("user003")).status_code == 200
    assert client.post("/admin/api/users/boss/disable", headers=admin).status_code == 409
    token = client.post("/admin/api/users/user003/tokens", headers=admin).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/jobs", headers=bearer).status_code == 200
    assert client.delete("/admin/api/users/user003/tokens", headers=admin).json()["revoked"] == 1
    assert client.get("/api/v1/jobs", headers=bearer).status_code == 401


def test_no_eta_is_shown_while_no_gpu_is_online(hub) -> None:
    harness, client = hub
    harness.user("boss", Role.ADMIN)
    harness.user("user002")
    give_catalog(harness, tiny_catalog())
    client.post("/api/v1/jobs", json={"prompt": simple_prompt()}, headers=harness.bearer("user002"))
    admin = harness.bearer("boss")
    job, = client.get("/admin/api/dashboard", headers=admin).json()["queue"]
    assert job["eta_seconds"] is not None
    with transaction(harness.ctx.factory) as s:
        s.execute(update(Worker).values(last_seen=time.time() - 3600))
    harness.ctx.queue.notify.changed()
    job, = client.get("/admin/api/dashboard", headers=admin).json()["queue"]
    assert job["eta_seconds"] is None
