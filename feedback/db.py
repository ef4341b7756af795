"""Engines, sessions and schema migrations for the store (SQLite, PostgreSQL, MySQL/MariaDB).

SQLite (the default) runs in WAL mode, so readers never wait for the writer; write transactions
start with BEGIN IMMEDIATE (SQLAlchemy's documented pysqlite recipe), so concurrent writers queue
on the busy timeout instead of failing with "database is locked" when a read turns into a write.
Migrations are Alembic's (feedback/migrations), applied at start-up; a database whose schema is
newer than the code's migrations is refused with a clear error, never downgraded or ignored.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger("catdog.feedback")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30
MIGRATION_LOCK_ID = 7_164_263_533  # any constant: the PostgreSQL advisory lock of our migrations
MIGRATION_LOCK_NAME = "catdog_feedback_migrations"


class SchemaError(RuntimeError):
    """The database's schema is one this code cannot use."""


@dataclass(frozen=True)
class Database:
    engine: Engine
    read: sessionmaker[Session]  # plain transactions
    write: sessionmaker[Session]  # on SQLite, BEGIN IMMEDIATE

    def close(self) -> None:
        self.engine.dispose()


def open_database(url: str) -> Database:
    """An engine for `url` (SQLite files get their folder created) and its two session factories."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})
        _configure_sqlite(engine)
        writer = engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
    else:  # server databases: drop connections the server closed (MySQL's wait_timeout, failovers)
        engine = create_engine(parsed, pool_pre_ping=True, pool_recycle=1800)
        writer = engine
    return Database(engine, sessionmaker(engine, expire_on_commit=False), sessionmaker(writer, expire_on_commit=False))


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # pysqlite must not emit its own BEGIN
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL",
                       f"busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))


def alembic_config(connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(database: Database) -> str:
    """Bring the schema to the newest revision; returns it. Raises SchemaError for an unknown one.
    Replicas starting together take turns: the first migrates, the others find it done."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    with database.write.begin() as session, _migration_lock(session.connection()) as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
        unknown = current - {revision.revision for revision in script.walk_revisions()}
        if unknown:
            raise SchemaError(
                f"the database's schema revision {sorted(unknown)} is newer than this code knows "
                f"(newest here: {head}): run a newer version of the app, or point DATABASE_URL at "
                "another database"
            )
        if current != {head}:
            logger.info("migrating the database schema from %s to %s", sorted(current) or "nothing", head)
            command.upgrade(alembic_config(connection), "head")
    return head


@contextmanager
def _migration_lock(connection):
    """A server-wide lock around migrations (PostgreSQL advisory lock, MySQL named lock); SQLite's
    BEGIN IMMEDIATE already serialises them."""
    backend = connection.dialect.name
    if backend == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")  # released at commit
    elif backend in ("mysql", "mariadb"):
        if connection.exec_driver_sql(f"SELECT GET_LOCK('{MIGRATION_LOCK_NAME}', 300)").scalar() != 1:
            raise SchemaError("another process has held the migration lock for 5 minutes")
    try:
        yield connection
    finally:
        if backend in ("mysql", "mariadb"):  # a session lock: MySQL's DDL commits implicitly
            connection.exec_driver_sql(f"SELECT RELEASE_LOCK('{MIGRATION_LOCK_NAME}')")


def ping(database: Database) -> None:
    """Raise when the database cannot answer a query."""
    with database.read() as session:
        session.execute(text("SELECT 1"))
