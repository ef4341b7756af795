"""manifests/monitoring/: the rules pass `promtool test rules`, every alert has a firing test, the
generated files match their source (as compiled/ does), and the scrape objects select what
manifests/base and manifests/feedback deploy, under the job names the rules select."""

from __future__ import annotations

import json
import subprocess

import yaml

from ops import monitoring_manifests
from tests.helpers import REPO_ROOT

MONITORING = REPO_ROOT / "manifests" / "monitoring"
RULES_TEST = MONITORING / "tests" / "rules_test.yaml"


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_and_tests_the_rules(promtool):
    check = subprocess.run([promtool, "check", "rules", str(MONITORING / "rules.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    result = subprocess.run([promtool, "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_test_where_it_fires():
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    firing = {case["alertname"] for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alerts == firing
    assert len(alerts) == 10


def test_generated_files_match_their_source(tmp_path):
    monitoring_manifests.write(tmp_path)
    for name in (monitoring_manifests.DASHBOARD_FILE, monitoring_manifests.PROMETHEUS_RULE_FILE):
        assert (tmp_path / name).read_text() == (MONITORING / name).read_text(), f"run `make monitoring`: {name} is stale"


def test_prometheus_rule_holds_rules_yaml():
    document = yaml.safe_load((MONITORING / monitoring_manifests.PROMETHEUS_RULE_FILE).read_text())
    assert document["kind"] == "PrometheusRule"
    assert document["spec"]["groups"] == yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"]


def test_dashboard_queries_name_recording_rules_and_metrics_that_exist():
    queries = monitoring_manifests.dashboard_queries((MONITORING / monitoring_manifests.DASHBOARD_FILE).read_text())
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = {name for query in queries for name in recorded if name in query}
    assert used == recorded - {"job:catdog_app_requests:rate5m"}  # the per-route rate shows it, split
    dashboard = json.loads((MONITORING / monitoring_manifests.DASHBOARD_FILE).read_text())
    assert {panel["datasource"] for panel in dashboard["panels"] if panel["type"] != "row"} == {"${datasource}"}


def test_scrape_objects_select_the_deployed_services_under_the_rules_job_names():
    docs = {path.name: yaml.safe_load(path.read_text()) for path in MONITORING.glob("*monitor-*.yaml")}
    predictor, app = docs["podmonitor-predictor.yaml"], docs["servicemonitor-feedback.yaml"]
    isvc = yaml.safe_load((REPO_ROOT / "manifests" / "base" / "inferenceservice.yaml").read_text())
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
    port = isvc["metadata"]["annotations"]["prometheus.kserve.io/port"]
    assert int(port) == isvc["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"]
    # KServe labels the predictor's pods with the InferenceService's name
    assert predictor["spec"]["selector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    endpoint = predictor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["targetPort"] == int(port) and endpoint["path"] == "/metrics"
    service = yaml.safe_load((REPO_ROOT / "manifests" / "feedback" / "app" / "service.yaml").read_text())
    assert app["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert app["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    jobs = {doc["metadata"]["name"]: next(r["replacement"] for r in (doc["spec"].get("podMetricsEndpoints")
                                                                       or doc["spec"]["endpoints"])[0]["relabelings"]
                                          if r["targetLabel"] == "job") for doc in (predictor, app)}
    assert jobs == {"catdog-predictor": "catdog-predictor", "catdog-feedback": "catdog-feedback"}
    selected = {job for rule in rules() for job in ("catdog-predictor", "catdog-feedback") if f'job="{job}"' in rule["expr"]}
    assert selected == set(jobs.values())
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {*docs, monitoring_manifests.PROMETHEUS_RULE_FILE}
