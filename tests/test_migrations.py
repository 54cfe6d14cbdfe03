"""An upgrade between workshop days keeps all data."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from comfymulti.db import current_revision, head_revision, make_engine, migrate
from comfymulti.models import Base


def test_models_and_migrations_agree(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_upgrade_from_first_schema_keeps_data_and_backs_up(tmp_path: Path) -> None:
    db = tmp_path / "comfymulti.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users VALUES (1, 'user001', 'participant', 'h', 0, 1.0, 0)"))
        conn.execute(text(
            "INSERT INTO jobs (id, user_id, state, prompt, extra_data, client_id, priority,"
            " instructor, requirements, created_at, attempts, cancel_requested, outputs)"
            " VALUES ('j1', 1, 'queued', '{}', '{}', '', 0, 0, '{}', 1.0, 0, 0, '{}')"))
    migrate(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM users")).scalar() == "user001"
        assert conn.execute(text("SELECT state FROM jobs WHERE id='j1'")).scalar() == "queued"
        assert conn.execute(text("SELECT count(*) FROM api_tokens")).scalar() == 0
    assert list(tmp_path.glob("comfymulti.db.bak-0001-*")), "no backup before migrating"
    engine.dispose()


def test_newer_database_than_code_is_refused(tmp_path: Path) -> None:
    import pytest

    from comfymulti.errors import ConfigError

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num='9999'"))
    with pytest.raises(ConfigError, match="newer"):
        migrate(engine)
    engine.dispose()
