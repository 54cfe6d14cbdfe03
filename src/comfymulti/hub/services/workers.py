"""GPU workers: their tokens, registration and catalogs."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from comfymulti.catalog.codec import catalog_hash, pack
from comfymulti.db import insert_new
from comfymulti.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from comfymulti.hub.services.auth import WORKER_TOKEN_PREFIX, new_token, token_hash
from comfymulti.models import Catalog, Worker, WorkerToken
from comfymulti.protocol import RegisterRequest
from comfymulti.queue import fleet

# A worker's registration is checked, and its last_seen written, at most this often: it
# feeds "online" (a window of a minute or more), not correctness.
SEEN_EVERY = 5.0


def create_token(s: Session, name: str) -> str:
    token, digest = new_token(WORKER_TOKEN_PREFIX)
    s.add(WorkerToken(name=name, token_hash=digest, created_at=time.time()))
    return token


def list_tokens(s: Session) -> list[WorkerToken]:
    return list(s.scalars(select(WorkerToken).order_by(WorkerToken.id)))


def revoke_token(s: Session, token_id_or_name: str) -> int:
    tokens = s.scalars(select(WorkerToken).where(
        (WorkerToken.name == token_id_or_name)
        | (WorkerToken.id == (int(token_id_or_name) if token_id_or_name.isdigit() else -1)),
        WorkerToken.revoked_at.is_(None))).all()
    if not tokens:
        raise NotFound(f"no active worker token {token_id_or_name!r}")
    for token in tokens:
        token.revoked_at = time.time()
    return len(tokens)


def authenticate(s: Session, token: str) -> WorkerToken | None:
    """The live worker token with this value, or None."""
    row = s.scalar(select(WorkerToken).where(WorkerToken.token_hash == token_hash(token)))
    return None if row is None or row.revoked_at is not None else row


def register(s: Session, token: WorkerToken, req: RegisterRequest, *, cap: int = 0,
             window: float = 0.0) -> tuple[Worker, bool]:
    """Create or refresh the worker (token, name); True if the hub needs its catalog.
    With `cap`, a token serves at most that many online workers (a leaked token cannot
    flood the worker list); a worker re-registering under its own name always may."""
    now = time.time()
    worker = s.scalar(select(Worker).where(Worker.token_id == token.id, Worker.name == req.name))
    if cap and (worker is None or not fleet.is_online(worker, window, now)):
        online = s.scalar(select(func.count()).select_from(Worker).where(
            Worker.token_id == token.id, fleet.online(window, now))) or 0
        if online >= cap:
            raise QuotaExceeded(
                f"worker token {token.name!r} already serves {online} online workers; "
                "create another with 'comfymulti workers token --name NAME'")
    if worker is None:
        worker = Worker(id=str(uuid.uuid4()), token_id=token.id, name=req.name,
                        registered_at=now, draining=False)
        s.add(worker)
    worker.comfyui_version = req.comfyui_version
    worker.gpu = req.gpu
    worker.vram_total = req.vram_total
    worker.last_seen = now
    worker.draining = False
    known = bool(req.catalog_hash) and s.get(Catalog, req.catalog_hash) is not None
    worker.catalog_hash = req.catalog_hash if known else ""
    return worker, bool(req.catalog_hash) and not known


def store_catalog(s: Session, worker: Worker, expected_hash: str, catalog: dict[str, Any]
                  ) -> None:
    """Keep the catalog a worker sent if its content hashes to what the worker announced."""
    actual = catalog_hash(catalog)
    if actual != expected_hash:
        raise InvalidInput(f"catalog hash mismatch: body hashes to {actual}")
    if s.get(Catalog, actual) is None:  # two workers with one catalog may race here: fine
        insert_new(s, Catalog, hash=actual, data=pack(catalog), created_at=time.time())
    worker.catalog_hash = actual


def get_worker(s: Session, token: WorkerToken, worker_id: str) -> Worker:
    worker = s.get(Worker, worker_id)
    if worker is None or worker.token_id != token.id:
        raise NotFound("unknown worker; register first")
    return worker


def touch(s: Session, worker_ids: set[str], now: float) -> None:
    """Note that these workers were seen (see `activity.Activity`)."""
    s.execute(update(Worker).where(Worker.id.in_(worker_ids)).values(last_seen=now))


def list_workers(s: Session) -> list[Worker]:
    return list(s.scalars(select(Worker).order_by(Worker.name)))


def forget(s: Session, window: float, id_or_name: str | None = None) -> list[str]:
    """Remove offline workers from the list (one by id or name, or all offline ones); an
    online one is refused, since it would register again at once. Returns the names."""
    rows = list_workers(s)
    if id_or_name is not None:
        rows = [w for w in rows if id_or_name in (w.id, w.name)]
        if not rows:
            raise NotFound(f"no worker {id_or_name!r}; see 'comfymulti workers list'")
        if any(fleet.is_online(w, window) for w in rows):
            raise Conflict(f"worker {id_or_name!r} is online; drain it and wait until it "
                           "shows offline, then forget it")
    gone = [w for w in rows if not fleet.is_online(w, window)]
    s.execute(delete(Worker).where(Worker.id.in_([w.id for w in gone])))
    return [w.name for w in gone]
