"""The only importer of boto3: an S3 client that follows R2's rules, and error translation.

R2 refuses aws-chunked bodies and checksum trailers and wants equal part sizes, so checksums are
computed here and sent as ordinary ChecksumSHA256 headers, and every part but the last has the
configured size. Each object carries its whole-file SHA-256 in metadata (R2 keeps only composite
checksums for multipart objects).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from comfymulti.config import BackupSettings
from comfymulti.errors import ConfigError, IntegrityError, RemoteUnavailable

MIB = 1024 * 1024
_CHUNK = MIB
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
               "InvalidToken", "ExpiredToken"}
_MISSING_BUCKET = {"NoSuchBucket"}


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    sha256: str


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class ObjectStore:
    """One bucket and prefix; thread-safe (boto3 clients are), one instance per command."""

    def __init__(self, cfg: BackupSettings) -> None:
        if not cfg.endpoint_url or not cfg.bucket:
            raise ConfigError("backup.endpoint_url and backup.bucket must be set to use backups")
        self.endpoint = cfg.endpoint_url
        self.bucket = cfg.bucket
        self.prefix = cfg.prefix.strip("/")
        self.part_size = cfg.part_size_mb * MIB
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region or "auto",
            aws_access_key_id=cfg.access_key_id or None,
            aws_secret_access_key=cfg.secret_access_key.get_secret_value() or None,
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5, read_timeout=60,
                max_pool_connections=max(10, cfg.concurrency * 2)))

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """botocore errors become one clear line naming endpoint, bucket or credentials."""
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _AUTH_CODES:
                raise RemoteUnavailable(
                    f"{self.endpoint} refused the credentials (backup.access_key_id / "
                    f"backup.secret_access_key) for bucket {self.bucket!r}: {code}") from exc
            if code in _MISSING_BUCKET:
                raise RemoteUnavailable(
                    f"bucket {self.bucket!r} does not exist at {self.endpoint}") from exc
            raise RemoteUnavailable(
                f"{action} failed at {self.endpoint}: {code} {error.get('Message', '')}".strip()
            ) from exc
        except EndpointConnectionError as exc:
            raise RemoteUnavailable(f"cannot reach backup storage at {self.endpoint}") from exc
        except BotoCoreError as exc:
            if type(exc).__name__ == "NoCredentialsError":
                raise ConfigError("backup.access_key_id and backup.secret_access_key are not "
                                  "set") from exc
            raise RemoteUnavailable(f"{action} failed at {self.endpoint}: {exc}") from exc

    def check(self) -> None:
        """Fail early, with the reason, if the bucket cannot be used."""
        with self._translated(f"opening bucket {self.bucket!r}"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                # HEAD answers carry no error body: name the usual causes from the status.
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 404:
                    exc.response["Error"]["Code"] = "NoSuchBucket"
                elif status == 403:
                    exc.response["Error"]["Code"] = "403"
                raise

    def head(self, key: str) -> ObjectInfo | None:
        """Size, ETag and recorded SHA-256 of an object; None if there is none."""
        with self._translated(f"reading {key}"):
            try:
                r = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return None
                raise
        return ObjectInfo(int(r["ContentLength"]), r["ETag"].strip('"'),
                          r.get("Metadata", {}).get("sha256", ""))

    def put_bytes(self, key: str, data: bytes) -> str:
        digest = hashlib.sha256(data)
        with self._translated(f"writing {key}"):
            r = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ChecksumSHA256=_b64(digest.digest()),
                Metadata={"sha256": digest.hexdigest()})
        return str(r["ETag"]).strip('"')

    def get_bytes(self, key: str) -> bytes | None:
        """A small object's content (manifests); None if there is none."""
        with self._translated(f"reading {key}"):
            try:
                return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                    return None
                raise

    def upload_file(self, key: str, path: Path, sha256: str) -> str:
        """Store a file whose SHA-256 is already known; IntegrityError if it changed since.

        Memory: one part at a time. Returns the object's ETag.
        """
        with path.open("rb") as fh:
            first = fh.read(self.part_size)
            rest = fh.read(1)
            if not rest:
                if hashlib.sha256(first).hexdigest() != sha256:
                    raise IntegrityError(f"{path}: changed while being backed up")
                with self._translated(f"uploading {path}"):
                    r = self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=first, Metadata={"sha256": sha256},
                        ChecksumSHA256=_b64(hashlib.sha256(first).digest()))
                return str(r["ETag"]).strip('"')
            fh.seek(0)
            return self._multipart(key, path, fh, sha256)

    def _multipart(self, key: str, path: Path, fh: BinaryIO, sha256: str) -> str:
        with self._translated(f"uploading {path}"):
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256",
                Metadata={"sha256": sha256})
        upload_id = upload["UploadId"]
        try:
            whole = hashlib.sha256()
            parts: list[dict[str, Any]] = []
            while data := fh.read(self.part_size):
                whole.update(data)
                checksum = _b64(hashlib.sha256(data).digest())
                with self._translated(f"uploading {path}"):
                    r = self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, Body=data,
                        PartNumber=len(parts) + 1, ChecksumSHA256=checksum)
                parts.append({"PartNumber": len(parts) + 1, "ETag": r["ETag"],
                              "ChecksumSHA256": checksum})
            if whole.hexdigest() != sha256:
                raise IntegrityError(f"{path}: changed while being backed up")
            with self._translated(f"uploading {path}"):
                r = self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts})
            return str(r["ETag"]).strip('"')
        except BaseException:
            # Best effort: the original error matters more; R2 drops stale uploads after 7 days.
            with suppress(RemoteUnavailable), self._translated(f"aborting {path}"):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                   UploadId=upload_id)
            raise

    def download(self, key: str, out: BinaryIO) -> str:
        """Stream an object into out; returns the SHA-256 of what was received."""
        digest = hashlib.sha256()
        with self._translated(f"downloading {key}"):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()
