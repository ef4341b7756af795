"""Debian's Prometheus against a running predictor and feedback app: it scrapes both (/metrics),
evaluates manifests/monitoring/rules.yaml, and answers the recording rules and every dashboard
query through its HTTP API (/api/v1/query). One Prometheus, one predictor, one app for the module."""

from __future__ import annotations

import time

import pytest
import requests

from ops import monitoring_manifests
from tests.feedback_fixtures import feedback_settings, photo, predictor, running_app  # noqa: F401
from tests.helpers import REPO_ROOT
from tests.prometheus_server import query, run_prometheus

RULES = REPO_ROOT / "manifests" / "monitoring" / "rules.yaml"
WAIT_S = 90  # for the first scrapes and rule evaluations (1 s apart)


def host_port(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


@pytest.fixture(scope="module")
def feedback_app(tmp_path_factory, predictor):
    with running_app(feedback_settings(tmp_path_factory.mktemp("app"), predictor.url)) as client:
        yield client


@pytest.fixture(scope="module")
def prometheus(prometheus_binary, tmp_path_factory, predictor, feedback_app):
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "catdog-predictor", "static_configs": [{"targets": [host_port(predictor.url)]}]},
            {"job_name": "catdog-feedback", "static_configs": [{"targets": [host_port(feedback_app.url)]}]},
        ],
    }
    with run_prometheus(prometheus_binary, tmp_path_factory.mktemp("prometheus"), config) as url:
        yield url


def wait_for(url: str, expr: str, check, traffic=None) -> list[dict]:
    """Query `expr` until check(result) holds (calling traffic() between tries); fails after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = query(url, expr)
        if check(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{expr}: still {result} after {WAIT_S} s")
        if traffic is not None:
            traffic()
        time.sleep(0.5)


def test_prometheus_scrapes_both_services_and_answers_recording_rules(prometheus, feedback_app):
    up = wait_for(prometheus, "up", lambda r: len(r) == 2 and all(s["value"][1] == "1" for s in r))
    assert {s["metric"]["job"] for s in up} == {"catdog-predictor", "catdog-feedback"}
    seeds = iter(range(1000, 2000))

    def traffic():  # each upload: one app request and one inference request of the predictor
        assert feedback_app.predict(photo(next(seeds))).status_code == 200

    predictor_rate = wait_for(prometheus, "job:catdog_inference_requests:rate5m",
                              lambda r: r and float(r[0]["value"][1]) > 0, traffic)
    assert predictor_rate[0]["metric"] == {"__name__": "job:catdog_inference_requests:rate5m", "job": "catdog-predictor"}
    app_rate = wait_for(prometheus, "job:catdog_app_requests:rate5m", lambda r: r and float(r[0]["value"][1]) > 0, traffic)
    assert app_rate[0]["metric"]["job"] == "catdog-feedback"
    p99 = wait_for(prometheus, 'job_verb:catdog_inference_seconds:p99_5m{verb="predict"}',
                   lambda r: r and r[0]["value"][1] not in ("NaN",), traffic)
    assert 0 < float(p99[0]["value"][1]) < 30
    errors = wait_for(prometheus, "job:catdog_app_errors:ratio_rate5m", lambda r: bool(r))
    assert float(errors[0]["value"][1]) == 0  # no 5xx
    queue = wait_for(prometheus, "job:catdog_app_review_queue_size:max", lambda r: r and float(r[0]["value"][1]) > 0)
    assert queue[0]["metric"]["job"] == "catdog-feedback"


def test_every_rule_evaluates_and_no_alert_fires_for_a_healthy_pair(prometheus, feedback_app):
    wait_for(prometheus, "job:catdog_app_requests:rate5m", lambda r: bool(r),
             lambda: feedback_app.predict(photo(3000)))
    groups = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 24
    assert [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []
    firing = [rule["name"] for rule in rules if rule["type"] == "alerting" and rule["state"] != "inactive"]
    assert firing == []


def test_every_dashboard_query_is_valid_promql_with_data_where_traffic_went(prometheus, feedback_app):
    wait_for(prometheus, "job:catdog_app_requests:rate5m", lambda r: bool(r), lambda: feedback_app.predict(photo(3001)))
    text = (REPO_ROOT / "manifests" / "monitoring" / monitoring_manifests.DASHBOARD_FILE).read_text()
    queries = monitoring_manifests.dashboard_queries(text)
    answered = {expr: query(prometheus, expr) for expr in queries}  # raises on a query Prometheus refuses
    assert answered['sum(up{job="catdog-predictor"})'][0]["value"][1] == "1"
    assert float(answered['time() - max(process_start_time_seconds{job="catdog-feedback"})'][0]["value"][1]) > 0


def test_trends_from_prometheus_match_the_recording_rules(prometheus, feedback_app):
    from feedback.monitoring import trends

    wait_for(prometheus, "job:catdog_inference_requests:rate5m", lambda r: r and float(r[0]["value"][1]) > 0,
             lambda: feedback_app.predict(photo(3002)))
    result = trends.prometheus_trends(prometheus, window_s=120, step_s=2)
    assert result["source"] == "prometheus"
    for service in ("predictor", "app"):
        answer = result["services"][service]
        assert answer["error"] is None and answer["uptime_s"] > 0
        assert answer["points"] and answer["points"][-1]["rate"] > 0
        assert answer["points"][-1]["error_ratio"] == 0
    assert result["services"]["predictor"]["points"][-1]["p99_s"] > 0


def test_the_app_with_prometheus_url_answers_its_trends_from_it(prometheus, feedback_app, tmp_path):
    wait_for(prometheus, "job:catdog_inference_requests:rate5m", lambda r: r and float(r[0]["value"][1]) > 0,
             lambda: feedback_app.predict(photo(3003)))
    settings = feedback_settings(tmp_path, "http://127.0.0.1:9", prometheus_url=prometheus)
    with running_app(settings) as app:  # another app: reads what Prometheus scraped of the pair
        assert app.service.trends.recorder is None
        answer = app.get("/api/trends", params={"window": "1h"}).json()
    assert (answer["source"], answer["prometheus_url"], answer["step_s"]) == ("prometheus", prometheus, 60)
    for service in ("predictor", "app"):
        trend = answer["services"][service]
        assert trend["error"] is None and trend["uptime_s"] > 0
        assert trend["points"] and trend["points"][-1]["rate"] > 0
