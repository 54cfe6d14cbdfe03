"""A real S3 server for the whole session, a fresh bucket per test, and a guard that fails any
test whose requests R2 would refuse (aws-chunked bodies, trailers, unequal part sizes)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from comfymulti.config import Settings, load_settings
from comfymulti.ops.backup import manifest
from comfymulti.ops.backup.manifest import Entry
from comfymulti.ops.backup.s3 import ObjectStore
from tests.fakes.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedS3


class R2Guard:
    """botocore event hooks recording what R2 would reject, and what moved (for counting)."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.parts: dict[str, dict[int, int]] = defaultdict(dict)
        self.uploaded_bytes = 0
        self.puts: list[str] = []  # keys of whole objects stored (blobs and packs)
        self.downloads = 0

    def attach(self, client: Any) -> None:
        events = client.meta.events
        events.register("before-send.s3", self.check_headers)
        events.register("provide-client-params.s3.UploadPart", self.record_part)
        events.register("provide-client-params.s3.PutObject", self.record_put)
        events.register("provide-client-params.s3.CompleteMultipartUpload", self.check_parts)
        events.register("provide-client-params.s3.GetObject", self.record_get)

    def check_headers(self, request: Any, **_: Any) -> None:
        headers = {k.lower(): str(v) for k, v in request.headers.items()}
        if "aws-chunked" in headers.get("content-encoding", ""):
            self.violations.append(f"aws-chunked body: {request.url}")
        if "x-amz-trailer" in headers:
            self.violations.append(f"checksum trailer: {request.url}")
        if headers.get("x-amz-content-sha256", "").startswith("STREAMING"):
            self.violations.append(f"streaming signature: {request.url}")
        if request.method == "PUT" and "x-amz-checksum-sha256" not in headers and (
                "partNumber=" in request.url or "uploadId=" not in request.url):
            self.violations.append(f"PUT without an explicit SHA-256: {request.url}")

    def record_part(self, params: dict[str, Any], **_: Any) -> None:
        self.parts[params["UploadId"]][params["PartNumber"]] = len(params["Body"])
        self.uploaded_bytes += len(params["Body"])

    def record_put(self, params: dict[str, Any], **_: Any) -> None:
        if "/blobs/" in params["Key"] or "/packs/" in params["Key"]:
            self.uploaded_bytes += len(params["Body"])
            self.puts.append(params["Key"])

    def check_parts(self, params: dict[str, Any], **_: Any) -> None:
        sizes = [size for _, size in sorted(self.parts[params["UploadId"]].items())]
        if len(set(sizes[:-1])) > 1 or (len(sizes) > 1 and sizes[-1] > sizes[0]):
            self.violations.append(f"unequal part sizes {sizes} for {params['Key']}")

    def record_get(self, params: dict[str, Any], **_: Any) -> None:
        if "/blobs/" in params["Key"] or "/packs/" in params["Key"]:
            self.downloads += 1


def tamper(settings: Settings, set_name: str, entry: Entry, data: bytes) -> None:
    """Replace a stored file's bytes (same length) behind the tool's back, in its blob or in
    its pack, with an unguarded client: this write is the damage."""
    raw = ObjectStore(settings.backup)
    key = manifest.object_key(raw, set_name, entry)
    stored = raw.get_bytes(key)
    assert stored is not None and len(data) == entry.size
    raw.put_bytes(key, stored[:entry.offset] + data + stored[entry.offset + entry.size:])


@pytest.fixture
def guard() -> Iterator[R2Guard]:
    g = R2Guard()
    yield g
    assert not g.violations, g.violations


@pytest.fixture
def backup_config(s3_server: SeaweedS3) -> dict[str, Any]:
    """A [backup] section pointing at a fresh bucket (5 MiB parts keep multipart tests small)."""
    cfg = {"endpoint_url": s3_server.endpoint, "bucket": f"test-{uuid.uuid4().hex[:12]}",
           "prefix": "site", "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY,
           "part_size_mb": 5, "concurrency": 4}
    settings = load_settings(None, backup=cfg)
    ObjectStore(settings.backup).client.create_bucket(Bucket=cfg["bucket"])
    return cfg


@pytest.fixture
def make_ops(tmp_path: Path, backup_config: dict[str, Any], guard: R2Guard
             ) -> Callable[..., tuple[Settings, ObjectStore]]:
    """Settings whose `files` set covers ROOT, and a guarded store on the test's bucket."""

    def make(root: Path, **set_options: Any) -> tuple[Settings, ObjectStore]:
        backup = {**backup_config, "sets": {"files": {"root": str(root), **set_options}}}
        settings = load_settings(None, data_dir=str(tmp_path / "data"), backup=backup)
        store = ObjectStore(settings.backup)
        guard.attach(store.client)
        return settings, store

    return make
