"""Logins under attack and under load: equal cost for unknown names, a limiter that neither
trusts forged headers nor lets one shared address lock others out, bounded argon2 work."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import select
from starlette.testclient import TestClient

from comfymulti.db import transaction
from comfymulti.hub.services import auth, users
from comfymulti.hub.web import access
from comfymulti.hub.web.ratelimit import RateLimiter, TooManyAttempts
from comfymulti.models import User


def _login(client: TestClient, name: str, password: str, **headers: str) -> int:
    return client.post("/login", data={"username": name, "password": password},
                       headers=headers, follow_redirects=False).status_code


class _SpyHasher:
    def __init__(self, real: PasswordHasher) -> None:
        self.real = real
        self.verified: list[str] = []

    def verify(self, password_hash: str, password: str) -> bool:
        self.verified.append(password_hash)
        return self.real.verify(password_hash, password)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_unknown_user_costs_an_argon2_check_like_a_wrong_password(hub, monkeypatch) -> None:
    harness, client = hub
    harness.user("user002")
    spy = _SpyHasher(auth._CHOSEN)
    monkeypatch.setattr(auth, "_CHOSEN", spy)
    assert _login(client, "nobody", "guess") == 401
    assert _login(client, "user002", "guess") == 401
    assert len(spy.verified) == 2 and spy.verified[0] != spy.verified[1]


def _stored_hash(harness: Any, name: str) -> str:
    with transaction(harness.ctx.factory) as s:
        return s.scalar(select(User.password_hash).where(User.name == name))


LIGHT = "$argon2id$v=19$m=1024,t=1,p=1$"
OWASP = "$argon2id$v=19$m=19456,t=2,p=1$"


def test_generated_passwords_get_light_argon2_and_chosen_ones_owasp_strength(tmp_path) -> None:
    generated, = users.prepare_accounts(["user002"])
    chosen, = users.prepare_accounts(["user003"], password="my own words")
    assert generated.password_hash.startswith(LIGHT)
    assert chosen.password_hash.startswith(OWASP)
    for account in (generated, chosen):
        assert auth.verify_password(account.password_hash, account.password)
        assert not auth.verify_password(account.password_hash, account.password + "x")
        assert not auth.needs_rehash(account.password_hash)
    # Light stretching is only sound for passwords this hard to guess.
    bits = len(generated.password.replace("-", "")) * math.log2(len(set(auth._ALPHABET)))
    assert bits >= 70


def test_generated_passwords_stay_light_through_logins(hub) -> None:
    harness, client = hub
    harness.user("user002")
    before = _stored_hash(harness, "user002")
    assert before.startswith(LIGHT)
    assert _login(client, "user002", harness.passwords["user002"]) == 303
    assert _stored_hash(harness, "user002") == before  # not rehashed to OWASP strength


def test_failed_logins_take_the_floor_and_good_ones_do_not(hub, monkeypatch) -> None:
    harness, client = hub
    harness.user("user002")
    assert access.FAILED_LOGIN_SECONDS == 0.2
    floor = 0.6  # wider than the default, so that a slow machine cannot blur the good login
    monkeypatch.setattr(access, "FAILED_LOGIN_SECONDS", floor)

    def timed(name: str, password: str, expected: int) -> float:
        started = time.monotonic()
        assert _login(client, name, password) == expected
        return time.monotonic() - started

    assert timed("nobody", "guess", 401) >= floor
    assert timed("user002", "guess", 401) >= floor
    assert timed("user002", harness.passwords["user002"], 303) < floor


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(make_hub, tmp_path) -> None:
    harness = make_hub()
    harness.user("user002")
    with TestClient(harness.app) as client:
        for i in range(10):
            assert _login(client, "user002", "x", **{"X-Forwarded-For": f"10.0.0.{i}"}) == 401
        assert _login(client, "user002", harness.passwords["user002"],
                      **{"X-Forwarded-For": "10.9.9.9"}) == 429
    trusting = make_hub(data_dir=str(tmp_path / "trusting"),
                        hub={"trusted_proxies": ["testclient"]})
    trusting.user("user002")
    with TestClient(trusting.app) as client:
        for _ in range(10):
            assert _login(client, "user002", "x", **{"X-Forwarded-For": "10.0.0.1"}) == 401
        assert _login(client, "user002", harness.passwords["user002"],
                      **{"X-Forwarded-For": "10.0.0.1"}) == 429
        # A forged entry in front does not help: the proxy's own (right-most) one counts.
        assert _login(client, "user002", trusting.passwords["user002"],
                      **{"X-Forwarded-For": "10.0.0.7, 10.0.0.1"}) == 429
        assert _login(client, "user002", trusting.passwords["user002"],
                      **{"X-Forwarded-For": "10.0.0.2"}) == 303


def test_failures_from_one_address_never_block_a_right_password_from_another() -> None:
    limiter = RateLimiter(max_failures=10, max_account_failures=30)
    for _ in range(10):
        limiter.failed("room-nat", "user002")
    for i in range(30):  # and the account is under attack from many addresses
        limiter.failed(f"10.0.0.{i}", "user002")
    for blocked in ("room-nat", "10.0.0.1"):
        try:
            limiter.check(blocked, "user002")
        except TooManyAttempts:
            continue
        raise AssertionError(f"{blocked} was not blocked")
    limiter.check("home", "user002")  # a fresh address is heard
    limiter.check("room-nat", "user003")  # other accounts are not affected


def test_a_full_limiter_forgets_the_oldest_entries_not_all() -> None:
    limiter = RateLimiter(max_failures=2, max_entries=3)
    for name in ("a", "b", "c", "d"):
        limiter.failed("x", name)
        limiter.failed("x", name)
    for name in ("b", "c", "d"):
        try:
            limiter.check("x", name)
        except TooManyAttempts:
            continue
        raise AssertionError(f"{name} was forgotten")
    limiter.check("x", "a")  # the oldest went


def test_old_parameter_hashes_are_replaced_at_the_next_login(hub) -> None:
    harness, client = hub
    harness.user("user002")
    old = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4)
    with transaction(harness.ctx.factory) as s:
        s.scalar(select(User).where(User.name == "user002")).password_hash = old.hash("pw-1")
    assert _login(client, "user002", "pw-1") == 303
    with transaction(harness.ctx.factory) as s:
        stored = s.scalar(select(User.password_hash).where(User.name == "user002"))
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$") and not auth.needs_rehash(stored)
    assert _login(client, "user002", "pw-1") == 303


def _most_at_once(monkeypatch, stored: str, checks: int) -> int:
    running, most = 0, 0
    lock = threading.Lock()

    def slow_verify(password_hash: str | None, password: str) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return True

    monkeypatch.setattr(auth, "verify_password", slow_verify)

    async def rush() -> list[bool]:
        limited = auth.PasswordChecks(2)
        return await asyncio.gather(*(limited.verify(stored, "pw") for _ in range(checks)))

    assert asyncio.run(rush()) == [True] * checks
    return most


def test_strong_password_checks_run_at_most_limit_at_once(monkeypatch) -> None:
    """Each holds 19 MiB while it runs."""
    assert _most_at_once(monkeypatch, auth.hash_password("pw", generated=False), 8) == 2


def test_light_password_checks_run_more_at_once(monkeypatch) -> None:
    """1 MiB each: 300 logins at once no longer queue for seconds, two by two."""
    light = auth.hash_password("pw", generated=True)
    assert _most_at_once(monkeypatch, light, 40) == auth.LIGHT_AT_ONCE
    assert _most_at_once(monkeypatch, "not a hash", 40) == auth.LIGHT_AT_ONCE


def test_password_checks_do_not_wait_behind_the_shared_thread_pool() -> None:
    """Synchronous routes run in anyio's shared pool; while every one of its threads is taken
    (a rush of workspaces opening), a login's password check is still answered."""
    import anyio.to_thread

    stored = auth.hash_password("pw", generated=True)

    async def rush() -> tuple[bool, float]:
        shared = anyio.to_thread.current_default_thread_limiter()
        release = threading.Event()
        busy = [asyncio.ensure_future(anyio.to_thread.run_sync(release.wait))
                for _ in range(int(shared.total_tokens))]
        await asyncio.sleep(0.2)
        assert shared.available_tokens == 0
        started = time.monotonic()
        try:
            ok = await asyncio.wait_for(auth.PasswordChecks(2).verify(stored, "pw"), 5)
        finally:
            waited = time.monotonic() - started
            release.set()
            await asyncio.gather(*busy)
        return ok, waited

    ok, waited = asyncio.run(rush())
    assert ok and waited < 2


def test_a_login_needs_no_thread_of_the_shared_database_pool(hub, monkeypatch) -> None:
    """In a rush, the workspaces that logins open fill `hub.run`; the logins still waiting
    must not queue behind them (lookups waited up to 3.4 s there, 300 logins at once)."""
    harness, client = hub
    harness.user("user002")

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a login used the shared database pool")

    monkeypatch.setattr(harness.ctx, "run", refuse)
    assert _login(client, "user002", harness.passwords["user002"]) == 303
    monkeypatch.undo()
    assert client.get("/u/user002/api/jobs").status_code == 200  # the session works


def test_logins_at_once_share_a_read_and_a_transaction_and_each_gets_its_own_session(
        live_hub, monkeypatch) -> None:
    """300 people logging in at once queued for threads to read their accounts (~1.3 s) and
    for the write lock one session at a time (~2.4 s) (load bench): accounts asked for
    together are read in one query and sessions started together written in one
    transaction, yet every login still gets a cookie of its own that opens its own workspace
    only, and a wrong password in the same rush is still refused."""
    import httpx
    from sqlalchemy import event

    from comfymulti.hub.services import users
    from tests.conftest import slow_groups

    harness, url = live_hub()
    names = [harness.user(f"u{n:02d}") for n in range(12)]
    slow_groups(harness, monkeypatch, 0.1)
    reads: list[list[str]] = []
    real_read = users.users_named

    def slow_read(s, asked: list[str]):  # type: ignore[no-untyped-def]
        reads.append(list(asked))
        time.sleep(0.1)
        return real_read(s, asked)

    monkeypatch.setattr(users, "users_named", slow_read)
    commits: dict[int, int] = {}  # per database connection
    inserts: list[tuple[int, int]] = []  # (connection, its commits before): one transaction

    def note(conn, _cursor, sql: str, *_args) -> None:
        if sql.startswith("INSERT INTO sessions "):
            key = id(conn.connection.dbapi_connection)
            inserts.append((key, commits.get(key, 0)))

    def committed(conn) -> None:
        key = id(conn.connection.dbapi_connection)
        commits[key] = commits.get(key, 0) + 1

    event.listen(harness.ctx.engine, "before_cursor_execute", note)
    event.listen(harness.ctx.engine, "commit", committed)

    async def log_in(name: str) -> httpx.Cookies:
        async with httpx.AsyncClient(base_url=url) as web:
            r = await web.post("/login", data={"username": name,
                                               "password": harness.passwords[name]})
            assert r.status_code == 303, r.text
            return web.cookies

    async def wrong_password() -> int:
        async with httpx.AsyncClient(base_url=url) as web:
            r = await web.post("/login", data={"username": names[0], "password": "nope"})
            return r.status_code

    async def main() -> tuple[list[httpx.Cookies], int]:
        *jars, refused = await asyncio.gather(*(log_in(name) for name in names),
                                              wrong_password())
        return jars, refused

    jars, refused = asyncio.run(main())
    assert refused == 401
    assert {n for group in reads for n in group} == set(names)
    assert len(reads) < len(names) / 2
    assert len(inserts) == len(names) and len(set(inserts)) < len(names) / 2
    assert len({jar.get("comfymulti_session") for jar in jars}) == len(names)
    with httpx.Client(base_url=url) as web:
        for name, jar in zip(names, jars, strict=True):
            web.cookies = jar
            assert web.get(f"/u/{name}/api/settings").status_code == 200
            other = names[(names.index(name) + 1) % len(names)]
            assert web.get(f"/u/{other}/api/settings").status_code in (403, 404)
