"""The Verda test server against the shapes and rules of the Verda reference (verda-and-r2.md
(§1.3-1.6, §5), spoken to over raw HTTP so nothing in our adapter hides a difference."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from tests.fakes.verda import CLIENT_ID, CLIENT_SECRET, VerdaServer

INSTANCE_FIELDS = {"id", "instance_type", "price_per_hour", "hostname", "description", "status",
                   "created_at", "ssh_key_ids", "cpu", "gpu", "memory", "storage", "gpu_memory",
                   "ip", "os_volume_id", "location", "image", "startup_script_id", "is_spot",
                   "contract", "pricing"}
VOLUME_FIELDS = {"id", "status", "name", "size", "type", "is_os_volume", "created_at",
                 "location", "instance_id", "target", "pseudo_path", "mount_command",
                 "deleted_at", "instances"}


@pytest.fixture
def api() -> Iterator[tuple[httpx.Client, VerdaServer]]:
    server = VerdaServer()
    token = httpx.post(server.base_url + "/oauth2/token", json={
        "grant_type": "client_credentials", "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET}).json()
    assert set(token) == {"access_token", "refresh_token", "scope", "token_type", "expires_in"}
    assert token["token_type"] == "Bearer"
    client = httpx.Client(base_url=server.base_url,
                          headers={"Authorization": f"Bearer {token['access_token']}"})
    try:
        yield client, server
    finally:
        client.close()
        server.stop()


def error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"code", "message"} and body["code"] == code
    return str(body["message"])


def create_instance(client: httpx.Client, **extra: Any) -> str:
    r = client.post("/instances", json={
        "instance_type": "1H100.80S.30V", "image": "ubuntu-24.04-cuda-12.8-open-docker",
        "hostname": "h1", "description": "d", "location_code": "FIN-01", **extra})
    assert r.status_code == 202 and r.headers["content-type"] == "text/plain"
    return str(uuid.UUID(r.text))  # a plain-text id, not JSON


def test_auth_errors_and_unknown_routes_answer_json(api: tuple[httpx.Client, VerdaServer]
                                                    ) -> None:
    client, server = api
    assert "token" in error(httpx.get(server.base_url + "/instances"), 401,
                            "unauthorized_request")
    assert error(client.get("/nope"), 404, "not_found")
    assert error(client.get(f"/instances/{uuid.uuid4()}"), 404,
                 "not_found") == "Invalid instance id"
    bad = httpx.post(server.base_url + "/oauth2/token", json={
        "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": "x"})
    error(bad, 401, "unauthorized_request")


def test_instance_goes_ordered_provisioning_running_and_delete_keeps_named_volumes(
        api: tuple[httpx.Client, VerdaServer]) -> None:
    client, _ = api
    iid = create_instance(client)
    seen = [client.get(f"/instances/{iid}").json() for _ in range(3)]
    assert set(seen[0]) == INSTANCE_FIELDS
    assert [i["status"] for i in seen] == ["provisioning", "running", "running"]
    assert seen[0]["ip"] is None and seen[1]["ip"]
    first = client.get(f"/instances/{iid}").json()
    # created as "ordered": a delete before it runs is refused as on the real API
    iid2 = create_instance(client, hostname="h2")
    assert error(client.put("/instances", json={"action": "delete", "id": [iid2],
                                                "volume_ids": []}), 400, "invalid_request") \
        == "Can't discontinue a provisioning instance"
    vol = client.post("/volumes", json={"type": "NVMe", "name": "scratch", "size": 50,
                                        "location_code": "FIN-01"}).text
    assert client.get(f"/volumes/{vol}").json()["status"] == "detached"
    refused = client.put("/volumes", json={"id": [vol], "action": "attach", "instance_id": iid})
    assert "shut down" in error(refused, 400, "invalid_request")
    assert client.put("/instances", json={"action": "shutdown", "id": [iid]}).status_code == 202
    assert client.put("/volumes", json={"id": [vol], "action": "attach",
                                        "instance_id": iid}).status_code == 202
    assert client.get(f"/volumes/{vol}").json()["target"] == "vdb"
    r = client.put("/instances", json={"action": "delete", "id": [iid],
                                       "volume_ids": [first["os_volume_id"]]})
    assert r.status_code == 202 and r.json()[0]["instanceId"] == iid
    trash = client.get("/volumes/trash").json()
    assert [v["id"] for v in trash] == [first["os_volume_id"]] and trash[0]["deleted_at"]
    kept = client.get(f"/volumes/{vol}").json()
    assert kept["status"] == "detached" and kept["instance_id"] is None
    assert iid not in {i["id"] for i in client.get("/instances").json()}
    partial = client.put("/instances", json={"action": "shutdown", "id": [iid, iid2]})
    assert partial.status_code == 207 and {x["status"] for x in partial.json()} == {"error"}


def test_delete_without_volume_ids_takes_the_os_disk_and_detaches_the_rest(
        api: tuple[httpx.Client, VerdaServer]) -> None:
    client, _ = api
    iid = create_instance(client, volumes=[{"name": "data", "size": 10, "type": "NVMe"}])
    for _ in range(2):
        client.get(f"/instances/{iid}")
    os_id = client.get(f"/instances/{iid}").json()["os_volume_id"]
    client.put("/instances", json={"action": "delete", "id": [iid], "volume_ids": None})
    live = {v["name"]: v for v in client.get("/volumes").json()}
    assert "data" in live and live["data"]["instance_id"] is None
    assert os_id not in {v["id"] for v in client.get("/volumes").json()}


def test_sfs_shape_keys_scripts_and_the_clock(api: tuple[httpx.Client, VerdaServer]) -> None:
    client, server = api
    sfs = client.post("/volumes", json={"type": "NVMe_Shared", "name": "models", "size": 100,
                                        "location_code": "FIN-01"}).text
    body = client.get(f"/volumes/{sfs}").json()
    assert set(body) >= VOLUME_FIELDS and body["pseudo_path"] and "nfs" in body["mount_command"]
    key = client.post("/sshkeys", json={"name": "me", "key": "ssh-ed25519 AAAA"}).text
    assert client.get(f"/sshkeys/{key}").json() == [{"id": key, "name": "me",
                                                     "key": "ssh-ed25519 AAAA"}]
    script = client.post("/scripts", json={"name": "s", "script": "#!/bin/bash\n"}).text
    assert len(client.get(f"/scripts/{script}").json()) == 1
    server.fake.advance(3 * 3600)  # storage billed per second, the SFS while detached too
    r = client.get("/balance")
    assert "expired" in error(r, 401, "unauthorized_request")  # tokens live one hour
    assert parsedate_to_datetime(r.headers["Date"]).timestamp() == server.fake.now()
    assert server.fake.billed() == pytest.approx(3 * 100 * 0.20 / 730, abs=0.001)


def test_injected_429_carries_retry_after(api: tuple[httpx.Client, VerdaServer]) -> None:
    client, server = api
    server.fake.fail("GET", "/images", 429, "too_many_requests", "Rate limit", retry_after=3)
    r = client.get("/images")
    assert r.headers["Retry-After"] == "3" and error(r, 429, "too_many_requests")
    assert client.get("/images").status_code == 200
    assert server.fake.calls[-2:] == [("GET", "/images", 429), ("GET", "/images", 200)]
