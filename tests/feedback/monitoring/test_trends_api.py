"""GET /api/trends (feedback/web/routers/dashboard.py over feedback.monitoring.trends.Trends): the window is
validated, the memory source draws points from the app's own scrapes of a predictor's /metrics (a stub) and
of itself, a Prometheus that does not answer is an error per service in a 200, and the settings."""

from __future__ import annotations

import time

import pytest

from feedback.settings import SettingsError, load_settings
from feedback.web.server import build_parser
from tests.feedback.monitoring.test_trends import predictor_text
from tests.feedback_fixtures import FakePredictor, feedback_settings, running_app, stub_server, unused_url


@pytest.fixture
def predictor_metrics():
    """A predictor's /metrics whose counts the test sets: state["text"]."""
    state = {"text": predictor_text(0, 0, 0, 0, 0)}
    with stub_server(lambda *_: (200, {"content-type": "text/plain; version=0.0.4"}, state["text"].encode())) as url:
        yield url, state


def test_the_window_is_validated(tmp_path, predictor_metrics):
    url, _ = predictor_metrics
    with running_app(feedback_settings(tmp_path, url), predictor=FakePredictor()) as app:
        for bad in ("1w", "", "3600", "1H"):
            response = app.get("/api/trends", params={"window": bad})
            assert response.status_code == 422, (bad, response.text)
            assert response.headers["content-type"] == "application/json"
            assert response.json()["detail"][0]["loc"] == ["query", "window"]
        answer = app.get("/api/trends").json()  # the default: the last hour
        assert (answer["window"], answer["window_s"], answer["source"]) == ("1h", 3600, "memory")


def test_memory_trends_after_two_scrapes(tmp_path, predictor_metrics):
    url, state = predictor_metrics
    with running_app(feedback_settings(tmp_path, url), predictor=FakePredictor()) as app:
        trends = app.service.trends
        now = [time.time() + 3 * 24 * 3600]  # the recorder thread's own first scrape: days before, out of any window
        trends.clock = lambda: now[0]
        state["text"] = predictor_text(requests=10, ok=10, errors=0, fast=10, slow=0, started=now[0] - 100)
        trends.recorder.scrape()
        first = app.get("/api/trends", params={"window": "1h"}).json()
        assert first["services"]["predictor"]["points"] == []  # one scrape: nothing to subtract yet
        for _ in range(3):
            assert app.get("/api/status").status_code == 200  # the app's own requests between the scrapes
        now[0] += 60
        # 60 more requests in 60 s: 45 answered 200, 15 answered 503; 30 under 10 ms, 30 under 100 ms
        state["text"] = predictor_text(requests=70, ok=55, errors=15, fast=40, slow=30, started=now[0] - 160)
        trends.recorder.scrape()
        answer = app.get("/api/trends", params={"window": "1h"}).json()
        day = app.get("/api/trends", params={"window": "1d"}).json()

    assert (answer["source"], answer["interval_s"], answer["prometheus_url"], answer["step_s"]) == ("memory", 30, None, 60)
    predictor = answer["services"]["predictor"]
    assert predictor["error"] is None and predictor["uptime_s"] == pytest.approx(160)
    [point] = predictor["points"]
    assert point["t"] == pytest.approx(now[0]) and answer["now"] == pytest.approx(now[0])
    assert point["rate"] == pytest.approx(1.0) and point["error_ratio"] == pytest.approx(0.25)
    assert point["p50_s"] == pytest.approx(0.01) and point["p99_s"] == pytest.approx(0.01 + 0.09 * (59.4 - 30) / 30)
    [app_point] = answer["services"]["app"]["points"]
    assert app_point["rate"] > 0 and app_point["p50_s"] is not None  # its /api/status and /api/trends requests
    assert answer["services"]["app"]["uptime_s"] > 0
    assert (day["window"], day["step_s"], day["services"]["predictor"]["points"]) == ("1d", 600, [])  # 60 s < a step


def test_prometheus_down_is_an_error_per_service_never_a_500(tmp_path, predictor_metrics):
    url, _ = predictor_metrics
    down = unused_url()
    settings = feedback_settings(tmp_path, url, prometheus_url=f"http://user:secret@{down.removeprefix('http://')}/")
    with running_app(settings, predictor=FakePredictor()) as app:
        assert app.service.trends.recorder is None  # Prometheus scrapes: the app keeps no history
        response = app.get("/api/trends", params={"window": "1d"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["source"], answer["window"], answer["interval_s"]) == ("prometheus", "1d", None)
    assert answer["prometheus_url"] == down and "secret" not in response.text
    for service in ("predictor", "app"):
        assert answer["services"][service]["points"] == []
        assert answer["services"][service]["error"].startswith("ConnectError")


def test_the_trends_settings():
    assert (load_settings({}).prometheus_url, load_settings({}).trends_interval_s) == ("", 30.0)
    settings = load_settings({"PROMETHEUS_URL": "http://127.0.0.1:9090", "TRENDS_INTERVAL_S": "15"})
    assert (settings.prometheus_url, settings.trends_interval_s) == ("http://127.0.0.1:9090", 15.0)
    for env, name in (({"PROMETHEUS_URL": "127.0.0.1:9090"}, "PROMETHEUS_URL"), ({"TRENDS_INTERVAL_S": "1"}, "TRENDS_INTERVAL_S"),
                      ({"TRENDS_INTERVAL_S": "soon"}, "TRENDS_INTERVAL_S")):
        with pytest.raises(SettingsError, match=name):
            load_settings(env)
    args = build_parser().parse_args(["--prometheus-url", "http://127.0.0.1:9090", "--trends-interval-s", "10"])
    assert (args.prometheus_url, args.trends_interval_s) == ("http://127.0.0.1:9090", 10.0)
