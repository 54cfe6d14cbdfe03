"""Who is asking, and what they may see. Every route declares one of these dependencies;
owner scoping of jobs lives here, not in handlers. Another user's job is a 404, like a
missing one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from fastapi import Depends, Request
from sqlalchemy import ColumnElement, Select, literal, select, union_all, update
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from comfymulti.errors import Forbidden, NotFound, Unauthorized
from comfymulti.hub.context import HubContext
from comfymulti.hub.services import sessions, workers
from comfymulti.hub.services.auth import USER_TOKEN_PREFIX, needs_rehash, token_hash
from comfymulti.hub.web import sessions as web_sessions
from comfymulti.models import ApiToken, Job, LoginSession, User, WorkerToken
from comfymulti.protocol import WORKER_ID_HEADER
from comfymulti.queue.jobs import Role


async def get_hub(request: Request) -> HubContext:
    """Async on purpose: FastAPI runs a plain `def` dependency in a thread, one hop per
    request."""
    return request.app.state.hub  # type: ignore[no-any-return]


def _active(user: User | None) -> User:
    if user is None or user.disabled:
        raise Unauthorized("unknown user, wrong credentials, or account disabled")
    return user


@dataclass(frozen=True)
class Credential:
    """What a request or socket authenticated with, kept so an open socket can be re-checked:
    a session or API token (by its stored hash), or a password (by the user's hash then)."""

    kind: Literal["session", "token", "password"]
    key: str


def _live_token(hashes: Collection[str]) -> list[ColumnElement[bool]]:
    return [ApiToken.token_hash.in_(hashes), ApiToken.revoked_at.is_(None)]


async def identify(hub: HubContext, headers: Headers, cookies: dict[str, str],
                   address: str) -> tuple[User, Credential]:
    """The user behind a Bearer API token, HTTP Basic credentials or a session cookie, and
    the credential used. Shared by HTTP routes and WebSockets so both follow one rule."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.startswith(USER_TOKEN_PREFIX):
        digest = token_hash(value)
        user = await hub.credentials.find("token", digest, lambda s: _token_user(s, digest))
        return _active(user), Credential("token", digest)
    if scheme.lower() == "basic":
        try:
            name, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic credentials") from None
        user = await check_password(hub, name, password, address)
        return user, Credential("password", user.password_hash)
    if cookie := cookies.get(web_sessions.COOKIE):
        digest = token_hash(cookie)
        user = await hub.credentials.find("session", digest,
                                          lambda s: sessions.lookup(s, digest))
        if user is None:
            raise Unauthorized("your session has ended; log in again")
        hub.session_activity.note(digest)
        return user, Credential("session", digest)
    raise Unauthorized("log in, or send a Bearer API token or Basic credentials")


def _token_user(s: Session, digest: str) -> tuple[User, float] | None:
    user = s.scalar(select(User).join(ApiToken).where(*_live_token([digest])))
    return None if user is None or user.disabled else (user, math.inf)


async def authenticate(hub: HubContext, headers: Headers, cookies: dict[str, str],
                       address: str) -> User:
    return (await identify(hub, headers, cookies, address))[0]


def still_valid(s: Session, credentials: Collection[Credential]) -> set[Credential]:
    """Those of `credentials` that would still authenticate, in one query: the hub re-checks
    every open socket with it, so changes made by the CLI (another process) reach them."""
    keys = {kind: [c.key for c in credentials if c.kind == kind]
            for kind in ("session", "token", "password")}
    active = User.disabled.is_(False)
    query = union_all(
        select(literal("session"), LoginSession.token_hash).join(User)
        .where(*sessions.live(keys["session"]), active),
        select(literal("token"), ApiToken.token_hash).join(User)
        .where(*_live_token(keys["token"]), active),
        select(literal("password"), User.password_hash)
        .where(User.password_hash.in_(keys["password"]), active))
    valid = {(kind, key) for kind, key in s.execute(query)}
    return {c for c in credentials if (c.kind, c.key) in valid}


# A failed password check answers no sooner than this. Generated passwords' light hash checks
# in about 1 ms and a chosen one's in 20 ms; without a floor, the time of a failure would tell
# which names exist and how their passwords are hashed.
FAILED_LOGIN_SECONDS = 0.2


async def check_password(hub: HubContext, name: str, password: str, address: str) -> User:
    """Verify a password with failed-login limiting. An unknown name is checked against a
    dummy hash, and every failure waits out FAILED_LOGIN_SECONDS (without blocking the
    loop), so failures look alike; a hash made with older parameters is replaced by one
    with today's."""
    hub.login_limiter.check(address, name)
    started = time.monotonic()
    user = await hub.login_users(name)
    ok = await hub.password_checks.verify(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled:
        hub.login_limiter.failed(address, name)
        await asyncio.sleep(started + FAILED_LOGIN_SECONDS - time.monotonic())
        raise Unauthorized("unknown user, wrong credentials, or account disabled")
    hub.login_limiter.succeeded(address, name)
    if needs_rehash(user.password_hash):
        fresh = await hub.password_checks.rehash(password)
        old = user.password_hash
        await hub.tx(lambda s: s.execute(update(User).where(
            User.id == user.id, User.password_hash == old).values(password_hash=fresh)),
            hub.logins)
        user.password_hash = fresh
    return user


def client_address(conn: HTTPConnection) -> str:
    """The socket peer; behind a proxy listed in hub.trusted_proxies, the right-most address
    of X-Forwarded-For that is not such a proxy (anything left of it the client can forge)."""
    peer = conn.client.host if conn.client else "unknown"
    hub: HubContext = conn.app.state.hub
    trusted = set(hub.settings.hub.trusted_proxies)
    if peer not in trusted:
        return peer
    for hop in reversed(conn.headers.get("x-forwarded-for", "").split(",")):
        if (hop := hop.strip()) and hop not in trusted:
            return hop
    return peer


_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


async def identity_of(conn: HTTPConnection, hub: HubContext) -> tuple[User, Credential]:
    """Who is behind this request or socket upgrade, and with what, under the one CSRF rule:
    every state-changing request and every socket must come from our own pages when it comes
    from a browser, whatever credentials it carries (cookie, cached Basic, anything)."""
    if conn.scope["type"] == "websocket" or conn.scope.get("method") not in _SAFE_METHODS:
        check_same_origin(conn)
    return await identify(hub, conn.headers, conn.cookies, client_address(conn))


async def user_of(conn: HTTPConnection, hub: HubContext) -> User:
    return (await identity_of(conn, hub))[0]


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

    def load(s: Session) -> tuple[WorkerToken, float] | None:
        token = workers.authenticate(s, value)
        return None if token is None else (token, math.inf)

    token = await hub.credentials.find("worker", token_hash(value), load)
    if token is None:
        raise Unauthorized("unknown or revoked worker token")
    return token


async def current_worker(request: Request, token: WorkerToken = Depends(worker_token),
                         hub: HubContext = Depends(get_hub)) -> str:
    """The id of the registered worker behind the token and X-Worker-Id (the worker router's
    own dependency, solved once per request). Checked in the database at most once per
    SEEN_EVERY, by a read: a worker makes several requests per job, and one transaction each
    was a large share of the hub's work. Requests arriving while a check is under way wait
    for that one. That it was seen is noted in memory and written with the others'
    (`worker_activity`): written here, it waited for the write lock behind participants'
    submits, and so did the worker's request."""
    worker_id = request.headers.get(WORKER_ID_HEADER, "")
    key, now = (token.id, worker_id), time.monotonic()
    known = hub.workers_seen.get(key)
    if known is None or now - known[0] >= workers.SEEN_EVERY:

        def check(s: Session) -> None:
            workers.get_worker(s, token, worker_id)

        known = hub.workers_seen[key] = (now, asyncio.ensure_future(hub.tx(check, hub.work)))
    try:
        await asyncio.shield(known[1])
    except Exception:
        if hub.workers_seen.get(key) is known:  # not remembered: the next request asks again
            del hub.workers_seen[key]
        raise
    hub.worker_activity.note(worker_id)
    return worker_id


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
