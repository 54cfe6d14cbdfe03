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
