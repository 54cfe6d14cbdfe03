"""The only importer of boto3: an S3 client that follows R2's rules, and error translation.

R2 refuses aws-chunked bodies and checksum trailers and wants equal part sizes, so checksums are
computed here and sent as ordinary ChecksumSHA256 headers, and every part but the last has the
configured size. Each object carries its whole-file SHA-256 in metadata (R2 keeps only composite
checksums for multipart objects).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from comfymulti.config import BackupSettings
from comfymulti.errors import ConfigError, IntegrityError, RemoteUnavailable
from comfymulti.ops.backup.journal import Journal

MIB = 1024 * 1024
_CHUNK = MIB
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
               "InvalidToken", "ExpiredToken"}
_MISSING_BUCKET = {"NoSuchBucket"}
_BAD_DIGEST = {"BadDigest"}

Progress = Callable[[int], None]  # told each number of bytes moved


def no_progress(_: int) -> None:
    pass


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    sha256: str


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class ObjectStore:
    """One bucket and prefix; thread-safe (boto3 clients are), one instance per command.

    Parts of big files move on `concurrency` part threads; `concurrency` slots bound how many
    part-sized buffers exist at once, whatever the number of files in flight.
    """

    def __init__(self, cfg: BackupSettings) -> None:
        if not cfg.endpoint_url or not cfg.bucket:
            raise ConfigError("backup.endpoint_url and backup.bucket must be set to use backups")
        self.endpoint = cfg.endpoint_url
        self.bucket = cfg.bucket
        self.prefix = cfg.prefix.strip("/")
        self.part_size = cfg.part_size_mb * MIB
        self._slots = threading.BoundedSemaphore(cfg.concurrency)
        self._parts = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="part")
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region or "auto",
            aws_access_key_id=cfg.access_key_id or None,
            aws_secret_access_key=cfg.secret_access_key.get_secret_value() or None,
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                # Every body carries its SHA-256 checksum, which the storage verifies: signing
                # the payload too (botocore does on plain http) would hash it twice more.
                s3={"addressing_style": "path", "payload_signing_enabled": False},
                retries={"max_attempts": 3, "mode": "standard"},
                parameter_validation=False,  # our calls are fixed; saves CPU on every request
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
            if code in _BAD_DIGEST:  # the bytes sent are not the bytes hashed before
                raise IntegrityError(f"{action}: the content changed while being backed up "
                                     "(the storage refused its checksum)") from exc
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

    def list(self, prefix: str) -> dict[str, int]:
        """Every key under prefix (a folder: ends with /) and its size."""
        found: dict[str, int] = {}
        with self._translated(f"listing {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                found.update({o["Key"]: int(o["Size"]) for o in page.get("Contents", [])})
        return found

    def delete(self, keys: list[str]) -> None:
        """One DeleteObject per key on the part threads (no DeleteObjects: it needs a checksum
        of the request body, a corner of R2's dialect not worth depending on)."""
        def one(key: str) -> None:
            with self._translated(f"deleting {key}"):
                self.client.delete_object(Bucket=self.bucket, Key=key)
        for future in [self._parts.submit(one, k) for k in keys]:
            future.result()

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

    def take_slot(self) -> None:
        """Wait for one of the `concurrency` part-sized buffers; `put_later` gives it back."""
        self._slots.acquire()

    def put_later(self, key: str, data: bytes) -> Future[str]:
        """PUT data (held in a slot taken by take_slot) on a part thread, which never waits
        for a slot itself, so producers waiting for slots cannot starve it. Gives the ETag."""
        def put() -> str:
            try:
                return self.put_bytes(key, data)
            finally:
                self._slots.release()
        return self._parts.submit(put)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """length bytes of an object from start on, in one request (members of a pack)."""
        if length == 0:
            return b""
        with self._translated(f"downloading {key}"):
            data = bytes(self.client.get_object(
                Bucket=self.bucket, Key=key,
                Range=f"bytes={start}-{start + length - 1}")["Body"].read())
        if len(data) != length:
            raise RemoteUnavailable(f"downloading {key}: {len(data)} of {length} bytes came")
        return data

    def upload_file(self, key: str, path: Path, sha256: str, journal: Journal,
                    progress: Progress = no_progress, part_sums: list[str] | None = None
                    ) -> str:
        """Store a file whose SHA-256 is already known; IntegrityError if it changed since.

        part_sums (each part's SHA-256, base64, from the pass that hashed the file) spare a
        second hashing pass: the storage checks every part against its sum.

        Memory: one part per slot, `concurrency` slots shared by every transfer of this store.
        A multipart upload cut short (even by kill -9) resumes from the journal. Returns the ETag.
        """
        with path.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size > self.part_size:
                return self._multipart(key, path, fh.fileno(), sha256, journal, progress,
                                       part_sums)
            with self._slots:
                data = fh.read(self.part_size + 1)
                digest = hashlib.sha256(data)
                if digest.hexdigest() != sha256:
                    raise IntegrityError(f"{path}: changed while being backed up")
                with self._translated(f"uploading {path}"):
                    r = self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=data, Metadata={"sha256": sha256},
                        ChecksumSHA256=_b64(digest.digest()))
        progress(len(data))
        return str(r["ETag"]).strip('"')

    def _open_upload(self, key: str, path: Path, target: str, sha256: str, journal: Journal
                     ) -> tuple[str, dict[int, tuple[int, str]], dict[int, str]]:
        """The upload to continue, with the parts the server holds (number -> size, ETag) and
        the ETags the journal recorded; or a new upload."""
        if (found := journal.open_upload(target, sha256, self.part_size)) is not None:
            try:
                return (found.upload_id, self._stored_parts(key, path, found.upload_id),
                        found.etags)
            except _Gone:
                journal.end_upload(target)
        with self._translated(f"uploading {path}"):
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256",
                Metadata={"sha256": sha256})["UploadId"]
        journal.begin_upload(target, sha256, self.part_size, upload_id)
        return upload_id, {}, {}

    def _stored_parts(self, key: str, path: Path, upload_id: str) -> dict[int, tuple[int, str]]:
        parts: dict[int, tuple[int, str]] = {}
        marker = 0
        with self._translated(f"resuming {path}"):
            while True:
                try:
                    r = self.client.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                               PartNumberMarker=marker)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                        raise _Gone from exc
                    raise
                parts.update({p["PartNumber"]: (p["Size"], p["ETag"].strip('"'))
                              for p in r.get("Parts", [])})
                if not r.get("IsTruncated"):
                    return parts
                marker = int(r["NextPartNumberMarker"])

    def _multipart(self, key: str, path: Path, fd: int, sha256: str, journal: Journal,
                   progress: Progress, part_sums: list[str] | None) -> str:
        """Read parts in order (hashing them, unless their sums are known), send them on the
        part threads.

        A part the server already holds (same size, and the ETag the journal recorded or the
        MD5 of these bytes) is not sent again."""
        target = f"{self.endpoint}|{self.bucket}|{key}"
        upload_id, stored, journaled = self._open_upload(key, path, target, sha256, journal)
        whole = hashlib.sha256()
        sent: dict[int, Future[str]] = {}
        checksums: dict[int, str] = {}
        try:
            for number in itertools.count(1):
                self._slots.acquire()
                handed = False  # to a part thread, which then releases the slot
                try:
                    data = os.pread(fd, self.part_size, (number - 1) * self.part_size)
                    if not data:
                        break
                    if part_sums is None:
                        whole.update(data)
                        checksums[number] = _b64(hashlib.sha256(data).digest())
                    elif number <= len(part_sums):
                        checksums[number] = part_sums[number - 1]
                    else:
                        raise IntegrityError(f"{path}: changed while being backed up")
                    size, etag = stored.get(number, (-1, ""))
                    if size == len(data) and etag in (journaled.get(number),
                                                      hashlib.md5(data).hexdigest()):
                        sent[number] = _done(etag)
                        progress(len(data))
                        continue
                    sent[number] = self._parts.submit(
                        self._send_part, key, path, upload_id, number, data, checksums[number],
                        journal, progress)
                    handed = True
                finally:
                    if not handed:
                        self._slots.release()
            if (whole.hexdigest() != sha256 if part_sums is None
                    else len(checksums) != len(part_sums)):
                raise IntegrityError(f"{path}: changed while being backed up")
            parts = [{"PartNumber": n, "ETag": f.result(), "ChecksumSHA256": checksums[n]}
                     for n, f in sorted(sent.items())]
            with self._translated(f"uploading {path}"):
                r = self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts})
        except IntegrityError:
            wait(sent.values())
            self._abort(key, path, upload_id)
            journal.end_upload(target)
            raise
        finally:
            for future in sent.values():
                if future.cancel():  # never started: its slot is still taken
                    self._slots.release()
            wait(sent.values())
        journal.end_upload(target)
        return str(r["ETag"]).strip('"')

    def _send_part(self, key: str, path: Path, upload_id: str, number: int, data: bytes,
                   checksum: str, journal: Journal, progress: Progress) -> str:
        """On a part thread, holding a slot that is released here."""
        try:
            with self._translated(f"uploading {path}"):
                r = self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, Body=data,
                    PartNumber=number, ChecksumSHA256=checksum)
            etag = str(r["ETag"]).strip('"')
            journal.part_stored(upload_id, number, checksum, etag)
        finally:
            self._slots.release()
        progress(len(data))
        return etag

    def _abort(self, key: str, path: Path, upload_id: str) -> None:
        # Best effort: the original error matters more; R2 drops stale uploads after 7 days.
        with suppress(RemoteUnavailable), self._translated(f"aborting {path}"):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def download(self, key: str, out: BinaryIO, progress: Progress = no_progress) -> str:
        """Stream an object into out; returns the SHA-256 of what was received."""
        digest = hashlib.sha256()
        with self._translated(f"downloading {key}"):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                progress(len(chunk))
        return digest.hexdigest()

    def download_ranges(self, key: str, size: int, sha256: str, target: Path, journal: Journal,
                        progress: Progress = no_progress) -> None:
        """Fill target with an object, one part-sized range per part thread; ranges already in
        a target left by an earlier attempt (per the journal) are not fetched again.

        The caller hashes the result: ranges land out of order."""
        if not target.exists():
            journal.end_download(target)
        done = journal.ranges_done(target, sha256, self.part_size)
        count = -(-size // self.part_size)
        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, size)
            futures = [self._parts.submit(self._get_range, key, fd, n, size, sha256, target,
                                          journal, progress)
                       for n in range(count) if n not in done]
            progress(sum(min(self.part_size, size - n * self.part_size) for n in done))
            try:
                for future in futures:
                    future.result()
            finally:
                for future in futures:
                    future.cancel()
                wait(futures)  # no range thread may write to a closed descriptor
        finally:
            os.close(fd)

    def _get_range(self, key: str, fd: int, number: int, size: int, sha256: str, target: Path,
                   journal: Journal, progress: Progress) -> None:
        start = number * self.part_size
        end = min(start + self.part_size, size) - 1
        with self._translated(f"downloading {key}"):
            body = self.client.get_object(Bucket=self.bucket, Key=key,
                                          Range=f"bytes={start}-{end}")["Body"]
            offset = start
            for chunk in body.iter_chunks(_CHUNK):
                os.pwrite(fd, chunk, offset)
                offset += len(chunk)
                progress(len(chunk))
        if offset != end + 1:
            raise RemoteUnavailable(f"downloading {key}: the range ended early at {offset}")
        journal.range_done(target, sha256, self.part_size, number)


class _Gone(Exception):
    """The upload named in the journal no longer exists (completed, aborted or expired)."""


def _done(value: str) -> Future[str]:
    future: Future[str] = Future()
    future.set_result(value)
    return future
