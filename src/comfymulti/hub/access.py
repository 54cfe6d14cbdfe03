"""Who is asking, and what they may see. Every route declares one of these dependencies;
owner scoping of jobs lives here, not in handlers. Another user's job is a 404, like a
missing one.
"""

from __future__ import annotations

import base64
import binascii
import time

import anyio
from fastapi import Depends, Request
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from comfymulti.db import transaction
from comfymulti.errors import Forbidden, NotFound, Unauthorized
from comfymulti.hub import workers
from comfymulti.hub.auth import USER_TOKEN_PREFIX, token_hash, verify_password
from comfymulti.hub.context import HubContext
from comfymulti.models import ApiToken, Job, User, Worker, WorkerToken
from comfymulti.protocol import WORKER_ID_HEADER
from comfymulti.queue.jobs import Role


def get_hub(request: Request) -> HubContext:
    return request.app.state.hub  # type: ignore[no-any-return]


def _active(user: User | None) -> User:
    if user is None or user.disabled:
        raise Unauthorized("unknown user, wrong credentials, or account disabled")
    return user


async def current_user(request: Request, hub: HubContext = Depends(get_hub)) -> User:
    """The user behind a Bearer API token or HTTP Basic credentials."""
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.startswith(USER_TOKEN_PREFIX):
        with transaction(hub.factory) as s:
            user = s.scalar(select(User).join(ApiToken).where(
                ApiToken.token_hash == token_hash(value), ApiToken.revoked_at.is_(None)))
        return _active(user)
    if scheme.lower() == "basic":
        try:
            name, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials") from None
        with transaction(hub.factory) as s:
            user = s.scalar(select(User).where(User.name == name))
        if user is None or not await anyio.to_thread.run_sync(
            verify_password, user.password_hash, password
        ):
            raise Unauthorized("unknown user, wrong credentials, or account disabled")
        return _active(user)
    raise Unauthorized("log in, or send a Bearer API token or Basic credentials")


def is_admin(user: User) -> bool:
    return user.role == Role.ADMIN


async def require_admin(user: User = Depends(current_user)) -> User:
    if not is_admin(user):
        raise Forbidden("admins only")
    return user


def visible_jobs(user: User) -> Select[tuple[Job]]:
    """Jobs this user may see: their own; an admin sees all."""
    stmt = select(Job)
    return stmt if is_admin(user) else stmt.where(Job.user_id == user.id)


def owned_job(s: Session, user: User, job_id: str) -> Job:
    job = s.scalar(visible_jobs(user).where(Job.id == job_id))
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


async def worker_token(request: Request, hub: HubContext = Depends(get_hub)) -> WorkerToken:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise Unauthorized("worker routes need 'Authorization: Bearer <worker token>'")
    with transaction(hub.factory) as s:
        return workers.authenticate(s, value)


async def current_worker(
    request: Request,
    token: WorkerToken = Depends(worker_token),
    hub: HubContext = Depends(get_hub),
) -> Worker:
    worker_id = request.headers.get(WORKER_ID_HEADER, "")
    with transaction(hub.factory) as s:
        worker = workers.get_worker(s, token, worker_id)
        worker.last_seen = time.time()
    return worker


async def workspace_owner(user: str, me: User = Depends(current_user)) -> User:
    """For /u/{user}/… routes: the logged-in user, who must be the workspace's owner.
    Anyone else (admins included) gets 404, exactly as for a workspace that does not exist."""
    if me.name != user:
        raise NotFound("no such workspace")
    return me
