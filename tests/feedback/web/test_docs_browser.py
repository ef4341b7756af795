"""The API page (/docs) in a real browser (Playwright driving Debian's Chromium, headless): Swagger UI,
served by the app, reads FastAPI's OpenAPI 3.1 document and shows every operation of every route,
under the same Content-Security-Policy as the other pages (no inline script), with nothing loaded
from elsewhere and no console error.

SCREENSHOTS=<folder> writes docs.png there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from feedback.web.app import PAGE_POLICY
from tests.feedback.monitoring.test_dashboard_browser import assert_clean, record_hosts, watch
from tests.feedback_fixtures import FakePredictor, feedback_settings, running_app

LEGACY_ROUTES = ("/api/predict", "/api/status", "/api/upload-data", "/api/train", "/api/retrain", "/api/training-status")
HTTP_METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture
def docs_app(tmp_path):
    with running_app(feedback_settings(tmp_path, "http://127.0.0.1:9"), predictor=FakePredictor()) as app:
        yield app


def test_the_api_page_shows_every_operation_under_the_csp(docs_app, page):
    app = docs_app
    problems, hosts = watch(page), record_hosts(page)
    spec = app.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")  # what Swagger UI 3 could not read
    operations = [(method, path) for path, item in spec["paths"].items() for method in item if method in HTTP_METHODS]
    assert set(LEGACY_ROUTES) <= {path for _, path in operations}
    answer = app.get("/docs")
    assert answer.headers["content-security-policy"] == PAGE_POLICY and "<script>" not in answer.text

    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(app.url + "/docs")
    blocks = page.locator(".opblock")
    expect(blocks).to_have_count(len(operations), timeout=20_000)
    for method, path in operations:
        block = page.locator(f".opblock-{method}:has(.opblock-summary-path[data-path='{path}'])")
        expect(block).to_have_count(1)
        expect(block.locator(".opblock-summary-method")).to_have_text(method.upper())
        expect(block.locator(".opblock-summary-path")).to_be_visible()
    expect(page.get_by_text("Unable to render")).to_have_count(0)
    expect(page.locator(".info .title")).to_contain_text(spec["info"]["title"])

    predict = page.locator(".opblock-post:has(.opblock-summary-path[data-path='/api/predict'])")
    predict.locator(".opblock-summary-control").click()  # opened: its body and answers are drawn too
    expect(predict.locator(".opblock-body")).to_be_visible()
    expect(predict.locator(".responses-table")).to_contain_text("422")
    if os.environ.get("SCREENSHOTS"):
        page.screenshot(path=Path(os.environ["SCREENSHOTS"]) / "docs.png")
    assert_clean(page, problems, app.url, hosts)
