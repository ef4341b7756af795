"""Throwaway PostgreSQL and MariaDB servers for tests: one per session, a fresh database per test.

Each server runs on 127.0.0.1 on a free port, in its own temp dir (removed at the end), with a
password user; nothing touches a system cluster. tests/conftest.py imports the fixtures:

- ``postgres_server`` (session): a ``PostgresServer`` (newest ``/usr/lib/postgresql/*/bin``, else
  ``initdb`` on PATH). ``postgres_url`` (session): its URL,
  ``postgresql+psycopg://USER:PASS@127.0.0.1:PORT/DB``. ``postgres_db_url`` (function): the URL of a
  fresh, empty database, dropped after the test (best effort).
- ``mariadb_server`` / ``mariadb_url`` / ``mariadb_db_url``: the same for MariaDB, URLs
  ``mysql+pymysql://USER:PASS@127.0.0.1:PORT/DB?charset=utf8mb4``.

A server object has ``.url``, ``.port``, ``.user``, ``.password``, ``.database``,
``.url_for(name)``, ``.new_database(name=None) -> url`` (empty, owned by ``.user``),
``.drop_database(name)``, ``.restart()`` (stop, then start the same data dir on the same port: data
survives, open connections do not; dispose engines first), ``.stop()``, ``.start()`` and
``.log_tail()``. A test that stops its session server should start it again (the per-test
fixtures do so at teardown).

Startup waits up to ``START_TIMEOUT`` (60 s) for a real connection; a failure raises
``ServerStartError`` with the tail of the server's log. As root, PostgreSQL runs as the
``postgres`` user (runuser) and MariaDB with ``--user=root``. Missing binaries skip the test
(``POSTGRES_MISSING``, ``MARIADB_MISSING``); a test using these fixtures gets the marker in
``FIXTURE_MARKERS`` automatically, and with CI=true such a skip fails (tests/conftest.py).
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import LOOPBACK, free_port

START_TIMEOUT = 60.0
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
POSTGRES_MISSING = f"PostgreSQL server binaries not found in {POSTGRES_BIN_GLOB}: apt-get install postgresql"
MARIADB_MISSING = "MariaDB server binaries (mariadbd, mariadb-install-db) not found: apt-get install mariadb-server"
FIXTURE_MARKERS = {
    "postgres_server": "needs_postgres",
    "postgres_url": "needs_postgres",
    "postgres_db_url": "needs_postgres",
    "mariadb_server": "needs_mariadb",
    "mariadb_url": "needs_mariadb",
    "mariadb_db_url": "needs_mariadb",
}
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PORT_TAKEN = ("Address already in use", "could not bind", "Can't start server: Bind")


class ServerStartError(RuntimeError):
    """A server did not come up; the message ends with its log's tail."""


def find_postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb, pg_ctl and postgres (else PATH)."""

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name)) or (0,)

    candidates = sorted(glob.glob(POSTGRES_BIN_GLOB), key=version, reverse=True)
    if shutil.which("initdb"):  # e.g. a symlink in /usr/local/bin: the real dir has the rest
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    for directory in map(Path, candidates):
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def find_mariadb() -> tuple[str, str] | None:
    """(mariadbd, mariadb-install-db), also looked up in the sbin dirs; None when either is missing."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    server, install = shutil.which("mariadbd", path=path), shutil.which("mariadb-install-db", path=path)
    return (server, install) if server and install else None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


class DbServer:
    """What both servers share: credentials, URLs, the readiness wait, cleanup."""

    scheme = ""
    url_suffix = ""

    def __init__(self, root: Path, port: int):
        self.root, self.port = Path(root), port
        self.user, self.database = "catdog", "catdog"
        self.password = secrets.token_hex(12)
        self.admin_password = secrets.token_hex(12)
        self.log = self.root / "server.log"
        self.running = False

    def url_for(self, database: str) -> str:
        return f"{self.scheme}://{quote(self.user)}:{quote(self.password)}@{LOOPBACK}:{self.port}/{database}{self.url_suffix}"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def new_database(self, name: str | None = None) -> str:
        """Create an empty database owned by .user (a unique name by default); returns its URL."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not _NAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        self._create_database(name)
        return self.url_for(name)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log, lines)

    def _fail(self, what: str) -> ServerStartError:
        return ServerStartError(f"{type(self).__name__} on port {self.port} {what}; log {self.log}:\n{self.log_tail()}")

    def _wait_ready(self, alive) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self._admin_connect().close()
                return
            except Exception as exc:  # noqa: BLE001 (any driver error means "not yet")
                error = exc
            if not alive():
                raise self._fail(f"exited during startup ({error})")
            if time.monotonic() > deadline:
                raise self._fail(f"accepted no connection within {START_TIMEOUT:.0f} s ({error})")
            time.sleep(0.1)

    def _launch(self) -> None:
        """initdb + start + users; on a port taken between probe and bind, retry on another port."""
        self._init()
        for attempt in range(3):
            try:
                self.start()
                break
            except ServerStartError as exc:
                if attempt == 2 or not any(text in str(exc) for text in _PORT_TAKEN):
                    raise
                self.port = free_port()
        self._create_users()

    def close(self) -> None:
        try:
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _ensure_running(self) -> None:
        if not self.running:
            self.start()

    # per engine: _init, start, stop, _admin_connect, _create_users, _create_database, drop_database


class PostgresServer(DbServer):
    scheme = "postgresql+psycopg"

    def __init__(self, root: Path, port: int, bindir: Path):
        super().__init__(root, port)
        self.bindir, self.data = Path(bindir), self.root / "data"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @classmethod
    def launch(cls, bindir: Path) -> PostgresServer:
        server = cls(tempfile.mkdtemp(prefix="catdog-postgres-"), free_port(), bindir)
        try:
            server._launch()
        except BaseException:
            server.close()
            raise
        return server

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as_postgres, str(self.bindir / tool), *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=check, timeout=START_TIMEOUT + 30)

    def _init(self) -> None:
        pwfile = self.root / "admin.pw"
        pwfile.write_text(self.admin_password + "\n")
        if self._as_postgres:  # initdb refuses root: postgres owns the whole dir
            for path in (self.root, pwfile):
                shutil.chown(path, "postgres", "postgres")
        try:
            self._run("initdb", "-D", str(self.data), "-U", "admin", f"--pwfile={pwfile}",
                      "--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync")
        except subprocess.CalledProcessError as exc:
            raise ServerStartError(f"initdb failed ({exc.returncode}):\n{exc.stdout}{exc.stderr}") from None
        finally:
            pwfile.unlink()

    def _write_config(self) -> None:
        """tests.conf (included by postgresql.conf) holds the settings; rewritten on each start."""
        conf = self.data / "postgresql.conf"
        if "include_if_exists 'tests.conf'" not in conf.read_text():
            with open(conf, "a") as out:
                out.write("\ninclude_if_exists 'tests.conf'  # tests/db_servers.py\n")
        (self.data / "tests.conf").write_text(
            f"listen_addresses = '{LOOPBACK}'\nport = {self.port}\nunix_socket_directories = ''\n"
            "fsync = off\nshared_buffers = 32MB\n")

    def start(self) -> None:
        self._write_config()  # the current port: it changes only when the first start retries
        done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(START_TIMEOUT)),
                         "start", check=False)
        if done.returncode != 0:
            raise self._fail(f"did not start (pg_ctl: {done.stdout.strip()} {done.stderr.strip()})")
        self.running = True
        self._wait_ready(lambda: (self.data / "postmaster.pid").exists())

    def stop(self) -> None:
        done = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop", check=False)
        if done.returncode != 0:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        self.running = False

    def _admin_connect(self, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(host=LOOPBACK, port=self.port, user="admin", password=self.admin_password,
                               dbname=dbname, autocommit=True, connect_timeout=5)

    def _create_users(self) -> None:
        from psycopg import sql

        with self._admin_connect() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(self.user), sql.Literal(self.password)))
        self._create_database(self.database)

    def _create_database(self, name: str) -> None:
        from psycopg import sql

        with self._admin_connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(self.user)))

    def drop_database(self, name: str) -> None:
        from psycopg import sql

        self._ensure_running()
        with self._admin_connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class MariaDbServer(DbServer):
    scheme = "mysql+pymysql"
    url_suffix = "?charset=utf8mb4"

    def __init__(self, root: Path, port: int, mariadbd: str, install_db: str):
        super().__init__(root, port)
        self.mariadbd, self.install_db = mariadbd, install_db
        self.data, self.socket = self.root / "data", self.root / "mysqld.sock"
        self._user_args = ["--user=root"] if os.geteuid() == 0 else []
        self._admin_pw = ""  # root's password is set once the server first runs
        self._proc: subprocess.Popen | None = None

    @classmethod
    def launch(cls, mariadbd: str, install_db: str) -> MariaDbServer:
        server = cls(tempfile.mkdtemp(prefix="catdog-mariadb-"), free_port(), mariadbd, install_db)
        try:
            server._launch()
        except BaseException:
            server.close()
            raise
        return server

    def _init(self) -> None:
        install_log = self.root / "install.log"
        with open(install_log, "w") as out:
            done = subprocess.run([self.install_db, "--no-defaults", *self._user_args, f"--datadir={self.data}",
                                   "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=120)
        if done.returncode != 0:
            raise ServerStartError(f"mariadb-install-db failed ({done.returncode}):\n{_tail(install_log)}")

    def start(self) -> None:
        with open(self.log, "a") as log:
            self._proc = subprocess.Popen(
                [self.mariadbd, "--no-defaults", *self._user_args, f"--datadir={self.data}", f"--port={self.port}",
                 f"--bind-address={LOOPBACK}", f"--socket={self.socket}", f"--pid-file={self.root / 'mysqld.pid'}",
                 f"--log-error={self.log}", "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
                 "--innodb-flush-log-at-trx-commit=2"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.running = True
        try:
            self._wait_ready(lambda: self._proc.poll() is None)
        except ServerStartError:
            self.stop()
            raise

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()  # SIGTERM: a clean shutdown
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self.running = False

    def _admin_connect(self):
        import pymysql

        return pymysql.connect(unix_socket=str(self.socket), user="root", password=self._admin_pw,
                               autocommit=True, connect_timeout=5)

    def _create_users(self) -> None:
        with self._admin_connect() as conn, conn.cursor() as cur:
            cur.execute("ALTER USER 'root'@'localhost' IDENTIFIED BY %s", (self.admin_password,))
            self._admin_pw = self.admin_password
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (self.user, self.password))
        self._create_database(self.database)

    def _create_database(self, name: str) -> None:
        with self._admin_connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            cur.execute(f"GRANT ALL PRIVILEGES ON `{name}`.* TO %s@'%%'", (self.user,))

    def drop_database(self, name: str) -> None:
        self._ensure_running()
        with self._admin_connect() as conn, conn.cursor() as cur:
            cur.execute("SET SESSION lock_wait_timeout = 10")
            cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()", (name,))
            for (thread,) in cur.fetchall():
                try:
                    cur.execute(f"KILL {int(thread)}")
                except Exception:  # noqa: BLE001 (it may have just ended)
                    pass
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def _drop_quietly(server: DbServer, name: str) -> None:
    try:
        server.drop_database(name)
    except Exception as exc:  # noqa: BLE001 (best effort: the server goes at session end anyway)
        warnings.warn(f"could not drop test database {name}: {exc}", stacklevel=1)


def _session_server(found, missing: str, launch):
    """Skip with `missing` when the binaries were not found; else launch, yield, close."""
    if found is None:
        pytest.skip(missing)
    server = launch(found)
    try:
        yield server
    finally:
        server.close()


def _fresh_database(server):
    """A fresh, empty database on `server` for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield server.new_database(name)
    _drop_quietly(server, name)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the session (see the module docstring)."""
    yield from _session_server(find_postgres_bin(), POSTGRES_MISSING, PostgresServer.launch)


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """postgresql+psycopg://USER:PASS@127.0.0.1:PORT/DB of the session's PostgreSQL database."""
    return postgres_server.url


@pytest.fixture
def postgres_db_url(postgres_server):
    """The URL of a fresh, empty PostgreSQL database for this test (dropped afterwards)."""
    yield from _fresh_database(postgres_server)


@pytest.fixture(scope="session")
def mariadb_server():
    """A throwaway MariaDB server for the session (see the module docstring)."""
    yield from _session_server(find_mariadb(), MARIADB_MISSING, lambda binaries: MariaDbServer.launch(*binaries))


@pytest.fixture(scope="session")
def mariadb_url(mariadb_server) -> str:
    """mysql+pymysql://USER:PASS@127.0.0.1:PORT/DB?charset=utf8mb4 of the session's MariaDB database."""
    return mariadb_server.url


@pytest.fixture
def mariadb_db_url(mariadb_server):
    """The URL of a fresh, empty MariaDB database for this test (dropped afterwards)."""
    yield from _fresh_database(mariadb_server)
