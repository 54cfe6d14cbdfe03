"""Who is asking, and what they may see. Every route declares one of these dependencies;
owner scoping of jobs lives here, not in handlers. Another user's job is a 404, like a
missing one.
"""

from __future__ import annotations

import base64
import binascii
import time
from urllib.parse import urlsplit

import anyio
from fastapi import Depends, Request
from sqlalchemy import Select, select
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from comfymulti.db import transaction
from comfymulti.errors import Forbidden, NotFound, Unauthorized
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import workers
from comfymulti.hub.services.auth import USER_TOKEN_PREFIX, token_hash, verify_password
from comfymulti.hub.web import sessions
from comfymulti.models import ApiToken, Job, User, Worker, WorkerToken
from comfymulti.protocol import WORKER_ID_HEADER
from comfymulti.queue.jobs import Role


def get_hub(request: Request) -> HubContext:
    return request.app.state.hub  # type: ignore[no-any-return]


def _active(user: User | None) -> User:
    if user is None or user.disabled:
        raise Unauthorized("unknown user, wrong credentials, or account disabled")
    return user


async def authenticate(hub: HubContext, headers: Headers, cookies: dict[str, str],
                       address: str) -> User:
    """The user behind a Bearer API token, HTTP Basic credentials or a session cookie.
    Shared by HTTP routes and WebSockets so both follow one rule."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
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
        return await check_password(hub, name, password, address)
    if cookie := cookies.get(sessions.COOKIE):
        found = sessions.read(hub.secret, cookie)
        if found is not None:
            with transaction(hub.factory) as s:
                user = s.scalar(select(User).where(User.name == found[0]))
            if user is not None and sessions.valid_for(user, found[1]):
                return _active(user)
        raise Unauthorized("your session has ended; log in again")
    raise Unauthorized("log in, or send a Bearer API token or Basic credentials")


async def check_password(hub: HubContext, name: str, password: str, address: str) -> User:
    """Verify a password (argon2, off the event loop), with failed-login limiting."""
    hub.login_limiter.check(address, name)
    with transaction(hub.factory) as s:
        user = s.scalar(select(User).where(User.name == name))
    ok = user is not None and await anyio.to_thread.run_sync(
        verify_password, user.password_hash, password)
    if not ok or user is None or user.disabled:
        hub.login_limiter.failed(address, name)
        raise Unauthorized("unknown user, wrong credentials, or account disabled")
    hub.login_limiter.succeeded(address, name)
    return user


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


async def user_of(conn: HTTPConnection, hub: HubContext) -> User:
    """Who is behind this request or socket upgrade, under the one CSRF rule: every
    state-changing request and every socket must come from our own pages when it comes from
    a browser, whatever credentials it carries (cookie, cached Basic, anything)."""
    if conn.scope["type"] == "websocket" or conn.scope.get("method") not in _SAFE_METHODS:
        check_same_origin(conn)
    return await authenticate(hub, conn.headers, conn.cookies, client_address(conn))


async def current_user(request: Request, hub: HubContext = Depends(get_hub)) -> User:
    return await user_of(request, hub)


def check_same_origin(conn: HTTPConnection) -> None:
    """Refuse what a browser marks as coming from another site. Scripts send neither header
    and pass; browsers always send Sec-Fetch-Site, and Origin on writes and sockets."""
    site = conn.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden("cross-site request refused")
    origin = conn.headers.get("origin")
    if origin is not None and (origin == "null"
                               or urlsplit(origin).netloc != conn.headers.get("host")):
        raise Forbidden("cross-origin request refused")


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


def workspace_jobs(user: User) -> Select[tuple[Job]]:
    """Jobs shown in a user's own workspace: only theirs, admins included."""
    return select(Job).where(Job.user_id == user.id)


def owned_job(s: Session, user: User, job_id: str) -> Job:
    job = s.scalar(visible_jobs(user).where(Job.id == job_id))
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def _bearer(request: Request) -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value:
        raise Unauthorized("worker routes need 'Authorization: Bearer <worker token>'")
    return value


async def worker_token(request: Request, hub: HubContext = Depends(get_hub)) -> WorkerToken:
    value = _bearer(request)
    return await hub.tx(lambda s: workers.authenticate(s, value))


# A worker's last_seen is written at most this often: it feeds "online", not correctness.
_SEEN_EVERY = 5.0


async def current_worker(request: Request, hub: HubContext = Depends(get_hub)) -> Worker:
    """The registered worker behind the token and X-Worker-Id, in one short transaction."""
    token_value = _bearer(request)
    worker_id = request.headers.get(WORKER_ID_HEADER, "")

    def seen(s: Session) -> Worker:
        worker = workers.get_worker(s, workers.authenticate(s, token_value), worker_id)
        now = time.time()
        if worker.last_seen < now - _SEEN_EVERY:
            worker.last_seen = now
        return worker

    return await hub.tx(seen)


def own_workspace(me: User, user: str) -> User:
    """The workspace /u/{user}/ is `me`'s own; anyone else (admins included) gets 404,
    exactly as for a workspace that does not exist."""
    if me.name != user:
        raise NotFound("no such workspace")
    return me


async def workspace_owner(user: str, me: User = Depends(current_user)) -> User:
    """For /u/{user}/… routes and the socket: the logged-in owner of the workspace."""
    return own_workspace(me, user)


async def require_instructor(user: User = Depends(current_user)) -> User:
    if user.role not in (Role.INSTRUCTOR, Role.ADMIN):
        raise Forbidden("instructors and admins only")
    return user
