"""The dashboard's "Service trends" in Chromium (tests/browser.py): the predictor's and the app's rate, error
and latency charts drawn with points on labelled time axes under the page's CSP, the 1 h / 1 d switch, the
source and uptime lines, and the empty states (collecting; no requests; Prometheus down).
TRENDS_SCREENSHOT=path.png saves the section as drawn (path-empty.png, path-prometheus-down.png: the others)."""

from __future__ import annotations

import math
import os
import re
import time

import pytest
from playwright.sync_api import expect

from feedback.monitoring import metrics as app_metrics
from tests.feedback.monitoring.test_dashboard_browser import assert_clean, record_hosts, watch
from tests.feedback.monitoring.test_trends import predictor_text
from tests.feedback_fixtures import FakePredictor, feedback_settings, running_app, stub_server, unused_url

SERVICES = ("predictor", "app")
Y_TITLES = {"rate": "requests / s", "errors": "errors (%)", "latency": "latency (ms)"}
TIME_TICK = re.compile(r"^\d{2}:\d{2}")  # plotly's date ticks within a day: "17:40" (a date under some)


@pytest.fixture
def predictor_metrics():
    state = {"text": predictor_text(0, 0, 0, 0, 0)}
    with stub_server(lambda *_: (200, {"content-type": "text/plain; version=0.0.4"}, state["text"].encode())) as url:
        yield url, state


def record(app, state, minutes: int, requests_per_min=lambda i: 0.0) -> float:
    """`minutes` scrapes a minute apart, ending at the fake clock's now (days after the recorder thread's own
    first scrape, so that one is out of every window); the predictor answers requests_per_min(i) a minute,
    2 % of them 503 (10 % in minutes 20-25), faster in the early minutes; the app serves half as many."""
    trends = app.service.trends
    start = time.time() + 3 * 24 * 3600
    now = [start]
    trends.clock = lambda: now[0]
    requests = ok = errors = fast = slow = 0.0
    for i in range(minutes + 1):
        now[0] = start + 60 * i
        n = round(requests_per_min(i))
        bad = round(n * (0.1 if 20 <= i <= 25 else 0.02))
        quick = round(n * (0.8 if i < minutes / 2 else 0.55))
        requests, ok, errors, fast, slow = requests + n, ok + n - bad, errors + bad, fast + quick, slow + n - quick
        state["text"] = predictor_text(requests, ok, errors, fast, slow, started=start - 7200)
        for k in range(n // 2):
            app_metrics.REQUEST_SECONDS.labels("GET", "/api/status", "2xx").observe(0.004 + 0.002 * (k % 7))
        trends.recorder.scrape()
    return now[0]


def drawn(page, window: str) -> None:
    expect(page.get_by_test_id("trends-panel")).to_have_attribute("data-window", window)


def screenshot(page, suffix: str = "") -> None:
    if os.environ.get("TRENDS_SCREENSHOT"):
        page.wait_for_timeout(300)
        path = os.environ["TRENDS_SCREENSHOT"].removesuffix(".png") + suffix + ".png"
        page.get_by_test_id("trends-panel").screenshot(path=path)


def test_trend_charts_are_drawn_and_the_switch_changes_the_window(tmp_path, predictor_metrics, page):
    url, state = predictor_metrics
    with running_app(feedback_settings(tmp_path, url), predictor=FakePredictor()) as app:
        record(app, state, 180, lambda i: 120 + 60 * math.sin(i / 9))
        hour, day = (app.get("/api/trends", params={"window": w}).json() for w in ("1h", "1d"))
        problems, hosts = watch(page), record_hosts(page)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(app.url + "/dashboard")
        drawn(page, "1h")
        expect(page.get_by_test_id("trends-source")).to_have_text(
            "From the app's own scrapes every 30 s (kept in this app's memory for a day; each replica has its own), "
            "a point every 1 min.")
        expect(page.get_by_test_id("trends-1h")).to_have_attribute("aria-pressed", "true")
        for service in SERVICES:
            assert len(hour["services"][service]["points"]) == 61  # a point a minute, both ends of the hour included
            expect(page.get_by_test_id(f"uptime-{service}")).not_to_have_text("–")
            expect(page.get_by_test_id(f"trends-empty-{service}")).to_be_hidden()
            for kind, title in Y_TITLES.items():
                chart = page.get_by_test_id(f"chart-trend-{service}-{kind}")
                expect(chart.locator(".g-ytitle")).to_have_text(title)
                expect(chart.locator(".g-xtitle")).to_have_text("time (UTC)")
                traces = 2 if kind == "latency" else 1
                expect(chart.locator(".scatterlayer .point")).to_have_count(61 * traces)
                ticks = chart.locator(".xtick text").all_text_contents()
                assert ticks and all(TIME_TICK.match(t) for t in ticks), ticks
        expect(page.get_by_test_id("uptime-predictor")).to_have_text("5 h 0 min")  # started 2 h before 3 h of scrapes
        screenshot(page)

        page.get_by_test_id("trends-1d").click()
        drawn(page, "1d")
        expect(page.get_by_test_id("trends-1d")).to_have_attribute("aria-pressed", "true")
        expect(page.get_by_test_id("trends-1h")).to_have_attribute("aria-pressed", "false")
        expect(page.get_by_test_id("trends-source")).to_contain_text("a point every 10 min.")
        points = len(day["services"]["predictor"]["points"])
        assert points == 18
        expect(page.get_by_test_id("chart-trend-predictor-rate").locator(".scatterlayer .point")).to_have_count(points)
        expect(page.get_by_test_id("trends-json")).to_have_attribute("href", "/api/trends?window=1d")
        assert_clean(page, problems, app.url, hosts)


def test_the_empty_states(tmp_path, predictor_metrics, page):
    url, state = predictor_metrics
    with running_app(feedback_settings(tmp_path, url), predictor=FakePredictor()) as app:
        problems = watch(page)
        page.goto(app.url + "/dashboard")  # the recorder thread scraped once at start
        drawn(page, "1h")
        for service in SERVICES:
            expect(page.get_by_test_id(f"trends-empty-{service}")).to_have_text(
                "Collecting: first points after 2 scrapes 1 min apart (the app scrapes every 30 s).")
            for kind in Y_TITLES:  # nothing to draw: hidden, the note says why
                expect(page.get_by_test_id(f"chart-trend-{service}-{kind}")).to_be_hidden()
        page.get_by_test_id("trends-1d").click()
        drawn(page, "1d")
        expect(page.get_by_test_id("trends-empty-predictor")).to_have_text(
            "Collecting: first points after 2 scrapes 10 min apart (the app scrapes every 30 s).")

        record(app, state, 3)  # three minutes with no request at the predictor
        page.get_by_test_id("trends-1h").click()
        drawn(page, "1h")
        expect(page.get_by_test_id("trends-empty-predictor")).to_have_text("No requests in the last hour.")
        expect(page.get_by_test_id("chart-trend-predictor-rate").locator(".scatterlayer .point")).to_have_count(3)
        expect(page.get_by_test_id("chart-trend-predictor-rate")).to_be_visible()
        for kind in ("errors", "latency"):
            expect(page.get_by_test_id(f"chart-trend-predictor-{kind}")).to_be_hidden()
        screenshot(page, "-empty")
        assert_clean(page, problems, app.url, {app.url.removeprefix("http://")})


def test_prometheus_down_is_said_per_service(tmp_path, predictor_metrics, page):
    url, _ = predictor_metrics
    down = unused_url()
    with running_app(feedback_settings(tmp_path, url, prometheus_url=down), predictor=FakePredictor()) as app:
        problems = watch(page)
        page.goto(app.url + "/dashboard")
        drawn(page, "1h")
        expect(page.get_by_test_id("trends-source")).to_have_text(
            f"From Prometheus at {down} (its 5-minute recording rules), a point every 1 min.")
        for service in SERVICES:
            expect(page.get_by_test_id(f"trends-error-{service}")).to_contain_text(
                f"Prometheus could not answer for the {service}: ConnectError")
            expect(page.get_by_test_id(f"trends-empty-{service}")).to_be_hidden()  # the error says why
            expect(page.get_by_test_id(f"chart-trend-{service}-rate")).to_be_hidden()
            expect(page.get_by_test_id(f"uptime-{service}")).to_have_text("unknown")
        screenshot(page, "-prometheus-down")
        assert_clean(page, problems, app.url, {app.url.removeprefix("http://")})
