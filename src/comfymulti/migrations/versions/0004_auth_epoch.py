"""hub_state.auth_epoch: a counter the database bumps on every change that can end a login.

The hub keeps who a cookie or token stands for in memory and asks only this counter per
request; triggers (not application code) bump it, so a change made by any process — the
hub, the CLI, a script — is seen by the next request, in the same transaction as the change.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"

# (trigger name suffix, event): disable, password reset, rename/role change, removal, logout
# and token revocation. New sessions and tokens do not bump it: nothing cached is affected.
_EVENTS = [
    ("users_update", "UPDATE OF disabled, password_hash, role, name ON users"),
    ("users_delete", "DELETE ON users"),
    ("sessions_delete", "DELETE ON sessions"),
    ("api_tokens_update", "UPDATE OF revoked_at, user_id ON api_tokens"),
    ("api_tokens_delete", "DELETE ON api_tokens"),
    ("worker_tokens_update", "UPDATE OF revoked_at ON worker_tokens"),
    ("worker_tokens_delete", "DELETE ON worker_tokens"),
]


def upgrade() -> None:
    op.execute("INSERT INTO hub_state (key, value) VALUES ('auth_epoch', '0')")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("""CREATE FUNCTION bump_auth_epoch() RETURNS trigger AS $$
            BEGIN
                UPDATE hub_state SET value = (value::bigint + 1)::text WHERE key = 'auth_epoch';
                RETURN NULL;
            END $$ LANGUAGE plpgsql""")
        for name, event in _EVENTS:
            op.execute(f"CREATE TRIGGER auth_epoch_{name} AFTER {event} "
                       "FOR EACH ROW EXECUTE FUNCTION bump_auth_epoch()")
        return
    for name, event in _EVENTS:
        op.execute(f"CREATE TRIGGER auth_epoch_{name} AFTER {event} FOR EACH ROW BEGIN "
                   "UPDATE hub_state SET value = CAST(value AS INTEGER) + 1 "
                   "WHERE key = 'auth_epoch'; END")

