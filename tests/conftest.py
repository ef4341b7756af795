"""Shared fixtures for the whole suite: synthetic images, class folders, a local GCS emulator.

Nothing here reads ../shared or reaches the network beyond 127.0.0.1; every image is generated
with Pillow from seeded noise, so the suite is reproducible and runs anywhere.

Plain helpers live in tests/helpers.py (``from tests.helpers import make_image, image_bytes,
make_class_folders, free_port``):

- ``make_image(path, fmt="JPEG", size=(64, 48), mode="RGB", seed=0, color=None)``: write one
  distinct synthetic image (seeded noise around ``color``); ``mode`` is a Pillow mode (RGB, RGBA,
  L, CMYK, P); the file extension is never checked against ``fmt``.
- ``image_bytes(...)``: the same image as encoded bytes (request bodies, in-memory checks).
- ``make_class_folders(root, counts={"cat": 10, "dog": 10}, fmt="JPEG", size=(64, 48), seed=0)``.

Fixtures:

- ``image_factory``: returns ``make_image``.
- ``image_folder``: ``tmp_path/"data"`` holding ``cat/`` and ``dog/`` with ``IMAGES_PER_CLASS``
  (10) distinct 64x48 JPEGs each (seeded noise tinted by a per-class colour; no duplicates).
- ``http_server``: a static file server on a free loopback port serving ``tmp_path/"www"``
  (``.root``, ``.url(name)``, ``.requests``: the paths requested, to assert on downloads).
- ``gcs_server`` (session): a gcp-storage-emulator serving in memory on a free loopback port with
  the bucket ``GCS_BUCKET``; yields its base URL. Env is left untouched: use ``gcs``.
- ``gcs``: per test, points google-cloud-storage at that emulator (STORAGE_EMULATOR_HOST via
  monkeypatch), clears ``catdog.storage.gcs_client``'s cache before and after, and gives a
  unique ``gs://`` prefix (``gcs.prefix``, ``gcs.uri("a", "b")``) so tests never share objects.

Throwaway servers and a browser (tests/db_servers.py, tests/browser.py; imported here):
``postgres_server`` / ``postgres_url`` / ``postgres_db_url``, ``mariadb_server`` / ``mariadb_url`` /
``mariadb_db_url``, ``browser`` / ``page``. Without the server binaries or Chromium they skip.

Markers: ``slow`` (slow tests still run by default); ``needs_postgres``, ``needs_mariadb``,
``needs_browser``, ``needs_prometheus`` (tests/prometheus_server.py), added automatically to a test
that uses the matching fixtures. With CI=true (or
1) a test carrying one of these markers that is skipped is reported as FAILED ("CI must run this
test, but it was skipped: <reason>"), so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `tests.helpers` importable under plain `pytest` too
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests import browser as _browser  # noqa: E402
from tests import db_servers as _db_servers  # noqa: E402
from tests import prometheus_server as _prometheus  # noqa: E402
from tests.browser import browser, page  # noqa: E402,F401 (fixtures)
from tests.prometheus_server import prometheus_binary, promtool  # noqa: E402,F401 (fixtures)
from tests.db_servers import (  # noqa: E402,F401 (fixtures)
    mariadb_db_url,
    mariadb_server,
    mariadb_url,
    postgres_db_url,
    postgres_server,
    postgres_url,
)
from tests.helpers import (  # noqa: E402
    CLASS_COLORS,
    IMAGES_PER_CLASS,
    LOOPBACK,
    free_port,
    image_bytes,
    make_class_folders,
    make_image,
)

__all__ = ["CLASS_COLORS", "IMAGES_PER_CLASS", "image_bytes", "make_class_folders", "make_image"]
GCS_BUCKET = "catdog-test"
pytest_plugins = ["pytester"]  # tests/test_db_servers.py runs pytest on generated test files
NEEDS_MARKERS = {
    "needs_postgres": "a throwaway PostgreSQL server (tests/db_servers.py; apt-get install postgresql)",
    "needs_mariadb": "a throwaway MariaDB server (tests/db_servers.py; apt-get install mariadb-server)",
    "needs_browser": "headless Chromium via Playwright (tests/browser.py; apt-get install chromium)",
    "needs_podman": "podman and runc, as root (container_tests/image_test.py; apt-get install podman runc debootstrap)",
    "needs_prometheus": "Prometheus and promtool (tests/prometheus_server.py; apt-get install prometheus)",
}
FIXTURE_MARKERS = {**_db_servers.FIXTURE_MARKERS, **_browser.FIXTURE_MARKERS, **_prometheus.FIXTURE_MARKERS}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: a long test (e.g. the local end-to-end pipeline run); runs by default, "
        "deselect with -m 'not slow'"
    )
    for name, needs in NEEDS_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: needs {needs}; with CI=true a skip is a failure")


def pytest_collection_modifyitems(items):
    """A test that uses a server or browser fixture carries its marker, so the CI rule applies."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = FIXTURE_MARKERS.get(fixture)
            if marker and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """With CI=true, a skipped test that carries a needs_* marker becomes a failure."""
    report = yield
    if (report.skipped and not hasattr(report, "wasxfail") and running_in_ci()
            and any(item.get_closest_marker(name) for name in NEEDS_MARKERS)):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"CI must run this test, but it was skipped: {reason}"
        report.ci_must_run = True
    return report


def pytest_report_teststatus(report, config):
    """Such a report is FAILED (not ERROR) even when the skip came from a fixture's setup."""
    if getattr(report, "ci_must_run", False):
        return "failed", "F", "FAILED"
    return None


@pytest.fixture
def image_factory():
    """The make_image function, for tests that prefer a fixture to an import."""
    return make_image


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """tmp_path/"data" with cat/ and dog/, IMAGES_PER_CLASS distinct 64x48 JPEGs each."""
    return make_class_folders(tmp_path / "data")


@pytest.fixture(autouse=True)
def _download_addresses_answer(monkeypatch):
    """pipelines.local's up-front checks ask the WEIGHTS=imagenet download address (and the app a DATA
    URL not cached yet) with a HEAD request: no test may reach the network, so here they answer.
    tests/test_run_checks.py checks the real url_problem on loopback and patches it to refuse."""
    monkeypatch.setattr("pipelines.local.url_problem", lambda url: None)


@pytest.fixture(autouse=True)
def _loopback_bypasses_proxies(monkeypatch):
    """Requests to 127.0.0.1 must never go through a proxy from the environment."""
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, ",".join(filter(None, [os.environ.get(var), LOOPBACK, "localhost"])))


@pytest.fixture(scope="session")
def gcs_server():
    """A gcp-storage-emulator serving in memory on a free loopback port; yields its base URL."""
    from gcp_storage_emulator.server import create_server

    last_error = None
    for _ in range(5):  # a free port can be taken between the probe and the bind
        port = free_port()
        server = create_server(LOOPBACK, port, in_memory=True, default_bucket=GCS_BUCKET)
        try:
            server.start()
        except OSError as exc:
            last_error = exc
            continue
        break
    else:
        raise RuntimeError(f"could not start gcp-storage-emulator: {last_error}")
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.stop()


@dataclass(frozen=True)
class GcsEmulator:
    host: str  # http://127.0.0.1:PORT
    bucket: str
    prefix: str  # gs://bucket/<unique per test>

    def uri(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts])


@pytest.fixture
def gcs(gcs_server, monkeypatch) -> GcsEmulator:
    """google-cloud-storage pointed at the emulator for this test, with a unique gs:// prefix."""
    from catdog import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    storage.gcs_client.cache_clear()
    yield GcsEmulator(gcs_server, GCS_BUCKET, f"gs://{GCS_BUCKET}/t-{uuid.uuid4().hex[:12]}")
    storage.gcs_client.cache_clear()


@dataclass
class HttpFileServer:
    base_url: str  # http://127.0.0.1:PORT
    root: Path  # files under here are served at base_url/<relative path>
    requests: list[str]  # the paths of every GET/HEAD received, in order

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


@pytest.fixture
def http_server(tmp_path) -> HttpFileServer:
    """A static file server on a free loopback port, serving tmp_path/"www"; records each request."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def do_HEAD(self):
            requests.append(self.path)
            super().do_HEAD()

        def log_message(self, *args):  # keep test output clean
            pass

    httpd = ThreadingHTTPServer((LOOPBACK, 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpFileServer(f"http://{LOOPBACK}:{httpd.server_address[1]}", root, requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
