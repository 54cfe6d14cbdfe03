"""What a hostile or broken worker (or anyone with no token at all) can do to the hub: big
bodies are refused before they are read, a gzip bomb is refused in under a second, a worker
reads only the files its job loads, and registration numbers stay sane."""

from __future__ import annotations

import gzip
import json
import resource
import time
import zlib
from collections.abc import Iterator

import httpx
import pytest

from comfymulti.catalog.codec import catalog_hash, pack
from tests.conftest import simple_prompt, tiny_catalog


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _zeros(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    block = b"0" * chunk
    for _ in range(total // chunk):
        yield block


def _worker(client: httpx.Client, harness) -> dict[str, str]:
    auth = {"Authorization": f"Bearer {harness.worker_token()}"}
    catalog = tiny_catalog("LoadImage")
    reg = client.post("/worker/v1/register", json={
        "name": "w", "catalog_hash": catalog_hash(catalog)}, headers=auth).json()
    headers = {**auth, "X-Worker-Id": reg["worker_id"]}
    client.put(f"/worker/v1/catalog/{catalog_hash(catalog)}", content=pack(catalog),
               headers=headers)
    return headers


@pytest.mark.parametrize("path", ["/worker/v1/renew", "/worker/v1/register",
                                  "/worker/v1/jobs/x/events", "/worker/v1/jobs/x/complete",
                                  "/admin/api/policy", "/u/user002/api/interrupt"])
def test_300_mb_without_credentials_is_refused_before_it_is_read(live_hub, path: str) -> None:
    harness, url = live_hub()
    harness.user("user002")
    before = _peak_mb()
    method = "PUT" if path.endswith("policy") else "POST"
    with httpx.Client(base_url=url, timeout=30) as c:
        try:
            r = c.request(method, path, content=_zeros(300 << 20))
            status = r.status_code
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            status = 401  # the hub answered and closed before taking the rest
    assert status == 401
    assert _peak_mb() - before < 50


def test_gzip_bomb_catalog_is_refused_fast_and_small(live_hub) -> None:
    harness, url = live_hub()
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(deflate.compress(b) for b in _zeros(2 << 30, 8 << 20)) + deflate.flush()
    assert len(bomb) < 3 << 20
    with httpx.Client(base_url=url, timeout=30) as c:
        headers = _worker(c, harness)
        before = _rss_mb()
        start = time.monotonic()
        r = c.put(f"/worker/v1/catalog/{'0' * 64}", content=bomb, headers=headers)
        took = time.monotonic() - start
    assert r.status_code == 413 and "unpacks to more than" in r.json()["error"]["message"]
    assert took < 1.0
    assert _rss_mb() - before < 100


def test_catalog_with_markup_in_names_is_refused(hub) -> None:
    harness, client = hub
    headers = _worker(client, harness)
    catalog = {"object_info": {'<img src=x onerror="alert(1)">': {"input": {}}}, "models": {}}
    r = client.put(f"/worker/v1/catalog/{catalog_hash(catalog)}", content=pack(catalog),
                   headers=headers)
    assert r.status_code == 400 and "plain text" in r.json()["error"]["message"]
    r = client.put(f"/worker/v1/catalog/{catalog_hash(catalog)}",
                   content=gzip.compress(b"[1, 2]"), headers=headers)
    assert r.status_code == 400


def test_absurd_register_values_are_refused(hub) -> None:
    harness, client = hub
    auth = {"Authorization": f"Bearer {harness.worker_token()}"}
    for body in ({"name": "w", "vram_total": 1e20}, {"name": "w" * 200},
                 {"name": "w", "gpu": "x" * 5000}):
        r = client.post("/worker/v1/register", json=body, headers=auth)
        assert r.status_code == 400, (body, r.text)


def test_one_worker_token_serves_a_bounded_number_of_workers(make_hub) -> None:
    from starlette.testclient import TestClient

    harness = make_hub(queue={"max_workers_per_token": 2})
    with TestClient(harness.app) as client:
        auth = {"Authorization": f"Bearer {harness.worker_token()}"}
        for name in ("a", "b"):
            assert client.post("/worker/v1/register", json={"name": name},
                               headers=auth).status_code == 200
        r = client.post("/worker/v1/register", json={"name": "c"}, headers=auth)
        assert r.status_code == 429 and "workers token" in r.json()["error"]["message"]
        # A worker coming back under its own name is always welcome.
        assert client.post("/worker/v1/register", json={"name": "a"},
                           headers=auth).status_code == 200


def _leased(client, harness, prompt) -> tuple[dict[str, str], dict]:
    harness.user("user002")
    r = client.post("/api/v1/jobs", json={"prompt": prompt}, headers=harness.bearer("user002"))
    assert r.status_code == 201, r.text
    headers = _worker(client, harness)
    job = client.post("/worker/v1/lease", params={"wait": 1}, headers=headers).json()
    return headers, job


def test_a_worker_reads_only_the_files_its_job_loads(hub) -> None:
    harness, client = hub
    root = harness.ctx.settings.data_dir / "users/user002/input"
    prompt = simple_prompt()
    prompt["9"] = {"class_type": "LoadImage", "inputs": {"image": "shots/a.png [input]"}}
    headers, job = _leased(client, harness, prompt)
    (root / "shots").mkdir(parents=True)
    (root / "shots/a.png").write_bytes(b"mine")
    (root / "secret.png").write_bytes(b"private")
    base = {"lease_id": job["lease_id"], "type": "input"}
    ok = client.get(f"/worker/v1/jobs/{job['job_id']}/inputs",
                    params={**base, "filename": "a.png", "subfolder": "shots"}, headers=headers)
    assert ok.status_code == 200 and ok.content == b"mine"
    other = client.get(f"/worker/v1/jobs/{job['job_id']}/inputs",
                       params={**base, "filename": "secret.png"}, headers=headers)
    assert other.status_code == 404 and b"private" not in other.content


@pytest.mark.parametrize(("filename", "subfolder"), [("", ""), ("  ", ""), ("a" * 300, ""),
                                                     ("a.png", "s" * 300)])
def test_bad_output_names_are_refused(hub, filename: str, subfolder: str) -> None:
    harness, client = hub
    headers, job = _leased(client, harness, simple_prompt())
    r = client.put(f"/worker/v1/jobs/{job['job_id']}/outputs", params={
        "lease_id": job["lease_id"], "key": "k", "node_id": "2", "filename": filename,
        "subfolder": subfolder}, content=b"PNG", headers=headers)
    assert r.status_code == 400, r.text
    assert json.loads(r.text)["error"]["message"]
    assert not list((harness.ctx.settings.data_dir / "users/user002/output").iterdir())


def test_a_retried_upload_already_stored_is_answered_without_reading_it(hub) -> None:
    """The worker retries an output upload whose answer it missed: the hub knows the key and
    answers at once instead of taking in the whole file again."""
    harness, client = hub
    headers, job = _leased(client, harness, simple_prompt())
    params = {"lease_id": job["lease_id"], "key": "2/images/0", "node_id": "2",
              "filename": "ComfyUI_00001_.png"}
    url = f"/worker/v1/jobs/{job['job_id']}/outputs"
    first = client.put(url, params=params, content=b"PNG", headers=headers)
    assert first.status_code == 200

    def endless() -> Iterator[bytes]:
        raise AssertionError("the hub read the body of a retry it had stored already")
        yield b""  # pragma: no cover

    again = client.put(url, params=params, content=endless(), headers=headers)
    assert again.status_code == 200 and again.json() == first.json()


def test_reusing_a_prompt_id_after_deleting_its_history_starts_clean(hub) -> None:
    """History deletion forgets the job's output records too: the same prompt id used again
    gets a new job with no outputs of the old one."""
    harness, client = hub
    headers, job = _leased(client, harness, simple_prompt())
    job_id = job["job_id"]
    client.put(f"/worker/v1/jobs/{job_id}/outputs", params={
        "lease_id": job["lease_id"], "key": "2/images/0", "node_id": "2",
        "filename": "old.png"}, content=b"OLD", headers=headers)
    client.post(f"/worker/v1/jobs/{job_id}/complete", json={
        "lease_id": job["lease_id"], "status": "success"}, headers=headers)
    user = harness.bearer("user002")
    assert client.post("/u/user002/api/history", json={"delete": [job_id]},
                       headers=user).status_code == 200
    r = client.post("/api/v1/jobs", json={"prompt": simple_prompt(), "prompt_id": job_id},
                    headers=user)
    assert r.status_code == 201, r.text
    again = client.post("/worker/v1/lease", params={"wait": 1}, headers=headers).json()
    assert again["job_id"] == job_id
    stored = client.put(f"/worker/v1/jobs/{job_id}/outputs", params={
        "lease_id": again["lease_id"], "key": "2/images/0", "node_id": "2",
        "filename": "new.png"}, content=b"NEW", headers=headers).json()
    assert stored["filename"] == "new.png"  # not the old attempt's record
