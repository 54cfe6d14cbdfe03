"""Who a cookie or token stands for is remembered between requests, and forgotten the moment
any process ends a login: the database's own triggers count such changes (migration 0004)."""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import event

from tests.hub.workspaces.conftest import login


def _epoch(harness) -> str:
    with sqlite3.connect(harness.ctx.settings.data_dir / "comfymulti.db") as db:
        return db.execute("SELECT value FROM hub_state WHERE key = 'auth_epoch'").fetchone()[0]


def test_polls_do_not_look_the_session_up_again(ws_hub) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    lookups = []

    def count(_conn, _cursor, statement: str, *_args) -> None:
        if "sessions.token_hash" in statement or "api_tokens.token_hash" in statement:
            lookups.append(statement)

    event.listen(harness.ctx.engine, "before_cursor_execute", count)
    try:
        token = harness.bearer("user003")
        for _ in range(20):
            assert client.get("/u/user002/api/jobs").status_code == 200
            assert client.get("/u/user003/api/jobs", headers=token).status_code == 200
    finally:
        event.remove(harness.ctx.engine, "before_cursor_execute", count)
    assert len(lookups) == 2  # one per credential, not one per request


def _raw(harness, sql: str, *args: object) -> None:
    """A change made behind the hub's back, as another process (the CLI, a script) would."""
    with sqlite3.connect(harness.ctx.settings.data_dir / "comfymulti.db") as db:
        db.execute(sql, args)


@pytest.mark.parametrize("sql", [
    "UPDATE users SET disabled = 1 WHERE name = ?",
    "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE name = ?)",
])
def test_a_session_ended_by_another_process_is_refused_by_the_next_request(ws_hub,
                                                                          sql: str) -> None:
    harness, client = ws_hub
    login(client, harness, "user002")
    assert client.get("/u/user002/api/settings").status_code == 200
    _raw(harness, sql, "user002")
    assert client.get("/u/user002/api/settings").status_code == 401


def test_a_token_revoked_by_another_process_is_refused_by_the_next_request(ws_hub) -> None:
    harness, client = ws_hub
    token = harness.bearer("user002")
    assert client.get("/u/user002/api/settings", headers=token).status_code == 200
    _raw(harness, "UPDATE api_tokens SET revoked_at = ?", time.time())
    assert client.get("/u/user002/api/settings", headers=token).status_code == 401


def test_logins_and_new_tokens_do_not_make_the_hub_forget_everyone(ws_hub) -> None:
    harness, client = ws_hub
    before = _epoch(harness)
    login(client, harness, "user002")
    harness.token("user003")
    assert _epoch(harness) == before
    _raw(harness, "UPDATE users SET disabled = 1 WHERE name = ?", "user003")
    assert _epoch(harness) != before


def test_a_remembered_credential_is_checked_without_a_thread(ws_hub) -> None:
    """Polls with a remembered cookie or token never queue for a lookup thread."""
    harness, client = ws_hub
    login(client, harness, "user002")
    token = harness.bearer("user003")
    credentials = harness.ctx.credentials
    hops = []
    offload = credentials._offload

    async def counted(fn, *args):
        hops.append(fn)
        return await offload(fn, *args)

    credentials._offload = counted
    try:
        for _ in range(10):
            assert client.get("/u/user002/api/jobs").status_code == 200
            assert client.get("/u/user003/api/jobs", headers=token).status_code == 200
        assert len(hops) <= 2  # at most the first look-up of each credential
        hops.clear()
        _raw(harness, "UPDATE users SET disabled = 1 WHERE name = ?", "user003")
        assert client.get("/u/user003/api/jobs", headers=token).status_code == 401
        assert client.get("/u/user002/api/jobs").status_code == 200
        assert len(hops) == 2  # the epoch moved: both looked up again, in a thread
    finally:
        credentials._offload = offload


def test_the_epoch_read_on_the_loop_never_waits(tmp_path) -> None:
    """Whatever holds the file (here a rollback-journal database locked exclusively), the
    read on the loop answers None at once, and the caller asks in a thread instead."""
    from sqlalchemy import create_engine

    from comfymulti.hub.services.credentials import _EpochReader

    path = tmp_path / "hub.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE hub_state (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO hub_state VALUES ('auth_epoch', '7')")
    reader = _EpochReader(create_engine(f"sqlite:///{path}"))
    assert reader.read() == "7"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        assert reader.read() is None
        assert time.monotonic() - started < 0.05
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert reader.read() == "7"
    reader.close()
    assert _EpochReader(create_engine("sqlite://")).read() is None  # no file: always a thread


def test_session_use_is_written_for_all_sessions_at_once_not_by_the_requests(ws_hub) -> None:
    """Checking a cookie never writes (it waited for the write lock under load); the sessions
    used reach last_used_at together, in the hub's periodic write."""
    import asyncio

    harness, client = ws_hub
    login(client, harness, "user002")
    _raw(harness, "UPDATE sessions SET last_used_at = 0")
    harness.ctx.credentials._known.clear()  # the next request looks the cookie up again
    writes = []

    def count(_conn, _cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE")):
            writes.append(statement)

    event.listen(harness.ctx.engine, "before_cursor_execute", count)
    try:
        for _ in range(3):
            assert client.get("/u/user002/api/settings").status_code == 200
    finally:
        event.remove(harness.ctx.engine, "before_cursor_execute", count)
    assert writes == []
    before = time.time()
    asyncio.run(harness.ctx.session_activity.write(harness.ctx.tx))
    with sqlite3.connect(harness.ctx.settings.data_dir / "comfymulti.db") as db:
        (used,) = db.execute("SELECT last_used_at FROM sessions").fetchone()
    assert used >= before
