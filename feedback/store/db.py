"""Engines, sessions and schema migrations for the store (SQLite, PostgreSQL, MySQL/MariaDB).

SQLite (the default) runs in WAL mode, so readers never wait for the writer; write transactions
start with BEGIN IMMEDIATE (SQLAlchemy's documented pysqlite recipe), so concurrent writers queue
on the busy timeout instead of failing with "database is locked" when a read turns into a write.
Within one process, SQLite writers also take a lock first: SQLite's busy handler waits in sleeps
of up to 100 ms, which at 16 concurrent writers cost more than the writes themselves.
Migrations are Alembic's (feedback/store/migrations), applied at start-up; a database whose schema is
newer than the code's migrations is refused with a clear error, never downgraded or ignored.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
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
    _write: sessionmaker[Session]  # on SQLite, BEGIN IMMEDIATE
    _write_lock: threading.Lock | None = field(default=None)  # SQLite: one writer at a time in this process

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A write transaction, committed on exit (rolled back on an exception)."""
        with self._write_lock or nullcontext(), self._write.begin() as session:
            yield session

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
        writer, lock = engine.execution_options(sqlite_begin="BEGIN IMMEDIATE"), threading.Lock()
    else:  # server databases: drop connections the server closed (MySQL's wait_timeout, failovers)
        # READ COMMITTED everywhere (PostgreSQL's default; InnoDB's is REPEATABLE READ, whose
        # snapshot hides a row another request committed a moment ago, e.g. the same photo)
        engine = create_engine(parsed, pool_pre_ping=True, pool_recycle=1800, isolation_level="READ COMMITTED")
        writer, lock = engine, None
    return Database(engine, sessionmaker(engine, expire_on_commit=False), sessionmaker(writer, expire_on_commit=False),
                    lock)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # pysqlite must not emit its own BEGIN
        cursor = dbapi_connection.cursor()
        for pragma in (f"busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}", "foreign_keys=ON", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        _set_wal(cursor)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))


def _set_wal(cursor) -> None:
    """Switch to WAL (it persists in the file). The switch ignores the busy timeout: when another
    process is switching a new database at the same moment it fails at once with "locked", so retry."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


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
    with _migration_lock(database.engine), database.writing() as session:
        connection = session.connection()
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


MIGRATION_LOCKS = {  # (take, release) on a connection of its own, held around the migration's transaction
    "postgresql": (f"SELECT pg_advisory_lock({MIGRATION_LOCK_ID})", f"SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"),
    "mysql": (f"SELECT GET_LOCK('{MIGRATION_LOCK_NAME}', 300)", f"SELECT RELEASE_LOCK('{MIGRATION_LOCK_NAME}')"),
}
MIGRATION_LOCKS["mariadb"] = MIGRATION_LOCKS["mysql"]


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """A server-wide lock around migrations (PostgreSQL advisory lock, MySQL named lock), taken
    before the migration's transaction begins: a transaction begun earlier would read a snapshot
    from before another replica's migration (InnoDB's repeatable read). SQLite's BEGIN IMMEDIATE
    serialises migrations by itself."""
    statements = MIGRATION_LOCKS.get(engine.dialect.name)
    if statements is None:
        yield
        return
    take, release = statements
    with engine.connect() as connection:
        acquired = connection.exec_driver_sql(take).scalar()
        connection.commit()
        if engine.dialect.name != "postgresql" and acquired != 1:
            raise SchemaError("another process has held the migration lock for 5 minutes")
        try:
            yield
        finally:
            connection.exec_driver_sql(release)
            connection.commit()


def ping(database: Database) -> None:
    """Raise when the database cannot answer a query."""
    with database.read() as session:
        session.execute(text("SELECT 1"))


def probe_write(database: Database) -> None:
    """Raise when the database cannot write: an UPDATE of Alembic's version row to itself, in a
    write transaction that is rolled back (a read-only server, file or transaction refuses the
    UPDATE; SQLite already refuses its BEGIN IMMEDIATE). Nothing changes, so probes can run any
    time, with other writers waiting at most for this one statement."""
    try:
        with database.writing() as session:
            session.execute(text("UPDATE alembic_version SET version_num = version_num"))
            raise _RollBack  # writing() rolls back on an exception
    except _RollBack:
        pass


class _RollBack(Exception):
    pass
