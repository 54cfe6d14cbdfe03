"""Participants see what the online workers offer together; each job still goes only to a
worker that can run it."""

from __future__ import annotations

import copy

from comfymulti.catalog.index import merge_catalogs
from comfymulti.queue import catalogs
from tests.hub.workspaces.conftest import give_catalog, login, real_catalog

LOAD = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ""}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


def _with_checkpoint(name: str) -> dict:
    catalog = copy.deepcopy(real_catalog())
    catalog["object_info"]["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = [
        name]
    catalog["models"] = {"checkpoints": [name]}
    return catalog


def test_merge_is_a_union_of_nodes_combos_and_models() -> None:
    a, b = _with_checkpoint("ltx.safetensors"), _with_checkpoint("flux.safetensors")
    del b["object_info"]["EmptyImage"]
    merged = merge_catalogs([b, a])
    spec = merged["object_info"]["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    assert spec[0] == ["flux.safetensors", "ltx.safetensors"]
    assert "EmptyImage" in merged["object_info"]
    assert merged["models"] == {"checkpoints": ["flux.safetensors", "ltx.safetensors"]}
    assert b["models"] == {"checkpoints": ["flux.safetensors"]}  # inputs left untouched


def test_workspace_offers_models_of_every_online_worker(ws_hub) -> None:
    harness, client = ws_hub
    give_catalog(harness, _with_checkpoint("flux.safetensors"), name="gpu-flux")
    give_catalog(harness, _with_checkpoint("ltx.safetensors"), name="gpu-ltx")
    login(client, harness, "user002")
    info = client.get("/u/user002/api/object_info").json()
    offered = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert {"flux.safetensors", "ltx.safetensors"} <= set(offered)
    for name in ("flux.safetensors", "ltx.safetensors"):
        prompt = copy.deepcopy(LOAD)
        prompt["1"]["inputs"]["ckpt_name"] = name
        r = client.post("/u/user002/api/prompt", json={"prompt": prompt})
        assert r.status_code == 200, r.text
    prompt = copy.deepcopy(LOAD)
    prompt["1"]["inputs"]["ckpt_name"] = "nowhere.safetensors"
    assert client.post("/u/user002/api/prompt", json={"prompt": prompt}).status_code == 400


def test_object_info_is_sent_gzipped_from_prepared_bytes(ws_hub) -> None:
    harness, client = ws_hub
    token = harness.bearer("user002")
    r = client.get("/u/user002/api/object_info", headers={**token, "Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and len(r.json()) > 800
    assert int(r.headers["content-length"]) < len(r.content) / 5  # sent compressed
    plain = client.get("/u/user002/api/object_info",
                       headers={**token, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == r.json()


def test_object_info_is_compressed_once_for_every_participant(ws_hub, monkeypatch) -> None:
    """300 workspaces opening at once must share one gzip copy of the 1.6 MB catalog."""
    harness, client = ws_hub
    compressed = []
    real = catalogs.gzip.compress
    monkeypatch.setattr(catalogs.gzip, "compress",
                        lambda data, *a, **k: compressed.append(1) or real(data, *a, **k))
    bodies = []
    for name in ("user002", "user003", "user002"):
        r = client.get(f"/u/{name}/api/object_info",
                       headers={**harness.basic(name), "Accept-Encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        bodies.append(r.content)
    assert len(compressed) <= 1 and bodies[0] == bodies[1] == bodies[2]
