"""Bad input gets a clear 4xx JSON error, never a 5xx, and nothing is stored."""

from __future__ import annotations

import pytest

from comfymulti.db import transaction
from comfymulti.models import Job
from tests.conftest import simple_prompt


def _no_jobs(harness) -> bool:
    with transaction(harness.ctx.factory) as s:
        return s.query(Job).count() == 0


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 400, '"prompt"'),
        (b'{"prompt": {}}', 400, "non-empty"),
        (b'{"prompt": {"1": {"inputs": {}}}}', 400, "class_type"),
        (b'{"prompt": {"1": "x"}}', 400, "must be an object"),
        (b'{"prompt": {"1": {"class_type": "A"}}, "extra_data": 5}', 400, "extra_data"),
        (b'{"prompt": {"1": {"class_type": "A"}}, "client_id": 7}', 400, "client_id"),
        (b'{"prompt": {"1": {"class_type": "A"}}, "prompt_id": "../x"}', 400, "UUID"),
    ],
)
def test_malformed_prompts(hub, body: bytes, status: int, needle: str) -> None:
    harness, client = hub
    harness.user("u1")
    r = client.post("/api/v1/jobs", content=body, headers=harness.bearer("u1"))
    assert r.status_code == status
    assert needle in r.json()["error"]["message"]
    assert _no_jobs(harness)


def test_prompt_over_the_size_limit(make_hub) -> None:
    from starlette.testclient import TestClient

    harness = make_hub(queue={"max_prompt_bytes": 2048})
    harness.user("u1")
    big = {"prompt": {**simple_prompt(), "3": {"class_type": "Note", "inputs": {
        "text": "x" * 5000}}}}
    with TestClient(harness.app) as client:
        r = client.post("/api/v1/jobs", json=big, headers=harness.bearer("u1"))
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
    assert _no_jobs(harness)


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer cmu_unknown"},
    {"Authorization": "Basic bm9ib2R5OnB3"},  # nobody:pw
    {"Authorization": "Basic %%%"},
    {"Authorization": "Digest abc"},
])
def test_unknown_or_missing_user(hub, headers: dict[str, str]) -> None:
    harness, client = hub
    r = client.post("/api/v1/jobs", json={"prompt": simple_prompt()}, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "unauthorized"
    assert _no_jobs(harness)


def test_wrong_password_and_disabled_user(hub) -> None:
    from comfymulti.hub.services.users import set_disabled

    harness, client = hub
    harness.user("u1")
    good = harness.basic("u1")
    assert client.get("/api/v1/jobs", headers=good).status_code == 200
    assert client.get("/api/v1/jobs", auth=("u1", "wrong")).status_code == 401
    with transaction(harness.ctx.factory) as s:
        set_disabled(s, "u1", True)
    assert client.get("/api/v1/jobs", headers=good).status_code == 401


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer cmw_wrong"}, {"Authorization": "Bearer "},
    {"Authorization": "Basic abc"},
])
def test_wrong_or_missing_worker_token(hub, headers: dict[str, str]) -> None:
    _harness, client = hub
    for method, path in [("post", "/worker/v1/register"), ("post", "/worker/v1/lease"),
                         ("get", "/worker/v1/commands"), ("post", "/worker/v1/renew")]:
        r = getattr(client, method)(path, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["type"] == "unauthorized"


def test_revoked_worker_token_is_refused(hub) -> None:
    from comfymulti.hub.services.workers import revoke_token

    harness, client = hub
    token = harness.worker_token("gpu")
    auth = {"Authorization": f"Bearer {token}"}
    assert client.post("/worker/v1/register", json={"name": "w"}, headers=auth).status_code == 200
    with transaction(harness.ctx.factory) as s:
        revoke_token(s, "gpu")
    assert client.post("/worker/v1/register", json={"name": "w"}, headers=auth).status_code == 401


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "a/../../b", "x\x00.png",
                                  "..\\..\\win.ini"])
def test_path_traversal_in_worker_file_names(hub, name: str) -> None:
    harness, client = hub
    harness.user("u1")
    token = harness.worker_token()
    auth = {"Authorization": f"Bearer {token}"}
    reg = client.post("/worker/v1/register", json={"name": "w", "catalog_hash": "x"},
                      headers=auth).json()
    headers = {**auth, "X-Worker-Id": reg["worker_id"]}
    from comfymulti.catalog.codec import catalog_hash, pack
    from tests.conftest import tiny_catalog

    cat = tiny_catalog()
    digest = catalog_hash(cat)
    client.post("/worker/v1/register", json={"name": "w", "catalog_hash": digest}, headers=auth)
    assert client.put(f"/worker/v1/catalog/{digest}", content=pack(cat),
                      headers=headers).status_code == 204
    client.post("/api/v1/jobs", json={"prompt": simple_prompt()}, headers=harness.bearer("u1"))
    job = client.post("/worker/v1/lease", headers=headers).json()
    q = {"lease_id": job["lease_id"], "key": "k", "node_id": "2", "type": "output"}
    for field in ("filename", "subfolder"):
        params = {**q, "filename": "ok.png", field: name}
        r = client.put(f"/worker/v1/jobs/{job['job_id']}/outputs", params=params,
                       content=b"data", headers=headers)
        assert 400 <= r.status_code < 500, (field, r.status_code)
        r = client.get(f"/worker/v1/jobs/{job['job_id']}/inputs",
                       params={"lease_id": job["lease_id"], "filename": "a.png", field: name},
                       headers=headers)
        assert 400 <= r.status_code < 500, (field, r.status_code)
    out = harness.ctx.settings.data_dir / "users/u1/output"
    assert list(out.iterdir()) == []


def test_another_users_job_is_a_404(hub) -> None:
    harness, client = hub
    harness.user("u1")
    harness.user("u2")
    job = client.post("/api/v1/jobs", json={"prompt": simple_prompt()},
                      headers=harness.bearer("u1")).json()
    other = harness.bearer("u2")
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=other).status_code == 404
    assert client.get(f"/api/v1/jobs/{job['id']}/events", headers=other).status_code == 404
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=other).status_code == 404
    assert client.get("/api/v1/jobs", headers=other).json() == {"jobs": []}
    assert client.get("/admin/api/jobs", headers=other).status_code == 403


@pytest.mark.parametrize("query", ["max_items=10135753184574922238722048",
                                   "offset=10135753184574922238722048",
                                   f"max_items=1&offset={2**63}"])
def test_history_paging_beyond_what_sqlite_binds_is_refused(hub, query: str) -> None:
    """Found by the fuzzer: such numbers reached SQLite's LIMIT/OFFSET and answered 500."""
    harness, client = hub
    harness.user("u1")
    r = client.get(f"/u/u1/api/history?{query}", headers=harness.bearer("u1"))
    assert r.status_code == 400 and r.json()["error"]["message"]
    r = client.get(f"/u/u1/api/history?max_items={2**63 - 1}&offset={2**63 - 1}",
                   headers=harness.bearer("u1"))
    assert r.status_code == 200 and r.json() == {}
