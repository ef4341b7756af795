"""manifests/: every YAML parses, every kustomization renders (our Python renderer, cross-checked
against `kubectl kustomize` / `kustomize build` when one is installed), and every rendered object
is valid against the KServe 0.21 / Kubernetes API models, strictly enough that a typo'd field fails.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from urllib.parse import urlsplit

from catdog import deploy
from catdog.deploy import ManifestError, merge_patch, render, validate_inference_service
from catdog.deploy.kserve import to_api_model
from catdog.deploy.kustomize import _new_image
from feedback.web.routers.events import PATH as ROUTE
from tests.helpers import REPO_ROOT

MANIFESTS = REPO_ROOT / "manifests"
KUSTOMIZATIONS = sorted(p.parent.relative_to(MANIFESTS).as_posix() for p in MANIFESTS.rglob("kustomization.yaml"))
# manifests/schedules/ holds REST request bodies, not Kubernetes objects (tests/pipelines/test_schedule_specs.py);
# manifests/monitoring/ Prometheus rule files and their promtool tests (tests/manifests/test_monitoring.py)
PROMETHEUS_FILES = {"monitoring/rules.yaml", "monitoring/tests/rules_test.yaml"}
YAML_FILES = sorted(p.relative_to(MANIFESTS).as_posix() for p in MANIFESTS.rglob("*.yaml")
                    if "schedules" not in p.parts and p.relative_to(MANIFESTS).as_posix() not in PROMETHEUS_FILES)


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


# kind -> (apiVersion, model): every kind manifests/ may hold, validated against kubernetes' own
# client models (KServe's for the InferenceService). A kind missing here fails the tests rather than
# going unchecked; a Secret is deliberately absent: secrets are never checked in.
K8S_KINDS = {
    "Role": ("rbac.authorization.k8s.io/v1", "V1Role"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "V1RoleBinding"),
    "ServiceAccount": ("v1", "V1ServiceAccount"),
    "ConfigMap": ("v1", "V1ConfigMap"),
    "Service": ("v1", "V1Service"),
    "PersistentVolumeClaim": ("v1", "V1PersistentVolumeClaim"),
    "Deployment": ("apps/v1", "V1Deployment"),
}


# the Prometheus Operator's kinds (manifests/monitoring/): no client models exist; their spec fields
# and scrape-endpoint fields are checked by name (a typo'd field fails)
MONITORING_KINDS = {
    "PodMonitor": {"selector", "namespaceSelector", "podMetricsEndpoints", "jobLabel", "podTargetLabels"},
    "ServiceMonitor": {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels"},
    "PrometheusRule": {"groups"},
}
SCRAPE_ENDPOINT_FIELDS = {"port", "targetPort", "portNumber", "path", "scheme", "interval", "scrapeTimeout",
                          "relabelings", "metricRelabelings", "honorLabels"}


def _validate_monitoring(doc: dict) -> dict:
    name = f"{doc['kind']} {doc.get('metadata', {}).get('name')}"
    if doc.get("apiVersion") != "monitoring.coreos.com/v1":
        raise ManifestError(f"{name}: apiVersion {doc.get('apiVersion')!r}, expected 'monitoring.coreos.com/v1'")
    unknown = set(doc["spec"]) - MONITORING_KINDS[doc["kind"]]
    for endpoint in doc["spec"].get("podMetricsEndpoints", []) + doc["spec"].get("endpoints", []):
        unknown |= set(endpoint) - SCRAPE_ENDPOINT_FIELDS
    if unknown:
        raise ManifestError(f"{name}: unknown fields {sorted(unknown)}")
    return doc


def _validate(doc: dict):
    if doc["kind"] == "InferenceService":
        return validate_inference_service(doc)
    if doc["kind"] in MONITORING_KINDS:
        return _validate_monitoring(doc)
    if doc["kind"] not in K8S_KINDS:
        raise ManifestError(f"no validation for kind {doc['kind']!r} (add it to K8S_KINDS; never a Secret)")
    api_version, model = K8S_KINDS[doc["kind"]]
    if doc.get("apiVersion") != api_version:
        raise ManifestError(f"{doc['kind']} {doc.get('metadata', {}).get('name')}: apiVersion "
                            f"{doc.get('apiVersion')!r}, expected {api_version!r}")
    return to_api_model(doc, model)


def _base_isvc() -> dict:
    (doc,) = render(MANIFESTS / "base")
    return doc


def test_the_expected_layout_exists():
    assert {"base", "overlays/dev", "overlays/prod", "overlays/canary", "rbac",
            "feedback", "feedback/app", "feedback/overlays/cloudsql"} <= set(KUSTOMIZATIONS)


@pytest.mark.parametrize("name", YAML_FILES)
def test_every_yaml_parses_into_kubernetes_objects(name):
    docs = [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d is not None]
    assert docs, name
    for doc in docs:
        assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), name


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_every_kustomization_renders_valid_objects(folder):
    docs = render(MANIFESTS / folder)
    assert docs
    for doc in docs:
        _validate(doc)


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_python_render_equals_kustomize(folder):
    command = _kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed: only the Python renderer is tested")
    out = subprocess.run([*command, str(MANIFESTS / folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d is not None]
    ours = render(MANIFESTS / folder)
    # kustomize sorts what it prints (by kind, then name: a PersistentVolumeClaim before the
    # Deployment that mounts it); our renderer keeps the kustomization's order. Same objects, each
    # identical, is what matters; one identity is never rendered twice.
    assert len({_identity(d) for d in ours}) == len(ours)
    assert sorted(ours, key=_identity) == sorted(theirs, key=_identity)


def _identity(doc: dict) -> tuple[str, str, str, str]:
    meta = doc.get("metadata", {})
    return doc["apiVersion"], doc["kind"], meta.get("namespace", ""), meta.get("name", "")


def test_base_inference_service():
    doc = _base_isvc()
    isvc = validate_inference_service(doc)
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == ("serving.kserve.io/v1beta1", "InferenceService", "catdog")
    predictor = isvc.spec.predictor
    assert predictor.min_replicas == 1 and predictor.max_replicas >= 1
    assert predictor.canary_traffic_percent is None
    (container,) = predictor.containers
    assert container.name == "kserve-container"  # the only container KServe's storage initializer serves
    assert container.image.startswith("catdog-predictor")
    assert {e.name: e.value for e in container.env}["STORAGE_URI"].startswith("gs://")
    assert container.args[:2] == ["--model", "/mnt/models"]  # where the storage initializer puts it
    assert [p.container_port for p in container.ports] == [8080]
    assert container.resources.requests == {"cpu": "1", "memory": "512Mi"}
    assert container.resources.limits == {"cpu": "1", "memory": "512Mi"}
    assert (container.readiness_probe.http_get.path, container.readiness_probe.http_get.port) == ("/v2/health/ready", 8080)
    assert container.liveness_probe.http_get.path == "/v2/health/live"


@pytest.mark.filterwarnings("ignore:Using `httpx`")
def test_container_args_are_our_servers_and_probes_are_its_routes(tmp_path):
    """The args parse with serving.server's parser, and the probes hit the app's health routes
    (live: 200 at once; ready: 503 until a model is loaded, never 404)."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.server import build_parser
    from tests.serving_fixtures import make_model

    container = _base_isvc()["spec"]["predictor"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert (args.model, args.model_name, args.port) == ("/mnt/models", "catdog", 8080)
    app = create_app(make_model(tmp_path), vertex_predict_route=deploy.VERTEX_PREDICT_ROUTE,
                     vertex_health_route=deploy.VERTEX_HEALTH_ROUTE)
    with TestClient(app) as client:
        assert client.get(container["livenessProbe"]["httpGet"]["path"]).status_code == 200
        assert client.get(container["readinessProbe"]["httpGet"]["path"]).status_code == 503  # not loaded
        assert client.get("/v2/health/nope").status_code == 404  # (a wrong path would be a 404)
        assert client.post(deploy.VERTEX_PREDICT_ROUTE, json={"instances": []}).status_code != 404


def test_overlays():
    dev, prod, canary = (render(MANIFESTS / "overlays" / o)[0] for o in ("dev", "prod", "canary"))
    assert dev["metadata"]["namespace"] == "catdog-dev"
    assert (dev["spec"]["predictor"]["minReplicas"], dev["spec"]["predictor"]["maxReplicas"]) == (1, 1)
    assert "canaryTrafficPercent" not in dev["spec"]["predictor"]
    assert prod["metadata"]["namespace"] == "catdog"
    assert (prod["spec"]["predictor"]["minReplicas"], prod["spec"]["predictor"]["maxReplicas"]) == (2, 5)
    assert prod["spec"]["predictor"]["containers"][0]["image"].endswith("/catdog-predictor:0.1.0")
    assert "canaryTrafficPercent" not in prod["spec"]["predictor"]
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    # the canary overlay is prod plus the canary, nothing else
    assert merge_patch(prod, {"spec": {"predictor": {"canaryTrafficPercent": 10}}}) == canary
    # overlays patch maps and scalars only: the container list is the base's (images aside)
    base_container = _base_isvc()["spec"]["predictor"]["containers"][0]
    assert {**prod["spec"]["predictor"]["containers"][0], "image": base_container["image"]} == base_container


def test_the_payload_logging_overlay_sends_to_the_apps_sink():
    prod = render(MANIFESTS / "overlays" / "prod")[0]
    (logging,) = render(MANIFESTS / "overlays" / "payload-logging")
    validate_inference_service(logging)
    logger = logging["spec"]["predictor"]["logger"]
    assert logger["mode"] == "all"
    # the feedback app's Service, in the namespace of both, and its sink's route
    (service,) = [d for d in render(MANIFESTS / "feedback") if d["kind"] == "Service"]
    url = urlsplit(logger["url"])
    assert url.hostname == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert url.path == ROUTE and url.port is None and service["spec"]["ports"][0]["port"] == 80
    assert logging["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert url.password == "LOGGER_TOKEN"  # a placeholder: the real token is never checked in
    assert service["spec"]["sessionAffinity"] == "ClientIP"  # both events of an inference reach one replica
    # prod plus the logger, nothing else
    assert merge_patch(prod, {"spec": {"predictor": {"logger": logger}}}) == logging


# --- a typo must fail -------------------------------------------------------------------------

def _set(doc: dict, path: str, value=None, rename: str | None = None) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if rename is not None:
        node[rename] = node.pop(last)
    elif value is None:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    "path, value, rename, expected",
    [
        ("spec.predictor.minReplicas", None, "minReplica", "spec.predictor: unknown field(s) ['minReplica']"),
        ("spec.predictor", None, "predicter", "spec: unknown field(s) ['predicter']"),
        ("spec.predictor.containers.0.image", None, "imagee", "spec.predictor.containers[0]: unknown field(s) ['imagee']"),
        ("spec.predictor.containers.0.readinessProbe.httpGet.path", None, "paht", "httpGet: unknown field(s) ['paht']"),
        ("spec.predictor.containers.0.resources.limits", None, "limts", "resources: unknown field(s) ['limts']"),
        ("spec.predictor.containers.0.ports.0.containerPort", "8080", None, "containerPort: expected int"),
        ("spec.predictor.canaryTrafficPercent", "10%", None, "canaryTrafficPercent: expected int"),
        ("spec.predictor.containers.0.resources.limits.cpu", 1, None, "cpu: expected str"),
        ("spec.predictor.containers.0.name", None, None, "name"),  # required by V1Container
        ("spec.predictor.canaryTrafficPercent", 120, None, "canaryTrafficPercent 120"),
        ("spec.predictor.minReplicas", 9, None, "minReplicas 9 > maxReplicas"),
        ("kind", "InferenceServce", None, "expected serving.kserve.io/v1beta1 InferenceService"),
    ],
)
def test_typos_and_bad_values_fail_naming_the_field(path, value, rename, expected):
    with pytest.raises(ManifestError) as info:
        validate_inference_service(_set(_base_isvc(), path, value, rename))
    assert expected in str(info.value)


def test_a_typo_in_an_overlay_patch_fails(tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(
        {"resources": [str(MANIFESTS / "base")], "patches": [{"path": "p.yaml"}]}))
    (overlay / "p.yaml").write_text(yaml.safe_dump({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "catdog"},
        "spec": {"predictor": {"maxReplica": 4}}}))
    (doc,) = render(overlay)
    with pytest.raises(ManifestError, match=r"unknown field\(s\) \['maxReplica'\]"):
        validate_inference_service(doc)


# --- the renderer -------------------------------------------------------------------------------

def test_merge_patch_semantics():
    target = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    assert merge_patch(target, {"a": {"c": [3]}, "d": None, "e": {"f": 2}}) == {"a": {"b": 1, "c": [3]}, "e": {"f": 2}}
    assert target == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # not modified


def test_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [str(MANIFESTS / "base")],
                                                                 "commonLabels": {"a": "b"}}))
    with pytest.raises(ManifestError, match="unsupported kustomization key.*commonLabels"):
        render(tmp_path)


def test_patch_matching_nothing_fails(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [str(MANIFESTS / "base")],
        "patches": [{"patch": "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n"
                              "metadata: {name: dogcat}\nspec: {predictor: {minReplicas: 2}}\n"}]}))
    with pytest.raises(ManifestError, match="matches no resource"):
        render(tmp_path)


def test_missing_manifest_fails(tmp_path):
    with pytest.raises(ManifestError, match="no manifest"):
        render(tmp_path / "nope")
    with pytest.raises(ManifestError, match="without a kustomization"):
        render(tmp_path)


def test_images_transformer_keeps_unmatched_images():
    assert _new_image("catdog-predictor:0.1.0", [{"name": "catdog-predictor", "newTag": "0.2"}]) == "catdog-predictor:0.2"
    assert _new_image("reg:5000/catdog-predictor", [{"name": "reg:5000/catdog-predictor", "newName": "x/y"}]) == "x/y"
    assert _new_image("other:1", [{"name": "catdog-predictor", "newTag": "0.2"}]) == "other:1"
    assert _new_image("catdog-predictor:1", [{"name": "catdog-predictor", "digest": "sha256:ab"}]) == "catdog-predictor@sha256:ab"
