"""What an outside tester sent to break the hub: each answers a 4xx JSON error, nothing is
stored, and the owner's job views keep working afterwards."""

from __future__ import annotations

import json

import pytest

from comfymulti.db import transaction
from comfymulti.models import Job

NODE = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                               "color": 0}}
SAVE = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}


def _chain(n: int) -> dict:
    """EmptyImage, then n ImageInvert nodes, then SaveImage, each linked to the one before."""
    prompt = {"1": NODE}
    for i in range(2, n + 2):
        prompt[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    prompt[str(n + 2)] = {**SAVE, "inputs": {**SAVE["inputs"], "images": [str(n + 1), 0]}}
    return prompt


HOSTILE = {
    "node not an object": b'{"prompt": {"1": 5}}',
    "class_type a list": b'{"prompt": {"1": {"class_type": ["SaveImage"], "inputs": {}}}}',
    "inputs a string": b'{"prompt": {"1": {"class_type": "SaveImage", "inputs": "x"}}}',
    "_meta a string": b'{"prompt": {"1": {"class_type": "Nope", "_meta": "x"}}}',
    "negative link slot": json.dumps({"prompt": {"1": NODE, "2": {
        **SAVE, "inputs": {**SAVE["inputs"], "images": ["1", -1]}}}}).encode(),
    "bool link slot": json.dumps({"prompt": {"1": NODE, "2": {
        **SAVE, "inputs": {**SAVE["inputs"], "images": ["1", True]}}}}).encode(),
    "nested 100k deep": b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "prompt_id a number": json.dumps({"prompt": {"1": NODE, "2": SAVE},
                                      "prompt_id": 5}).encode(),
    "width -Infinity": b'{"prompt": {"1": {"class_type": "EmptyImage", "inputs": '
                       b'{"width": -Infinity}}}}',
    "width NaN": b'{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": NaN}}}}',
    "extra_pnginfo a string": json.dumps({"prompt": {"1": NODE, "2": SAVE},
                                          "extra_data": {"extra_pnginfo": "x"}}).encode(),
    "min a string in the value": json.dumps({"prompt": {"1": {**NODE, "inputs": {
        **NODE["inputs"], "width": "1e999"}}, "2": SAVE}}).encode(),
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_prompts_are_refused_in_comfyuis_shape(ws_hub, body: bytes) -> None:
    harness, client = ws_hub
    token = harness.bearer("user002")
    r = client.post("/u/user002/api/prompt", content=body, headers=token)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["message"]
    with transaction(harness.ctx.factory) as s:
        assert s.query(Job).count() == 0
    for path in ("/u/user002/api/jobs", "/u/user002/api/history", "/u/user002/api/queue"):
        assert client.get(path, headers=token).status_code == 200


def test_a_long_linked_chain_is_checked_without_recursion(ws_hub) -> None:
    harness, client = ws_hub
    token = harness.bearer("user002")
    r = client.post("/u/user002/api/prompt", json={"prompt": _chain(3000)}, headers=token)
    assert r.status_code == 200, r.text[:300]
    job_id = r.json()["prompt_id"]
    assert client.get(f"/u/user002/api/jobs/{job_id}", headers=token).status_code == 200
    # A cycle in a long chain is found, not followed forever.
    cyclic = _chain(2500)
    cyclic["1"] = {"class_type": "ImageInvert", "inputs": {"image": ["2501", 0]}}
    r = client.post("/u/user002/api/prompt", json={"prompt": cyclic}, headers=token)
    assert r.status_code == 400
    assert "dependency_cycle" in json.dumps(r.json()["node_errors"])


@pytest.mark.parametrize(("path", "body"), [
    ("/u/user002/api/interrupt", b"{"),
    ("/u/user002/api/history", b'{"delete": 5}'),
    ("/u/user002/api/queue", b'{"delete": "x"}'),
    ("/u/user002/api/jobs/cancel", b'{"job_ids": {"a": 1}}'),
])
def test_run_routes_refuse_malformed_edits(ws_hub, path: str, body: bytes) -> None:
    harness, client = ws_hub
    r = client.post(path, content=body, headers=harness.bearer("user002"))
    assert r.status_code == 400 and r.json()["error"]["message"]


def test_overlong_names_are_refused_not_crashed(ws_hub) -> None:
    harness, client = ws_hub
    token = harness.bearer("user002")
    long = "a" * 300 + ".png"
    r = client.post("/u/user002/api/upload/image", files={"image": (long, b"x", "image/png")},
                    headers=token)
    assert r.status_code == 400, r.text
    r = client.post("/u/user002/api/upload/image", data={"subfolder": "s" * 300},
                    files={"image": ("a.png", b"x", "image/png")}, headers=token)
    assert r.status_code == 400, r.text
    r = client.get("/u/user002/api/view", params={"filename": long}, headers=token)
    assert r.status_code in (400, 404) and r.json()
