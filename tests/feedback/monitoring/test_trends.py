"""feedback/monitoring/trends.py: samples from /metrics text, trend points between scrapes (restarts, bounds),
the recorder, and the Prometheus source's failure answer (the live source: test_prometheus_live.py)."""

from __future__ import annotations

import math

import pytest

from feedback.monitoring import metrics as app_metrics, trends
from tests.helpers import free_port


def predictor_text(requests: float, ok: float, errors: float, fast: float, slow: float, started: float = 1000.0) -> str:
    """/metrics of a predictor: `fast` requests under 10 ms, `slow` ones under 100 ms; explain ignored."""
    total = fast + slow
    return f"""# TYPE catdog_inference_requests_total counter
catdog_inference_requests_total{{model_name="catdog",model_version="1",protocol="v1",verb="predict"}} {requests}
# TYPE catdog_http_responses_total counter
catdog_http_responses_total{{code="200"}} {ok}
catdog_http_responses_total{{code="503"}} {errors}
# TYPE catdog_inference_seconds histogram
catdog_inference_seconds_bucket{{le="0.01",verb="predict"}} {fast}
catdog_inference_seconds_bucket{{le="0.1",verb="predict"}} {total}
catdog_inference_seconds_bucket{{le="+Inf",verb="predict"}} {total}
catdog_inference_seconds_count{{verb="predict"}} {total}
catdog_inference_seconds_sum{{verb="predict"}} 1.0
catdog_inference_seconds_bucket{{le="0.01",verb="explain"}} 0
catdog_inference_seconds_bucket{{le="0.1",verb="explain"}} 0
catdog_inference_seconds_bucket{{le="+Inf",verb="explain"}} 500
catdog_inference_seconds_count{{verb="explain"}} 500
catdog_inference_seconds_sum{{verb="explain"}} 900.0
# TYPE process_start_time_seconds gauge
process_start_time_seconds {started}
"""


def test_predictor_sample_reads_what_the_rules_count():
    sample = trends.predictor_sample(predictor_text(10, 12, 3, 6, 4), 50.0)
    assert (sample.t, sample.requests, sample.answers, sample.errors, sample.started) == (50.0, 10, 15, 3, 1000.0)
    assert sample.buckets == ((0.01, 6), (0.1, 10), (math.inf, 10))  # explain's buckets left out


def test_app_sample_leaves_out_the_scrapes_of_metrics():
    text = """# TYPE catdog_app_request_seconds histogram
catdog_app_request_seconds_bucket{le="0.5",method="GET",route="/metrics",status_class="2xx"} 100
catdog_app_request_seconds_bucket{le="+Inf",method="GET",route="/metrics",status_class="2xx"} 100
catdog_app_request_seconds_count{method="GET",route="/metrics",status_class="2xx"} 100
catdog_app_request_seconds_sum{method="GET",route="/metrics",status_class="2xx"} 1
catdog_app_request_seconds_bucket{le="0.5",method="POST",route="/api/predict",status_class="5xx"} 1
catdog_app_request_seconds_bucket{le="+Inf",method="POST",route="/api/predict",status_class="5xx"} 2
catdog_app_request_seconds_count{method="POST",route="/api/predict",status_class="5xx"} 2
catdog_app_request_seconds_sum{method="POST",route="/api/predict",status_class="5xx"} 3
"""
    sample = trends.app_sample(text, 1.0)
    assert (sample.requests, sample.answers, sample.errors) == (2, 2, 2)
    assert sample.buckets == ((0.5, 1), (math.inf, 2))


def test_points_between_scrapes_with_a_restart_and_the_history_bound():
    history = trends.History(max_age_s=600, interval_s=60)
    scrapes = [predictor_text(0, 0, 0, 0, 0), predictor_text(60, 58, 2, 30, 30), predictor_text(120, 118, 2, 90, 30),
               predictor_text(30, 30, 0, 30, 0, started=1170.0)]  # the predictor restarted
    for i, text in enumerate(scrapes):
        history.add("predictor", trends.predictor_sample(text, 1000.0 + 60 * i))
    result = history.trends(window_s=600, step_s=60, now=1180.0)
    assert result["source"] == "memory"
    points = result["services"]["predictor"]["points"]
    assert [p["t"] for p in points] == [1060.0, 1120.0, 1180.0]
    assert [p["rate"] for p in points] == [1.0, 1.0, 0.5]  # after the restart: counted from zero
    assert [p["error_ratio"] for p in points] == [2 / 60, 0.0, 0.0]
    assert points[0]["p50_s"] == pytest.approx(0.01) and points[1]["p50_s"] == pytest.approx(0.005)
    assert points[0]["p99_s"] == pytest.approx(0.0982)
    assert result["services"]["predictor"]["uptime_s"] == 10.0
    assert result["services"]["app"] == {"points": [], "uptime_s": None, "error": None}
    coarse = history.trends(window_s=600, step_s=120, now=1180.0)["services"]["predictor"]["points"]
    assert [p["t"] for p in coarse] == [1120.0]
    for i in range(20):  # far more than 600 s / 60 s + 1 scrapes: the oldest go
        history.add("predictor", trends.predictor_sample(scrapes[0], 2000.0 + 60 * i))
    assert len(history._samples["predictor"]) == 11


def test_recorder_scrapes_the_app_in_process_and_says_why_the_predictor_has_no_point():
    history = trends.History(interval_s=1)

    def down() -> str:
        raise ConnectionError("refused")

    recorder = trends.TrendRecorder(history, down, clock=iter([100.0, 101.0]).__next__)
    recorder.scrape()
    app_metrics.REQUEST_SECONDS.labels("GET", "/api/status", "2xx").observe(0.02)
    recorder.predictor_text = lambda: predictor_text(5, 5, 0, 5, 0)
    recorder.scrape()
    result = history.trends(window_s=60, step_s=1, now=101.0)["services"]
    assert result["app"]["points"][0]["rate"] >= 1  # this process's own requests, one at least
    assert result["predictor"]["error"] is None and result["predictor"]["points"] == []  # one scrape: no point yet
    assert len(history._samples["predictor"]) == 1


def test_recorder_keeps_the_reason_a_scrape_failed():
    history = trends.History(interval_s=1)

    def down() -> str:
        raise ConnectionError("refused")

    trends.TrendRecorder(history, down, clock=lambda: 5.0).scrape()
    assert history.trends(60, 1, now=5.0)["services"]["predictor"]["error"] == "ConnectionError: refused"


def test_prometheus_that_does_not_answer_is_an_error_per_service_never_an_exception():
    result = trends.prometheus_trends(f"http://127.0.0.1:{free_port()}", 3600, 60)
    assert result["source"] == "prometheus"
    for service in ("predictor", "app"):
        assert result["services"][service]["points"] == [] and result["services"][service]["error"].startswith("Connect")
