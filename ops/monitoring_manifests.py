"""The generated files of manifests/monitoring/: the Grafana dashboard and the PrometheusRule.

    python -m ops.monitoring_manifests [--out manifests/monitoring]     (`make monitoring`)
    dashboard() -> grafanalib Dashboard      dashboard_json() -> str      prometheus_rule(rules_text) -> str

Both are checked in and drift-tested (tests/manifests/test_monitoring.py regenerates them in a
temporary folder and compares), as compiled/ is for the pipeline:
- grafana-dashboard.json: built with grafanalib; every panel queries the recording rules of
  rules.yaml (request rate, error ratio, p50/p90/p99 over 5 minutes) or the raw metrics of
  serving/metrics.py and feedback/monitoring/metrics.py. Its datasource is a dashboard variable
  (`datasource`, any Prometheus), so it imports into any Grafana.
- prometheusrule.yaml: rules.yaml (the one hand-written source, tested with promtool) wrapped into
  a PrometheusRule for the Prometheus Operator.

Why here (ops/, a top-level folder outside the packages that images install): the generator is
for operators, needs grafanalib (a dev dependency), and describes both services; serving/ and
feedback/ are the services themselves, and a Python file among manifests/ YAML would not be importable.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    Dashboard,
    GridPos,
    RowPanel,
    Stat,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
MONITORING = REPO_ROOT / "manifests" / "monitoring"
RULES = "rules.yaml"
DASHBOARD_FILE = "grafana-dashboard.json"
PROMETHEUS_RULE_FILE = "prometheusrule.yaml"
DATASOURCE = "${datasource}"
PREDICTOR = 'job="catdog-predictor"'
APP = 'job="catdog-feedback"'
WIDTH = 24  # Grafana's grid is 24 units wide


def _target(expr: str, legend: str = "", ref: str = "A") -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, datasource=DATASOURCE)


def _series(title: str, exprs: list[tuple[str, str]], unit: str = "short", description: str = "") -> TimeSeries:
    return TimeSeries(title=title, description=description or None, dataSource=DATASOURCE, unit=unit,
                      targets=[_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(exprs)])


def _stat(title: str, expr: str, unit: str = "none", legend: str = "", description: str = "") -> Stat:
    return Stat(title=title, description=description or None, dataSource=DATASOURCE, format=unit,
                reduceCalc="lastNotNull", targets=[_target(expr, legend)])


def _quantiles(rule: str, selector: str, legend_prefix: str = "") -> list[tuple[str, str]]:
    return [(f"{rule.format(q=q)}{{{selector}}}", f"{legend_prefix}p{q}") for q in (50, 90, 99)]


def _layout(rows: list[tuple[str, list[list]]]) -> list:
    """Rows of panel lines, each line sharing the width equally; panels 8 units high."""
    panels, y = [], 0
    for title, lines in rows:
        panels.append(RowPanel(title=title, gridPos=GridPos(h=1, w=WIDTH, x=0, y=y)))
        y += 1
        for line in lines:
            width = WIDTH // len(line)
            for i, panel in enumerate(line):
                panel.gridPos = GridPos(h=8 if isinstance(panel, TimeSeries) else 4, w=width, x=i * width, y=y)
                panels.append(panel)
            y += 8 if any(isinstance(p, TimeSeries) for p in line) else 4
    return panels


def predictor_panels() -> list[list]:
    return [
        [_stat("Predictor targets up", f"sum(up{{{PREDICTOR}}})"),
         _stat("Model served", f"max by (model_version) (catdog_model_info{{{PREDICTOR}}})", legend="version {{model_version}}",
               description="1 per model version loaded (catdog_model_info)"),
         _stat("Predictor uptime", f"time() - max(process_start_time_seconds{{{PREDICTOR}}})", unit="s"),
         _stat("Predictor error ratio (5 min)", f"job:catdog_http_errors:ratio_rate5m{{{PREDICTOR}}}", unit="percentunit")],
        [_series("Predictor requests per second", [
            (f"job:catdog_inference_requests:rate5m{{{PREDICTOR}}}", "inference requests"),
            (f"job:catdog_http_responses:rate5m{{{PREDICTOR}}}", "all HTTP answers (probes included)")], unit="reqps"),
         _series("Predictor 5xx ratio", [(f"job:catdog_http_errors:ratio_rate5m{{{PREDICTOR}}}", "5xx / all")],
                 unit="percentunit", description="Alert CatdogPredictorErrorRatioHigh above 1 % for 10 minutes"),
         _series("Predictor inference time", _quantiles("job_verb:catdog_inference_seconds:p{q}_5m", PREDICTOR,
                                                         "{{verb}} "), unit="s",
                 description="Decode + preprocess + ONNX Runtime per request; p99 budget 250 ms (verb predict)")],
    ]


def app_panels() -> list[list]:
    return [
        [_stat("App targets up", f"sum(up{{{APP}}})"),
         _stat("App uptime", f"time() - max(process_start_time_seconds{{{APP}}})", unit="s"),
         _stat("App error ratio (5 min)", f"job:catdog_app_errors:ratio_rate5m{{{APP}}}", unit="percentunit"),
         _stat("Review queue", f"job:catdog_app_review_queue_size:max{{{APP}}}")],
        [_series("App requests per second by route", [
            (f"sum by (route) (job_route_status_class:catdog_app_requests:rate5m{{{APP}}})", "{{route}}")], unit="reqps"),
         _series("App 5xx ratio", [(f"job:catdog_app_errors:ratio_rate5m{{{APP}}}", "5xx / all")], unit="percentunit",
                 description="Alert CatdogAppErrorRatioHigh above 1 % for 10 minutes"),
         _series("App request time", _quantiles("job:catdog_app_request_seconds:p{q}_5m", APP), unit="s",
                 description="All routes but /metrics; p99 budget 1 s")],
    ]


def model_panels() -> list[list]:
    return [
        [_stat("Drift flagged", f"max(catdog_app_drift_flagged{{{APP}}})",
               description="1: the champion's recent confidences differ from its test split's (KS test, p < 0.01)"),
         _stat("Drift p-value", f"max(catdog_app_drift_p_value{{{APP}}})"),
         _stat("Accuracy on people's verdicts", f"max by (model_version) (catdog_app_verdict_accuracy{{{APP}}})",
               unit="percentunit", legend="model {{model_version}}", description="Alert under 85 % with 50 verdicts or more"),
         _stat("Predictions with a verdict", f"max by (model_version) (catdog_app_verdict_predictions{{{APP}}})",
               legend="model {{model_version}}")],
        [_series("Uploads and verdicts per minute", [
            (f"sum by (source) (rate(catdog_app_uploads_total{{{APP}}}[5m])) * 60", "uploads {{source}}"),
            (f"sum by (outcome) (rate(catdog_app_verdicts_total{{{APP}}}[5m])) * 60", "verdicts {{outcome}}"),
            (f"sum by (outcome) (rate(catdog_app_logger_events_total{{{APP}}}[5m])) * 60", "logger events {{outcome}}")]),
         _series("Review queue", [(f"job:catdog_app_review_queue_size:max{{{APP}}}", "photos waiting")]),
         _series("Retraining runs by state", [(f"job_state:catdog_app_training_runs:max{{{APP}}}", "{{state}}")])],
    ]


def dashboard() -> Dashboard:
    datasource = Template(name="datasource", query="prometheus", type="datasource", label="Prometheus",
                          default="Prometheus")
    return Dashboard(
        title="catdog: predictor and feedback app", uid="catdog-overview", tags=["catdog", "kserve"],
        description="Generated by ops/monitoring_manifests.py (make monitoring); rules in manifests/monitoring/rules.yaml",
        timezone="utc", time=Time("now-6h", "now"), refresh="30s", templating=Templating([datasource]),
        panels=_layout([("Predictor (KServe)", predictor_panels()), ("Feedback app", app_panels()),
                        ("Model health and the feedback loop", model_panels())]),
    ).auto_panel_ids()


def dashboard_json() -> str:
    return json.dumps(dashboard().to_json_data(), sort_keys=True, indent=2, cls=DashboardEncoder) + "\n"


def dashboard_queries(text: str) -> list[str]:
    """Every PromQL expression of a dashboard's JSON (for the tests: they must all evaluate)."""
    return [target["expr"] for panel in json.loads(text)["panels"] for target in panel.get("targets", [])]


class _Literal(str):
    pass


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes _Literal strings as literal blocks (|)."""


_Dumper.add_representer(_Literal, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|"))


def prometheus_rule(rules_text: str) -> str:
    """rules.yaml as a PrometheusRule (multi-line expressions kept as literal blocks)."""
    groups = yaml.safe_load(rules_text)["groups"]
    for group in groups:
        for rule in group["rules"]:
            if "\n" in rule["expr"]:
                rule["expr"] = _Literal(rule["expr"])
    document = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                "metadata": {"name": "catdog", "labels": {"app.kubernetes.io/part-of": "catdog-pipelines"}},
                "spec": {"groups": groups}}
    header = f"# Generated by `make monitoring` from {RULES}: edit that file, never this one.\n"
    return header + yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120)


def write(out: Path, source: Path = MONITORING) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / DASHBOARD_FILE, out / PROMETHEUS_RULE_FILE]
    written[0].write_text(dashboard_json())
    written[1].write_text(prometheus_rule((source / RULES).read_text()))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MONITORING, help="folder to write into (default: %(default)s)")
    for path in write(parser.parse_args(argv).out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
