"""Walk every route of the hub: each is public on purpose or refuses anonymous callers with
one JSON error shape; admin routes refuse participants; worker routes refuse user tokens."""

from __future__ import annotations

import re
import uuid

from fastapi.routing import APIRoute

PUBLIC = {
    "/", "/login", "/logout", "/health", "/metrics", "/assets/favicon.ico",
    "/assets/images/{rest:path}", "/u/{user}", "/u/{user}/", "/u/{user}/{path:path}",
    "/{name}", "/{name}/",
    "/admin",  # the dashboard page: sends a visitor who is not logged in to the login page
}


def all_routes(app) -> list[APIRoute]:
    found = []
    for route in app.routes:
        inner = getattr(route, "original_router", None)
        found += list(inner.routes) if inner is not None else [route]
    return [r for r in found if isinstance(r, APIRoute)]


def concrete(path: str) -> str:
    path = path.replace("{user}", "user002")
    return re.sub(r"\{[^}]+\}", lambda m: "x" if ":path" in m.group() else str(uuid.uuid4()),
                  path)


def test_every_route_is_public_or_authenticated(hub) -> None:
    harness, client = hub
    harness.user("user002")
    routes = all_routes(harness.app)
    assert len(routes) > 60
    seen_public = set()
    for route in routes:
        for method in route.methods - {"HEAD"}:
            if route.path in PUBLIC:
                seen_public.add(route.path)
                continue
            r = client.request(method, concrete(route.path), follow_redirects=False)
            assert r.status_code == 401, (method, route.path, r.status_code)
            body = r.json()
            assert body["error"]["type"] == "unauthorized" and body["error"]["message"]
    assert seen_public == PUBLIC


def test_admin_routes_refuse_participants_and_worker_routes_refuse_users(hub) -> None:
    harness, client = hub
    harness.user("user002")
    user = harness.bearer("user002")
    for route in all_routes(harness.app):
        for method in route.methods - {"HEAD"}:
            if route.path.startswith("/admin/"):
                r = client.request(method, concrete(route.path), headers=user)
                assert r.status_code == 403, (method, route.path, r.status_code)
            elif route.path.startswith("/worker/"):
                r = client.request(method, concrete(route.path), headers=user)
                assert r.status_code == 401, (method, route.path, r.status_code)
