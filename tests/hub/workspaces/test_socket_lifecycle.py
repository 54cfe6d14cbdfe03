"""A workspace socket lives as long as its login: logout, disable and token revoke close it;
caps bound how many a user and the hub hold; queue changes are counted once per user."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from comfymulti.db import transaction
from comfymulti.hub.services import users
from comfymulti.hub.web.sessions import COOKIE
from comfymulti.models import LoginSession
from comfymulti.queue import store
from tests.hub.workspaces.conftest import give_catalog, login
from tests.hub.workspaces.test_run_api import post_prompt


def _login(url: str, name: str, password: str) -> str:
    r = httpx.post(f"{url}/login", data={"username": name, "password": password})
    assert r.status_code == 303, r.text
    return r.cookies[COOKIE]


Opener = Callable[[str, str, dict[str, str]], ClientConnection]


def _url(url: str, user: str) -> str:
    return f"{url.replace('http', 'ws')}/u/{user}/ws"


@pytest.fixture
def open_socket() -> Iterator[Opener]:
    """Opens a workspace socket and reads its first `status`; all are closed at teardown."""
    with contextlib.ExitStack() as stack:
        def open_(url: str, user: str, headers: dict[str, str]) -> ClientConnection:
            ws = stack.enter_context(connect(_url(url, user), additional_headers=headers))
            assert '"status"' in str(ws.recv(timeout=5))
            return ws

        yield open_


def _closed_within(ws: ClientConnection, seconds: float) -> int:
    """The close code the hub sent within `seconds` (fails if the socket stays open)."""
    deadline = time.monotonic() + seconds
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    assert closed.value.rcvd is not None, "socket not closed by the hub in time"
    return closed.value.rcvd.code


def _still_open(ws: ClientConnection) -> bool:
    ws.ping().wait(2)
    return True


def test_logout_ends_the_session_on_the_server_and_closes_its_socket(live_hub, open_socket) -> None:
    harness, url = live_hub()
    harness.user("user002")
    cookie = _login(url, "user002", harness.passwords["user002"])
    with transaction(harness.ctx.factory) as s:  # only a hash of the id is stored
        assert s.scalars(select(LoginSession.token_hash)).all() == [
            hashlib.sha256(cookie.encode()).hexdigest()]
    other = _login(url, "user002", harness.passwords["user002"])  # a second browser
    jar = {"Cookie": f"{COOKIE}={cookie}"}
    ws, kept = open_socket(url, "user002", jar), open_socket(url, "user002", {
        "Cookie": f"{COOKIE}={other}"})
    httpx.get(f"{url}/logout", headers=jar)
    assert _closed_within(ws, 1.0) == 1008
    assert httpx.get(f"{url}/u/user002/api/settings", headers=jar).status_code == 401
    assert _still_open(kept)  # the other browser's session is untouched


def test_disable_from_another_process_closes_open_sockets_within_seconds(
        live_hub, open_socket) -> None:
    harness, url = live_hub()
    harness.user("user002")
    cookie = _login(url, "user002", harness.passwords["user002"])
    by_session = open_socket(url, "user002", {"Cookie": f"{COOKIE}={cookie}"})
    by_token = open_socket(url, "user002", harness.bearer("user002"))
    with transaction(harness.ctx.factory) as s:  # what the CLI does, in its own process
        users.set_disabled(s, "user002", True)
    assert _closed_within(by_session, 5.0) == 1008
    assert _closed_within(by_token, 1.0) == 1008
    with transaction(harness.ctx.factory) as s:
        assert s.scalar(select(LoginSession.id)) is None  # disabling ended the sessions


def test_token_revoke_closes_only_the_sockets_opened_with_tokens(live_hub, open_socket) -> None:
    harness, url = live_hub()
    harness.user("user002")
    cookie = _login(url, "user002", harness.passwords["user002"])
    by_token = open_socket(url, "user002", harness.bearer("user002"))
    by_session = open_socket(url, "user002", {"Cookie": f"{COOKIE}={cookie}"})
    with transaction(harness.ctx.factory) as s:
        users.revoke_api_tokens(s, "user002")
    assert _closed_within(by_token, 5.0) == 1008
    assert _still_open(by_session)


def test_password_reset_closes_sockets_opened_with_the_old_password(live_hub, open_socket) -> None:
    harness, url = live_hub()
    harness.user("user002")
    ws = open_socket(url, "user002", harness.basic("user002"))
    with transaction(harness.ctx.factory) as s:
        users.reset_password(s, "user002")
    assert _closed_within(ws, 5.0) == 1008


def test_socket_caps_refuse_the_surplus_and_log_once(live_hub, open_socket, caplog) -> None:
    harness, url = live_hub(hub={"max_sockets_per_user": 3, "max_sockets_total": 5})
    harness.user("user002")
    harness.user("user003")
    headers = harness.bearer("user002")
    opened, refused = [], 0
    with caplog.at_level(logging.WARNING, logger="comfymulti.hub"):
        for _ in range(3 + 5):
            try:
                opened.append(open_socket(url, "user002", headers))
            except InvalidStatus as exc:
                assert exc.response.status_code == 403
                refused += 1
        assert (len(opened), refused) == (3, 5)
        for _ in range(2):
            open_socket(url, "user003", harness.bearer("user003"))
        with pytest.raises(InvalidStatus):  # the hub-wide cap: 5 open
            open_socket(url, "user003", harness.bearer("user003"))
    assert len([r for r in caplog.records if "refusing new sockets" in r.getMessage()]) == 2
    opened.pop().close()  # a closed socket frees its place
    _wait_socket(open_socket, url, "user002", headers)


def _wait_socket(open_socket: Opener, url: str, user: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            open_socket(url, user, headers)
            return
        except InvalidStatus:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_health_stays_fast_while_one_user_hammers_the_socket(live_hub, open_socket) -> None:
    harness, url = live_hub(hub={"max_sockets_per_user": 1})
    harness.user("user002")
    headers = harness.bearer("user002")
    open_socket(url, "user002", headers)
    attempts = {"refused": 0}

    def hammer() -> None:
        for _ in range(300):
            with pytest.raises(InvalidStatus), connect(_url(url, "user002"),
                                                       additional_headers=headers):
                pass
            attempts["refused"] += 1

    thread = threading.Thread(target=hammer)
    thread.start()
    timings = []
    with httpx.Client(base_url=url) as client:
        while thread.is_alive() and len(timings) < 200:
            start = time.perf_counter()
            assert client.get("/health").status_code == 200
            timings.append(time.perf_counter() - start)
            time.sleep(0.01)
    thread.join(60)
    assert attempts["refused"] == 300 and len(timings) >= 10
    assert statistics.median(timings) < 0.05, statistics.median(timings)


def test_one_queue_change_is_counted_once_for_all_of_a_users_sockets(
        make_hub, monkeypatch) -> None:
    from starlette.testclient import TestClient

    harness = make_hub()
    harness.user("user002")
    give_catalog(harness)
    counted: list[int] = []
    real = store.count_unfinished

    def counting(s: Any, user_ids: list[int]) -> dict[int, int]:
        counted.extend(user_ids)
        return real(s, user_ids)

    with TestClient(harness.app, base_url="http://testserver") as client:
        login(client, harness, "user002")
        sockets = [client.websocket_connect("/u/user002/ws") for _ in range(12)]
        for ws in sockets:
            ws.__enter__().receive_json()
        monkeypatch.setattr(store, "count_unfinished", counting)
        assert post_prompt(client, "user002").status_code == 200
        for ws in sockets:
            msg = ws.receive_json()
            assert msg == {"type": "status", "data": {
                "status": {"exec_info": {"queue_remaining": 1}}}}, msg
        assert len(counted) == 1
        for ws in sockets:
            ws.__exit__(None, None, None)


def test_statuses_due_together_are_counted_in_one_query(make_hub, monkeypatch) -> None:
    """In a burst every submit and job change sends its owner a `status`, each counted in a
    thread of its own (they queued there with the participants' submits); the users whose
    statuses fall due while a count runs are counted together by the next one, and each
    still hears their own number."""
    from starlette.testclient import TestClient

    harness = make_hub()
    names = ["user002", "user003", "user004"]
    for name in names:
        harness.user(name)
    with transaction(harness.ctx.factory) as s:
        ids = [users.get_user(s, name).id for name in names]
    give_catalog(harness)
    queries: list[list[int]] = []
    go = threading.Event()
    real = store.count_unfinished

    def held(s: Any, user_ids: list[int]) -> dict[int, int]:
        queries.append(list(user_ids))
        assert go.wait(10)
        return real(s, user_ids)

    clients = [TestClient(harness.app, base_url="http://testserver") for _ in names]
    with contextlib.ExitStack() as stack:
        sockets = []
        for client, name in zip(clients, names, strict=True):
            stack.enter_context(client)
            login(client, harness, name)
            ws = stack.enter_context(client.websocket_connect(f"/u/{name}/ws"))
            ws.receive_json()
            sockets.append(ws)
        monkeypatch.setattr(store, "count_unfinished", held)
        for n, (client, name) in enumerate(zip(clients, names, strict=True)):
            for _ in range(n + 1):
                assert post_prompt(client, name).status_code == 200
        time.sleep(0.3)  # every status due; the first count still held
        go.set()
        for n, ws in enumerate(sockets):
            msg = ws.receive_json()
            assert msg["data"]["status"]["exec_info"]["queue_remaining"] == n + 1, msg
    assert queries == [ids[:1], ids[1:]]


async def _never_valid(_fn):  # stands in for hub.tx: the query finds no credential valid
    await asyncio.sleep(0.05)
    return set()


def test_a_socket_opened_while_the_recheck_runs_is_left_alone() -> None:
    """The re-check queries the database off the event loop; a socket admitted meanwhile was
    not part of that query and must not be closed for it."""
    from comfymulti.hub.web.access import Credential
    from comfymulti.hub.workspaces.sockets import Sockets

    class FakeSocket:
        closed = False

        async def close(self, code: int = 1000, reason: str = "") -> None:
            self.closed = True

    class FakeHub:
        tx = staticmethod(_never_valid)

    async def scenario() -> tuple[FakeSocket, FakeSocket]:
        sockets = Sockets(per_user=5, total=10)
        old, new = FakeSocket(), FakeSocket()
        sockets.admit(1, "a", old, Credential("session", "old"))  # type: ignore[arg-type]
        check = asyncio.create_task(sockets.recheck(FakeHub()))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        sockets.admit(1, "b", new, Credential("session", "new"))  # type: ignore[arg-type]
        await check
        return old, new

    old, new = asyncio.run(scenario())
    assert old.closed and not new.closed
