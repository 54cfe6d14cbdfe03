"""Walk every route that takes a body with malformed ones, as a caller allowed to use it:
the answer is a 4xx with a JSON body, never a 5xx, and never plain text."""

from __future__ import annotations

import pytest

from comfymulti.queue.jobs import Role
from tests.hub.test_route_access import all_routes, concrete

MALFORMED = [
    b"{",
    b"[]",
    b"5",
    b"null",
    b'"text"',
    b"\xff\xfe",
    b'{"prompt": {"1": "x"}}',
    b'{"prompt": {"1": {"class_type": ["A"]}}}',
    b'{"prompt": {"1": {"class_type": "A", "inputs": "x"}}}',
    b'{"prompt": {"1": {"class_type": "A"}}, "prompt_id": 5}',
    b'{"prompt": {"1": {"class_type": "A", "inputs": {"w": NaN}}}}',
    b'{"delete": 5, "clear": "x", "job_ids": 5, "prompt_id": {"a": 1}}',
    b'{"x": -Infinity}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"leases": 5, "events": 5, "lease_id": 5, "status": "bogus", "name": 5}',
]


@pytest.fixture
def callers(hub):
    harness, client = hub
    harness.user("user002")
    harness.user("boss", Role.ADMIN)
    token = harness.worker_token()
    auth = {"Authorization": f"Bearer {token}"}
    reg = client.post("/worker/v1/register", json={"name": "w"}, headers=auth).json()
    return harness, client, {
        "user": harness.bearer("user002"),
        "admin": harness.bearer("boss"),
        "worker": {**auth, "X-Worker-Id": reg["worker_id"]},
    }


def _who(path: str) -> str:
    if path.startswith("/admin/"):
        return "admin"
    if path.startswith("/worker/"):
        return "worker"
    return "user"


def test_every_route_answers_malformed_bodies_with_a_4xx_json_error(callers) -> None:
    harness, client, headers = callers
    checked = 0
    for route in all_routes(harness.app):
        for method in sorted(route.methods - {"GET", "HEAD"}):
            if route.path in ("/login", "/logout"):
                continue  # forms: answered with the login page, tested in test_run_api
            url = concrete(route.path) + ("?lease_id=x&key=k&node_id=1&filename=a.png"
                                          if route.path.endswith("/outputs") else "")
            for body in MALFORMED:
                r = client.request(method, url, content=body, headers={
                    **headers[_who(route.path)], "Content-Type": "application/json"})
                where = (method, route.path, body[:60], r.status_code, r.text[:200])
                assert r.status_code < 500, where
                if r.status_code >= 400:
                    assert r.headers["content-type"].startswith("application/json"), where
                    assert r.json()["error"], where
                checked += 1
    assert checked > 40 * len(MALFORMED) // 2


@pytest.mark.parametrize("path", ["/u/user002/api/interrupt", "/u/user002/api/history",
                                  "/u/user002/api/queue", "/u/user002/api/prompt",
                                  "/u/user002/api/jobs/cancel"])
def test_comfyui_routes_refuse_invalid_json_in_comfyuis_shape(callers, path: str) -> None:
    _harness, client, headers = callers
    r = client.post(path, content=b"{", headers=headers["user"])
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["message"] and "node_errors" in body


def test_history_delete_must_be_a_list(callers) -> None:
    _harness, client, headers = callers
    r = client.post("/u/user002/api/history", json={"delete": 5}, headers=headers["user"])
    assert r.status_code == 400 and "list" in r.json()["error"]["message"]
