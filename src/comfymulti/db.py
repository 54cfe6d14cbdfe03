"""Engine, sessions and schema migrations (Alembic, run programmatically)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util.exc import CommandError
from sqlalchemy import ColumnElement, Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from comfymulti.errors import ConfigError, Unavailable

_MIGRATIONS = Path(__file__).with_name("migrations")


# Connections kept for threads doing database work (the request pool and the hub's own).
POOL_SIZE = 50


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, foreign keys and a busy timeout on every connection."""
    if (path := database_file(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    # One connection per thread that does database work (the request pool and the hub's own
    # offload threads): a pool smaller than that opens and closes connections all day.
    engine = create_engine(url) if url == "sqlite://" else create_engine(
        url, pool_size=POOL_SIZE, max_overflow=POOL_SIZE, pool_timeout=30)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a power cut may lose the last commits, never corrupt the file.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # Each request thread has its own connection and page cache (2 MiB by default,
            # filled up to the database's size): with dozens of threads that was most of the
            # hub's memory. The OS file cache behind them is shared.
            cur.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
            cur.close()

        _one_writer(engine)
    return engine


# SQL that makes pysqlite open a write transaction (it runs reads before one in autocommit),
# and the statement write_transaction opens one with.
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN IMMEDIATE")


def _one_writer(engine: Engine) -> None:
    """Writers of this engine take turns on an in-process lock, from their first write until
    their commit or rollback is done. SQLite has one writer anyway; without this, the others
    poll the file lock with growing sleeps (the busy handler) and a waiting writer can lose
    every round, which under load made job completions and submits wait for seconds.
    Waiting longer than the busy timeout is the same 503 as a busy database."""
    lock = threading.Lock()
    holders: set[int] = set()  # the DB-API connections holding the lock (by id)

    @event.listens_for(engine, "before_cursor_execute")
    def _take(_conn, cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        key = id(cursor.connection)
        if key in holders or not statement.lstrip().upper().startswith(_WRITES):
            return
        if not lock.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
            raise Unavailable("the database is busy; try again in a few seconds",
                              retry_after=RETRY_AFTER_SECONDS)
        holders.add(key)

    def _give_back(dbapi_connection: Any) -> None:
        key = id(getattr(dbapi_connection, "dbapi_connection", dbapi_connection))
        if key in holders:
            holders.discard(key)
            lock.release()

    # Given back once the commit or rollback itself is done. (SQLAlchemy's commit and
    # rollback events come before it: the next writer then found the file still locked.)
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        finally:
            _give_back(dbapi_connection)

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            rollback(dbapi_connection)
        finally:
            _give_back(dbapi_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]
    # A connection going back to the pool unfinished is rolled back by the pool itself.
    event.listen(engine.pool, "checkin", lambda dbapi, _record: _give_back(dbapi))


def database_file(url: str) -> Path | None:
    """The file of an SQLite URL (None for a server database or an in-memory one)."""
    prefix = "sqlite:///"
    return Path(url.removeprefix(prefix)) if url.startswith(prefix) and url != prefix else None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


# Page cache per SQLite connection, KiB.
PAGE_CACHE_KIB = 512
# How long a request waits for another writer before it is answered 503 (try again).
BUSY_TIMEOUT_MS = 5000
RETRY_AFTER_SECONDS = 5


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One short unit of work: commit on success, roll back on any error. A database held by
    another writer past the busy timeout becomes Unavailable (503 with Retry-After)."""
    with _busy_is_unavailable(), factory() as session, session.begin():
        yield session


@contextmanager
def write_transaction(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """A connection in a transaction that holds the write lock from its start, so savepoints
    nest inside it. (pysqlite opens a transaction only before a write: a first SAVEPOINT
    would open one itself, and its RELEASE would commit it.) Commit on success."""
    engine = factory.kw["bind"]
    with _busy_is_unavailable(), engine.connect() as conn, conn.begin():
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


@contextmanager
def _busy_is_unavailable() -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        if _busy(exc):
            raise Unavailable("the database is busy; try again in a few seconds",
                              retry_after=RETRY_AFTER_SECONDS) from None
        raise


def read_value(engine: Engine, sql: str) -> Any:
    """The first column of the first row of a read-only statement, on a pooled DB-API
    connection without SQLAlchemy's per-statement machinery: for checks made on every
    request, where that machinery would cost more than the query."""
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        cursor.execute(sql)
        row = cursor.fetchone()
        cursor.close()
    except engine.dialect.loaded_dbapi.OperationalError as exc:
        if _busy(exc):
            raise Unavailable("the database is busy; try again in a few seconds",
                              retry_after=RETRY_AFTER_SECONDS) from None
        raise
    finally:
        conn.close()
    return None if row is None else row[0]


def insert_new(s: Session, model: type[Any], **values: Any) -> None:
    """INSERT a row unless one with the same key exists already (no error either way)."""
    s.execute(_insert_ignoring(s, model).values(**values))


def insert_new_rows(s: Session, table: Table, rows: list[dict[str, Any]],
                    returning: ColumnElement[Any]) -> set[Any]:
    """INSERT those of `rows` whose unique key is not taken yet, in one statement; returns
    `returning` of the rows it inserted (a SELECT first for what exists is one more
    statement, and the hottest writes wait for the GIL at each)."""
    return set(s.scalars(_insert_ignoring(s, table).returning(returning), rows))


def _insert_ignoring(s: Session, target: Any) -> Any:
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        return sqlite_insert(target).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql_insert(target).on_conflict_do_nothing()
    raise ConfigError(f"database {dialect!r} is not supported; use SQLite or PostgreSQL")


def _busy(exc: Exception) -> bool:
    """SQLite's "database is locked/busy", raised by SQLAlchemy or by the DB-API itself."""
    text = str(getattr(exc, "orig", exc)).lower()
    return "locked" in text or "busy" in text


def _alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    script = ScriptDirectory.from_config(_alembic_config(create_engine("sqlite://")))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`, keeping all data. A newer database than the code refuses.

    Before changing an existing SQLite file, a copy is kept beside it (comfymulti.db.bak-REV).
    """
    current = current_revision(engine)
    script = ScriptDirectory.from_config(_alembic_config(engine))
    try:
        known = current is None or script.get_revision(current) is not None
    except (ResolutionError, CommandError):
        known = False
    if not known:
        raise ConfigError(
            f"database schema {current} is newer than this ComfyMulti; upgrade the software"
        )
    target = script.get_current_head() if revision == "head" else revision
    if current == target:
        return
    db_file = engine.url.database
    if current is not None and engine.dialect.name == "sqlite" and db_file:
        engine.dispose()
        shutil.copy2(db_file, f"{db_file}.bak-{current}-{int(time.time())}")
    command.upgrade(_alembic_config(engine), target)
