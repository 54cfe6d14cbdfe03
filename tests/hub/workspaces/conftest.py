"""Workspace fixtures: a hub whose catalog is the real ComfyUI 0.33.0 one, with two users."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from comfymulti.db import transaction
from comfymulti.hub.services import workers
from comfymulti.protocol import RegisterRequest
from tests import testdata

MODELS = {"checkpoints": ["ltx-2-19b-distilled.safetensors"], "vae": ["flux2-vae.safetensors"]}


def real_catalog() -> dict[str, Any]:
    info = json.loads(gzip.decompress(testdata.CATALOG.read_bytes()))
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = MODELS["checkpoints"]
    return {"object_info": info, "models": MODELS}


_CATALOG = real_catalog()


def give_catalog(harness: Any, catalog: dict[str, Any] | None = None,
                 name: str = "gpu-1") -> None:
    """Register a worker with the catalog directly (no worker process needed)."""
    from comfymulti.catalog.codec import catalog_hash

    catalog = catalog or _CATALOG
    with transaction(harness.ctx.factory) as s:
        token = workers.authenticate(s, harness.worker_token())
        assert token is not None
        worker, _ = workers.register(s, token, RegisterRequest(
            name=name, catalog_hash=catalog_hash(catalog), gpu="Fake GPU",
            vram_total=80 * 2**30, comfyui_version="0.33.0"))
        workers.store_catalog(s, worker, catalog_hash(catalog), catalog)


@pytest.fixture
def ws_hub(make_hub) -> Iterator[tuple[Any, TestClient]]:
    harness = make_hub()
    harness.user("user002")
    harness.user("user003")
    give_catalog(harness)
    with TestClient(harness.app, base_url="http://testserver") as client:
        yield harness, client


def login(client: TestClient, harness: Any, name: str) -> None:
    r = client.post("/login", data={"username": name, "password": harness.passwords[name]},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
