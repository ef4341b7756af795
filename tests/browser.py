"""Headless Chromium for browser tests: Playwright driving the system's Chromium.

Never ``playwright install`` (it downloads): the browser is Debian's ``chromium`` package.
tests/conftest.py imports the fixtures:

- ``browser`` (module): a Playwright ``Browser``, headless, launched from ``chromium_path()``
  with ``CHROMIUM_ARGS``; closed at the end.
- ``page`` (function): a ``Page`` in a new browser context (no cookies or storage shared between
  tests), closed after the test.
- ``chromium_path()``: ``$CHROMIUM_PATH``, else ``chromium`` / ``chromium-browser`` on PATH, else
  ``/usr/bin/chromium`` when present; None when there is none.

Without Chromium or the playwright module the fixtures skip (``CHROMIUM_MISSING``,
``PLAYWRIGHT_MISSING``); a test using them gets the marker ``needs_browser`` automatically
(``FIXTURE_MARKERS``), and with CI=true such a skip fails (tests/conftest.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
CHROMIUM_MISSING = "Chromium not found ($CHROMIUM_PATH, chromium on PATH, /usr/bin/chromium): apt-get install chromium"
PLAYWRIGHT_MISSING = "the playwright Python package is not installed: make install (never `playwright install`)"
FIXTURE_MARKERS = {"browser": "needs_browser", "page": "needs_browser"}


def chromium_path() -> str | None:
    """The Chromium executable to launch, or None."""
    if os.environ.get("CHROMIUM_PATH"):
        return os.environ["CHROMIUM_PATH"]
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def playwright_available() -> bool:
    return importlib.util.find_spec("playwright") is not None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (a playwright.sync_api.Browser) for one test module. Not for the session:
    while Playwright's sync API is active, an asyncio loop runs in the main thread, and later tests
    that call asyncio.run() (bench.load_client) would fail."""
    if not playwright_available():
        pytest.skip(PLAYWRIGHT_MISSING)
    executable = chromium_path()
    if executable is None:
        pytest.skip(CHROMIUM_MISSING)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser):
    """A page in a fresh browser context, closed after the test."""
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()
