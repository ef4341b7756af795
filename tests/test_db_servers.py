"""The test infrastructure itself: throwaway database servers, the browser, and the CI rule.

- Real servers (tests/db_servers.py): a table written through SQLAlchemy survives a restart; two
  fresh databases are independent; a start that cannot bind fails with the server's log tail.
- The browser (tests/browser.py): click a button on a data: URL and on a loopback page.
- The CI rule (tests/conftest.py), with pytester on a generated test file and the binaries faked
  absent: without CI the needs_* tests skip with the apt-get hint; with CI=true (or 1) they fail.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from tests import db_servers
from tests.conftest import REPO_ROOT
from tests.helpers import LOOPBACK

KINDS = [pytest.param("postgres", marks=pytest.mark.needs_postgres),
         pytest.param("mariadb", marks=pytest.mark.needs_mariadb)]
DRIVERS = {"postgres": "postgresql+psycopg", "mariadb": "mysql+pymysql"}


def notes_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table("notes", metadata, sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("body", sa.String(100), nullable=False))


def write_notes(url: str, bodies: list[str]) -> None:
    engine = sa.create_engine(url)
    try:
        metadata = sa.MetaData()
        table = notes_table(metadata)
        with engine.begin() as conn:
            metadata.create_all(conn)
            conn.execute(table.insert(), [{"body": body} for body in bodies])
    finally:
        engine.dispose()


def read_notes(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        table = notes_table(sa.MetaData())
        with engine.connect() as conn:
            return list(conn.execute(sa.select(table.c.body).order_by(table.c.id)).scalars())
    finally:
        engine.dispose()


def table_names(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_urls_connect_as_the_password_user(kind, request):
    server = request.getfixturevalue(f"{kind}_server")
    session_url = request.getfixturevalue(f"{kind}_url")
    fresh_url = request.getfixturevalue(f"{kind}_db_url")
    for url in (session_url, fresh_url):
        parsed = sa.make_url(url)
        assert (parsed.drivername, parsed.host, parsed.port) == (DRIVERS[kind], LOOPBACK, server.port)
        assert parsed.username == server.user and parsed.password == server.password
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                who = conn.execute(sa.text("SELECT current_user" if kind == "postgres" else "SELECT CURRENT_USER()")).scalar()
                assert who.split("@")[0] == server.user
        finally:
            engine.dispose()
    assert sa.make_url(session_url).database == server.database != sa.make_url(fresh_url).database
    if kind == "mariadb":
        assert sa.make_url(fresh_url).query == {"charset": "utf8mb4"}


@pytest.mark.parametrize("kind", KINDS)
def test_data_survives_a_server_restart(kind, request):
    server = request.getfixturevalue(f"{kind}_server")
    url = request.getfixturevalue(f"{kind}_db_url")
    bodies = ["first", "second: chat \N{CAT FACE} et chien \N{DOG FACE}"]
    write_notes(url, bodies)
    port = server.port
    server.restart()
    assert server.port == port and server.url_for(sa.make_url(url).database) == url
    assert read_notes(url) == bodies


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_databases_are_independent(kind, request):
    server = request.getfixturevalue(f"{kind}_server")
    first = request.getfixturevalue(f"{kind}_db_url")
    second = server.new_database()
    assert table_names(first) == table_names(second) == []
    write_notes(first, ["only in the first"])
    assert table_names(second) == []
    write_notes(second, ["only in the second"])
    assert read_notes(first) == ["only in the first"]
    assert read_notes(second) == ["only in the second"]
    server.drop_database(sa.make_url(second).database)
    engine = sa.create_engine(second)
    try:
        with pytest.raises(sa.exc.OperationalError):
            engine.connect().close()
    finally:
        engine.dispose()
    assert read_notes(first) == ["only in the first"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_start_that_cannot_bind_shows_the_server_log(kind):
    if kind == "postgres":
        bindir = db_servers.find_postgres_bin() or pytest.skip(db_servers.POSTGRES_MISSING)
        make = lambda root, port: db_servers.PostgresServer(root, port, bindir)  # noqa: E731
    else:
        binaries = db_servers.find_mariadb() or pytest.skip(db_servers.MARIADB_MISSING)
        make = lambda root, port: db_servers.MariaDbServer(root, port, *binaries)  # noqa: E731
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        server = make(tempfile.mkdtemp(prefix=f"catdog-{kind}-"), taken.getsockname()[1])
        try:
            server._init()
            with pytest.raises(db_servers.ServerStartError) as failure:
                server.start()
        finally:
            server.close()
    message = str(failure.value)
    assert str(server.log) in message
    assert "already in use" in message or "could not bind" in message.lower()
    assert not server.root.exists()


def test_postgres_lookup_takes_the_newest_version_dir(tmp_path, monkeypatch):
    for version in ("9.6", "13", "15"):
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        for tool in ("initdb", "pg_ctl", "postgres"):
            (bindir / tool).write_text("#!/bin/sh\n")
            (bindir / tool).chmod(stat.S_IRWXU)
    (tmp_path / "15" / "bin" / "postgres").unlink()  # an incomplete install is passed over
    monkeypatch.setattr(db_servers, "POSTGRES_BIN_GLOB", str(tmp_path / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert db_servers.find_postgres_bin() == tmp_path / "13" / "bin"
    monkeypatch.setattr(db_servers, "POSTGRES_BIN_GLOB", str(tmp_path / "none" / "*" / "bin"))
    assert db_servers.find_postgres_bin() is None


CLICK_PAGE = ("<title>t</title><button id=go onclick=\"document.querySelector('#out').textContent="
              "'clicked ' + (++window.n || (window.n = 1))\">Go</button><p id=out>idle</p>")


@pytest.mark.needs_browser
def test_browser_clicks_a_button_on_a_data_url(page):
    page.goto("data:text/html," + quote(CLICK_PAGE))  # unquoted, "#out" would start a fragment
    assert page.text_content("#out") == "idle"
    page.click("#go")
    page.click("text=Go")
    assert page.text_content("#out") == "clicked 2"


@pytest.mark.needs_browser
def test_browser_loads_a_loopback_page(page, http_server):
    (http_server.root / "index.html").write_text(CLICK_PAGE)
    page.goto(http_server.url("index.html"))
    page.click("#go")
    assert page.text_content("#out") == "clicked 1"
    assert "/index.html" in http_server.requests


# The CI rule, on a generated test file, in a subprocess (the fakes must not leak into this one).
FAKE_ABSENT_CONFTEST = """
import tests.browser
import tests.db_servers

pytest_plugins = ["tests.conftest"]  # the real markers, hooks and fixtures
tests.db_servers.find_postgres_bin = lambda: None  # a machine without the servers or Chromium
tests.db_servers.find_mariadb = lambda: None
tests.browser.chromium_path = lambda: None
"""
NEEDS_TESTS = """
import pytest

@pytest.mark.needs_postgres
def test_postgres(postgres_url):
    pass

def test_mariadb_marked_by_its_fixture(mariadb_db_url):
    pass

def test_browser_marked_by_its_fixture(page):
    pass

@pytest.mark.needs_postgres
def test_skips_in_its_body():
    pytest.skip("no server today")

def test_unmarked_skip():
    pytest.skip("nothing to do with CI")

@pytest.mark.needs_mariadb
@pytest.mark.xfail(reason="known bug")
def test_expected_failure():
    assert False

@pytest.mark.needs_browser
def test_passes():
    pass
"""
MUST_RUN = ["test_postgres", "test_mariadb_marked_by_its_fixture", "test_browser_marked_by_its_fixture",
            "test_skips_in_its_body"]
REASONS = [db_servers.POSTGRES_MISSING, db_servers.MARIADB_MISSING, "Chromium not found", "no server today"]


@pytest.fixture
def fake_absent(pytester, monkeypatch):
    pytester.makeconftest(FAKE_ABSENT_CONFTEST)
    pytester.makepyfile(test_needs=NEEDS_TESTS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    return pytester


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_missing_servers_skip_with_the_reason(fake_absent, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result = fake_absent.runpytest_subprocess("-rsx", "--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
    assert result.ret == 0
    output = result.stdout.str()
    for reason in REASONS:
        assert reason in output
    assert "CI must run" not in output


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_in_ci_a_skipped_needs_test_fails(fake_absent, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    result = fake_absent.runpytest_subprocess("-rfsx", "--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=4, skipped=1, xfailed=1)  # failed, not errors
    assert result.ret == 1
    lines = result.stdout.lines
    for test, reason in zip(MUST_RUN, REASONS):
        assert any(line.startswith(f"FAILED test_needs.py::{test} - CI must run this test, but it was skipped: {reason}")
                   for line in lines), (test, reason)
    assert any("SKIPPED" in line and "nothing to do with CI" in line for line in lines)
