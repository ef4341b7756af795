"""catdog.deploy and the deploy component: local, KServe and Vertex AI targets.

KServe and Vertex are tested at the client boundary: a fake kubernetes CustomObjectsApi (and the
real CustomObjectsApi over a fake REST transport), and google.cloud.aiplatform's init / Model /
Endpoint monkeypatched, with every call's arguments checked against the real SDK signatures.
Model folders on gs:// live in the GCS emulator (tests/conftest.py); the model is the tiny real
one from tests/serving_fixtures.py.
"""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes.client.exceptions import ApiException

from catdog import deploy, storage
from catdog.deploy import DeployError, ManifestError, merge_patch
from catdog.registry import ModelRegistry, RegistryError
from pipelines.config import ConfigError, build_config
from tests.serving_fixtures import champion_registry, tiny_model  # noqa: F401 (fixtures)

GROUP_VERSION_PLURAL = ("serving.kserve.io", "v1beta1", "inferenceservices")


@pytest.fixture
def gcs_model(gcs, tiny_model):  # noqa: F811
    """The tiny model's model.onnx + metadata.json at gs://.../registry/versions/7."""
    uri = gcs.uri("registry", "versions", "7")
    for name in ("model.onnx", "metadata.json"):
        storage.write_bytes(storage.join(uri, name), (tiny_model / name).read_bytes())
    return uri


# --- KServe: a fake CustomObjectsApi -------------------------------------------------------------

class FakeCustomObjects:
    """Records every call; stores objects; merge-patches like the API server; can fail on demand."""

    def __init__(self, existing: dict | None = None, fail: dict[str, Exception] | None = None, statuses=()):
        self.objects = {}
        if existing is not None:
            self.objects[(existing["metadata"]["namespace"], existing["metadata"]["name"])] = copy.deepcopy(existing)
        self.fail = fail or {}
        self.calls: list[tuple] = []
        self.statuses = list(statuses)  # status dicts the next get()s see (after a create/patch)

    def _check(self, verb, group, version, plural):
        assert (group, version, plural) == GROUP_VERSION_PLURAL
        if verb in self.fail:
            raise self.fail[verb]

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", namespace, name))
        self._check("get", group, version, plural)
        if (namespace, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        obj = copy.deepcopy(self.objects[(namespace, name)])
        if self.statuses:
            obj["status"] = self.statuses.pop(0)
        return obj

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kwargs):
        self.calls.append(("create", namespace, copy.deepcopy(body), kwargs))
        self._check("create", group, version, plural)
        stored = merge_patch(body, {"metadata": {"generation": 1}})
        self.objects[(namespace, body["metadata"]["name"])] = stored
        return copy.deepcopy(stored)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body, **kwargs):
        self.calls.append(("patch", namespace, name, copy.deepcopy(body), kwargs))
        self._check("patch", group, version, plural)
        old = self.objects[(namespace, name)]
        stored = merge_patch(old, body)
        stored["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        self.objects[(namespace, name)] = stored
        return copy.deepcopy(stored)

    @property
    def verbs(self) -> list[str]:
        return [c[0] for c in self.calls]


def expected_body(model_uri: str, canary: int | None = None, name="catdog", namespace="catdog", manifest="manifests/base") -> dict:
    (body,) = deploy.render(manifest)
    body["metadata"].update(name=name, namespace=namespace)
    container = body["spec"]["predictor"]["containers"][0]
    container["env"] = [{"name": "STORAGE_URI", "value": model_uri}]
    if canary is not None:
        body["spec"]["predictor"]["canaryTrafficPercent"] = canary
    return body


def existing_isvc(storage_uri="gs://b/registry/versions/6", canary=None) -> dict:
    body = expected_body(storage_uri, canary)
    body["metadata"].update(generation=4, resourceVersion="123")
    body["status"] = {"conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 4}
    return body


def test_kserve_creates_when_absent(gcs_model):
    api = FakeCustomObjects()
    where = deploy.deploy_kserve(gcs_model, api=api)
    assert api.verbs == ["get", "create"]
    _, namespace, body, kwargs = api.calls[1]
    assert namespace == "catdog"
    assert body == expected_body(gcs_model)
    assert kwargs == {"field_validation": "Strict"}
    assert "canaryTrafficPercent" not in body["spec"]["predictor"]
    assert where == f"kserve: InferenceService catdog/catdog created -> {gcs_model}"


def test_kserve_patches_when_present_and_clears_an_old_canary(gcs_model):
    api = FakeCustomObjects(existing=existing_isvc(canary=10))
    where = deploy.deploy_kserve(gcs_model, api=api)
    assert api.verbs == ["get", "patch"]
    _, namespace, name, patch, kwargs = api.calls[1]
    assert (namespace, name, kwargs) == ("catdog", "catdog", {"field_validation": "Strict"})
    expected = expected_body(gcs_model)
    expected["spec"]["predictor"]["canaryTrafficPercent"] = None  # JSON merge patch: null deletes
    assert patch == expected
    stored = api.objects[("catdog", "catdog")]
    assert stored["spec"]["predictor"]["containers"][0]["env"] == [{"name": "STORAGE_URI", "value": gcs_model}]
    assert "canaryTrafficPercent" not in stored["spec"]["predictor"]  # null removed the old canary
    assert "patched" in where


def test_kserve_canary_percent(gcs_model):
    api = FakeCustomObjects(existing=existing_isvc())
    where = deploy.deploy_kserve(gcs_model, name="catdog", namespace="catdog", canary_percent=25, api=api)
    patch = api.calls[1][3]
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert patch["spec"]["predictor"]["containers"][0]["env"][0] == {"name": "STORAGE_URI", "value": gcs_model}
    assert api.objects[("catdog", "catdog")]["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert "canary: 25%" in where


def test_kserve_overlay_name_namespace_and_image(gcs_model):
    api = FakeCustomObjects()
    deploy.deploy_kserve(gcs_model, name="catdog-b", namespace="ml", manifest="manifests/overlays/canary",
                         image="europe-docker.pkg.dev/p/r/catdog-predictor:0.2.0", api=api)
    body = api.calls[1][2]
    assert (body["metadata"]["name"], body["metadata"]["namespace"]) == ("catdog-b", "ml")
    predictor = body["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["canaryTrafficPercent"]) == (2, 5, 10)
    assert predictor["containers"][0]["image"] == "europe-docker.pkg.dev/p/r/catdog-predictor:0.2.0"
    assert api.calls[0] == ("get", "ml", "catdog-b")


def test_kserve_waits_for_the_new_generation(gcs_model):
    ready = {"conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 5}
    api = FakeCustomObjects(existing=existing_isvc())
    api.statuses = [existing_isvc()["status"], ready]  # the existence check, then the first poll
    where = deploy.deploy_kserve(gcs_model, ready_timeout_s=60, api=api)
    assert api.verbs == ["get", "patch", "get"]
    assert where.endswith(f"patched -> {gcs_model}; ready")


def test_wait_until_ready_ignores_the_old_generation_being_ready():
    old_ready = {"conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 4}
    new_ready = {"conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": 5}
    api = FakeCustomObjects(existing=existing_isvc())
    api.statuses = [old_ready, old_ready, new_ready]
    naps, clock = [], iter(range(100))
    obj = deploy.wait_until_ready(api, "catdog", "catdog", 5, timeout_s=50, poll_s=1,
                                  clock=lambda: next(clock), sleep=naps.append)
    assert obj["status"] == new_ready and naps == [1, 1]


def test_kserve_wait_times_out_with_the_conditions():
    failing = {"conditions": [{"type": "Ready", "status": "False", "reason": "RevisionFailed",
                               "message": "container crashed"}], "observedGeneration": 5}
    api = FakeCustomObjects(existing=existing_isvc())
    api.statuses = [failing] * 10
    clock = iter(range(0, 1000, 10))
    with pytest.raises(TimeoutError, match="RevisionFailed container crashed"):
        deploy.wait_until_ready(api, "catdog", "catdog", 5, timeout_s=30, clock=lambda: next(clock),
                                sleep=lambda s: None)


# --- KServe failures: nothing else is called, the error propagates --------------------------------

def test_kserve_patch_failure_propagates_and_nothing_else_is_called(gcs_model):
    api = FakeCustomObjects(existing=existing_isvc(), fail={"patch": ApiException(status=422, reason="Invalid")})
    before = copy.deepcopy(api.objects)
    with pytest.raises(ApiException) as info:
        deploy.deploy_kserve(gcs_model, canary_percent=10, api=api)
    assert info.value.status == 422
    assert api.verbs == ["get", "patch"]
    assert api.objects == before


def test_kserve_get_failure_other_than_404_propagates(gcs_model):
    api = FakeCustomObjects(fail={"get": ApiException(status=403, reason="Forbidden")})
    with pytest.raises(ApiException, match="Forbidden"):
        deploy.deploy_kserve(gcs_model, api=api)
    assert api.verbs == ["get"]


def test_kserve_invalid_model_folder_makes_no_api_call(gcs, tiny_model):  # noqa: F811
    api = FakeCustomObjects(existing=existing_isvc())
    no_onnx = gcs.uri("registry", "versions", "8")
    storage.write_bytes(storage.join(no_onnx, "metadata.json"), (tiny_model / "metadata.json").read_bytes())
    with pytest.raises(DeployError, match="model.onnx"):
        deploy.deploy_kserve(no_onnx, api=api)
    corrupt = gcs.uri("registry", "versions", "9")
    storage.write_bytes(storage.join(corrupt, "metadata.json"), (tiny_model / "metadata.json").read_bytes())
    storage.write_bytes(storage.join(corrupt, "model.onnx"), b"not an onnx file")
    with pytest.raises(DeployError, match="does not load or predict"):
        deploy.deploy_kserve(corrupt, api=api)
    with pytest.raises(DeployError, match="gs://"):
        deploy.deploy_kserve(str(tiny_model), api=api)  # a local path means nothing to the cluster
    assert api.calls == []


def test_kserve_invalid_manifest_or_parameters_make_no_api_call(gcs_model, tmp_path):
    (body,) = deploy.render("manifests/base")
    body["spec"]["predictor"]["minReplica"] = 2
    typo = tmp_path / "isvc.yaml"
    typo.write_text(json.dumps(body))
    api = FakeCustomObjects()
    with pytest.raises(ManifestError, match=r"unknown field\(s\) \['minReplica'\]"):
        deploy.deploy_kserve(gcs_model, manifest=typo, api=api)
    with pytest.raises(ManifestError, match="DNS-1123"):
        deploy.deploy_kserve(gcs_model, name="Cat_Dog", api=api)
    with pytest.raises(ManifestError, match="canary_percent 101"):
        deploy.deploy_kserve(gcs_model, canary_percent=101, api=api)
    body["spec"]["predictor"].pop("minReplica")
    body["spec"]["predictor"]["containers"][0]["name"] = "server"
    typo.write_text(json.dumps(body))
    with pytest.raises(ManifestError, match="kserve-container"):
        deploy.deploy_kserve(gcs_model, manifest=typo, api=api)
    assert api.calls == []


# --- KServe through the real kubernetes client, at the REST boundary ------------------------------

class FakeResponse:
    def __init__(self, status: int, body: dict):
        self.status, self.reason, self.data = status, "OK" if status < 300 else "Error", json.dumps(body)

    def getheaders(self):
        return {"content-type": "application/json"}

    def getheader(self, name, default=None):
        return self.getheaders().get(name.lower(), default)


def real_api(responses: dict[str, tuple[int, dict]], requests: list):
    from kubernetes import client

    api_client = client.ApiClient(client.Configuration(host="https://k8s.invalid"))

    def request(method, url, query_params=None, headers=None, body=None, post_params=None, **_):
        requests.append({"method": method, "url": url, "query": dict(query_params or []),
                         "content_type": (headers or {}).get("Content-Type"), "body": copy.deepcopy(body)})
        status, payload = responses[method]
        response = FakeResponse(status, payload)
        if status >= 300:
            raise ApiException(http_resp=response)
        return response

    api_client.rest_client.request = request
    return client.CustomObjectsApi(api_client)


def test_kserve_with_the_real_client_creates_with_a_post(gcs_model):
    requests = []
    api = real_api({"GET": (404, {"kind": "Status", "code": 404}), "POST": (201, {"metadata": {"generation": 1}})}, requests)
    deploy.deploy_kserve(gcs_model, api=api)
    url = "https://k8s.invalid/apis/serving.kserve.io/v1beta1/namespaces/catdog/inferenceservices"
    assert [(r["method"], r["url"]) for r in requests] == [("GET", url + "/catdog"), ("POST", url)]
    assert requests[1]["query"] == {"fieldValidation": "Strict"}
    assert requests[1]["body"] == expected_body(gcs_model)


def test_kserve_with_the_real_client_patches_with_a_merge_patch(gcs_model):
    requests = []
    api = real_api({"GET": (200, existing_isvc()), "PATCH": (200, {"metadata": {"generation": 5}})}, requests)
    deploy.deploy_kserve(gcs_model, canary_percent=10, api=api)
    patch = requests[1]
    assert patch["method"] == "PATCH"
    assert patch["url"].endswith("/namespaces/catdog/inferenceservices/catdog")
    assert patch["content_type"] == "application/merge-patch+json"
    assert patch["body"] == expected_body(gcs_model, canary=10)


# --- Vertex AI: aiplatform monkeypatched ----------------------------------------------------------

@pytest.fixture(scope="module")
def aiplatform():
    from google.cloud import aiplatform as module

    return module


class FakeVertex:
    """Stands in for aiplatform.init / Model / Endpoint; checks every call against the real SDK's
    signature and records it."""

    def __init__(self, real, models=(), endpoints=(), deploy_error: Exception | None = None):
        self.real, self.calls = real, []
        # the real SDK, kept before install() replaces it: signatures to check the calls against
        self.sdk = SimpleNamespace(init=real.init, Model=real.Model, Endpoint=real.Endpoint)
        self.models, self.endpoints, self.deploy_error = list(models), list(endpoints), deploy_error
        fake = self

        class Model:
            @classmethod
            def list(cls, **kwargs):
                fake._record("Model.list", fake.sdk.Model.list, kwargs)
                return fake.models

            @classmethod
            def upload(cls, **kwargs):
                fake._record("Model.upload", fake.sdk.Model.upload, kwargs)
                registry = SimpleNamespace(add_version_aliases=lambda **kw: fake._record(
                    "Model.add_version_aliases", fake.real.models.ModelRegistry.add_version_aliases, kw,
                    args=(None,)))
                return SimpleNamespace(resource_name="projects/p/locations/us-central1/models/42", version_id="3",
                                       versioning_registry=registry)

        class Endpoint:
            @classmethod
            def list(cls, **kwargs):
                fake._record("Endpoint.list", fake.sdk.Endpoint.list, kwargs)
                return fake.endpoints

            @classmethod
            def create(cls, **kwargs):
                fake._record("Endpoint.create", fake.sdk.Endpoint.create, kwargs)
                endpoint = FakeEndpoint(fake, "projects/p/locations/us-central1/endpoints/new")
                fake.endpoints.append(endpoint)
                return endpoint

        self.Model, self.Endpoint = Model, Endpoint

    def init(self, **kwargs):
        self._record("init", self.sdk.init, kwargs)

    def _record(self, name, real_function, kwargs, args=()):
        inspect.signature(real_function).bind(*args, **kwargs)  # a wrong keyword fails here
        self.calls.append((name, kwargs))

    def install(self, monkeypatch):
        for name in ("init", "Model", "Endpoint"):
            monkeypatch.setattr(self.real, name, getattr(self, name))

    @property
    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def kwargs(self, name: str) -> dict:
        return next(k for n, k in self.calls if n == name)


class FakeEndpoint:
    def __init__(self, fake: FakeVertex, resource_name: str, deployed: dict[str, int] | None = None):
        self.fake, self.resource_name = fake, resource_name
        self.split = dict(deployed or {})

    def list_models(self):
        self.fake.calls.append(("Endpoint.list_models", {}))
        return [SimpleNamespace(id=i) for i in self.split]

    @property
    def traffic_split(self):
        return dict(self.split)

    def deploy(self, model, **kwargs):
        self.fake._record("Endpoint.deploy", self.fake.sdk.Endpoint.deploy, kwargs, args=(self, model))
        if self.fake.deploy_error:
            raise self.fake.deploy_error
        share = kwargs["traffic_percentage"]
        rest = sum(self.split.values())
        self.split = {k: round(v * (100 - share) / rest) if rest else 0 for k, v in self.split.items()}
        self.split["new"] = share

    def undeploy(self, **kwargs):
        self.fake._record("Endpoint.undeploy", self.fake.sdk.Endpoint.undeploy, kwargs, args=(self,))
        self.split.pop(kwargs["deployed_model_id"])


VERTEX = dict(project="proj", region="europe-west4", display_name="catdog", endpoint_name="catdog-ep",
              serving_image="europe-docker.pkg.dev/proj/catdog/catdog-predictor:0.1.0")


def test_vertex_first_deploy_creates_the_endpoint(gcs_model, aiplatform, monkeypatch):
    fake = FakeVertex(aiplatform)
    fake.install(monkeypatch)
    where = deploy.deploy_vertex(gcs_model, **VERTEX)
    assert fake.names == ["init", "Model.list", "Endpoint.list", "Model.upload", "Endpoint.create",
                          "Endpoint.list_models", "Endpoint.deploy", "Model.add_version_aliases"]
    assert fake.kwargs("init") == {"project": "proj", "location": "europe-west4"}
    assert fake.kwargs("Model.list")["filter"] == 'display_name="catdog"'
    assert fake.kwargs("Endpoint.list")["filter"] == 'display_name="catdog-ep"'
    assert fake.kwargs("Model.upload") == {
        "display_name": "catdog",
        "artifact_uri": gcs_model,
        "serving_container_image_uri": VERTEX["serving_image"],
        "serving_container_predict_route": "/v1/models/catdog:predict",
        "serving_container_health_route": "/v2/health/ready",
        "serving_container_ports": [8080],
        "parent_model": None,
        "is_default_version": True,
        "version_aliases": None,
        "version_description": f"catdog v7 from {gcs_model}",
        "sync": True,
    }
    assert fake.kwargs("Endpoint.create") == {"display_name": "catdog-ep", "sync": True}
    assert fake.kwargs("Endpoint.deploy") == {
        "deployed_model_display_name": "catdog-v7", "traffic_percentage": 100, "machine_type": "n1-standard-2",
        "min_replica_count": 1, "max_replica_count": 2, "sync": True}
    assert fake.kwargs("Model.add_version_aliases") == {"new_aliases": ["default", "champion"], "version": "3"}
    assert "with 100% of traffic" in where


def test_vertex_canary_on_an_existing_endpoint_keeps_the_old_model(gcs_model, aiplatform, monkeypatch):
    parent = SimpleNamespace(resource_name="projects/p/locations/europe-west4/models/42")
    fake = FakeVertex(aiplatform, models=[parent])
    fake.endpoints = [FakeEndpoint(fake, "projects/p/locations/europe-west4/endpoints/9", {"old": 100})]
    fake.install(monkeypatch)
    deploy.deploy_vertex(gcs_model, **VERTEX, traffic_percent=10, machine_type="n1-standard-4",
                         min_replicas=2, max_replicas=4)
    assert "Endpoint.create" not in fake.names and "Endpoint.undeploy" not in fake.names
    assert fake.kwargs("Model.upload")["parent_model"] == parent.resource_name
    upload = fake.kwargs("Model.upload")
    assert (upload["is_default_version"], upload["version_aliases"]) == (False, None)  # aliases move after deploy
    assert fake.names.index("Model.add_version_aliases") > fake.names.index("Endpoint.deploy")
    assert fake.kwargs("Endpoint.deploy")["traffic_percentage"] == 10
    assert (fake.kwargs("Endpoint.deploy")["machine_type"], fake.kwargs("Endpoint.deploy")["min_replica_count"],
            fake.kwargs("Endpoint.deploy")["max_replica_count"]) == ("n1-standard-4", 2, 4)
    assert fake.endpoints[0].split == {"old": 90, "new": 10}


def test_vertex_full_rollout_retires_the_old_model_after_the_new_is_up(gcs_model, aiplatform, monkeypatch):
    fake = FakeVertex(aiplatform, models=[SimpleNamespace(resource_name="projects/p/locations/r/models/42")])
    fake.endpoints = [FakeEndpoint(fake, "projects/p/locations/r/endpoints/9", {"old": 100})]
    fake.install(monkeypatch)
    where = deploy.deploy_vertex(gcs_model, **VERTEX)
    assert fake.names[-3:] == ["Endpoint.deploy", "Model.add_version_aliases", "Endpoint.undeploy"]
    assert fake.kwargs("Endpoint.undeploy") == {"deployed_model_id": "old", "sync": True}
    assert fake.endpoints[0].split == {"new": 100}
    assert "retired deployed model old" in where


def test_vertex_deploy_failure_after_upload_keeps_the_old_model(gcs_model, aiplatform, monkeypatch, caplog):
    fake = FakeVertex(aiplatform, models=[SimpleNamespace(resource_name="projects/p/locations/r/models/42")],
                      deploy_error=RuntimeError("quota exceeded"))
    fake.endpoints = [FakeEndpoint(fake, "projects/p/locations/r/endpoints/9", {"old": 100})]
    fake.install(monkeypatch)
    with pytest.raises(RuntimeError, match="quota exceeded"):
        deploy.deploy_vertex(gcs_model, **VERTEX)
    assert "Model.upload" in fake.names
    assert fake.names[-1] == "Endpoint.deploy" and "Endpoint.undeploy" not in fake.names
    assert "Model.add_version_aliases" not in fake.names  # the registry's champion and default stay put
    assert fake.kwargs("Endpoint.deploy")["traffic_percentage"] == 100
    assert "traffic split is unchanged" in caplog.text


def test_vertex_invalid_model_or_settings_make_no_call(gcs, tiny_model, aiplatform, monkeypatch):  # noqa: F811
    fake = FakeVertex(aiplatform)
    fake.install(monkeypatch)
    missing = gcs.uri("registry", "versions", "3")
    with pytest.raises(DeployError, match="cannot read"):
        deploy.deploy_vertex(missing, **VERTEX)
    with pytest.raises(DeployError, match="gs://"):
        deploy.deploy_vertex(str(tiny_model), **VERTEX)
    with pytest.raises(DeployError, match="vertex_project"):
        deploy.deploy_vertex(missing, **{**VERTEX, "project": ""})
    with pytest.raises(DeployError, match="serving_image"):
        deploy.deploy_vertex(missing, **{**VERTEX, "serving_image": ""})
    with pytest.raises(DeployError, match="traffic_percent 0"):
        deploy.deploy_vertex(missing, **VERTEX, traffic_percent=0)
    with pytest.raises(DeployError, match="replicas"):
        deploy.deploy_vertex(missing, **VERTEX, min_replicas=3, max_replicas=2)
    assert fake.calls == []


# --- local --------------------------------------------------------------------------------------

def test_local_deploy_checks_the_alias_and_predicts(champion_registry):  # noqa: F811
    assert deploy.deploy_local(champion_registry.uri, 1) == "local: champion alias -> v1; `make serve` reloads it"


def test_local_deploy_alias_mismatch_raises(champion_registry, tiny_model):  # noqa: F811
    version = champion_registry.register(tiny_model)  # v2, not promoted
    with pytest.raises(RegistryError, match="champion of .* is v1, expected v2"):
        deploy.deploy_local(champion_registry.uri, version)


def test_local_deploy_broken_model_raises(tmp_path, tiny_model):  # noqa: F811
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.json").write_text((tiny_model / "metadata.json").read_text())
    (broken / "model.onnx").write_bytes(b"\x00" * 64)
    registry = ModelRegistry(tmp_path / "registry")
    registry.set_champion(registry.register(broken))
    with pytest.raises(DeployError, match="does not load or predict"):
        deploy.deploy_local(registry.uri, 1)


# --- the component ------------------------------------------------------------------------------

COMPONENT_DEFAULTS = dict(
    kserve_name="catdog", kserve_namespace="catdog", kserve_manifest="manifests/base", kserve_ready_timeout_s=0,
    canary_percent=0, serving_image="img:1", vertex_project="proj", vertex_region="us-central1",
    vertex_model="catdog", vertex_endpoint="catdog", vertex_machine_type="n1-standard-2",
    vertex_min_replicas=1, vertex_max_replicas=2,
)


def _decision(tmp_path: Path, registry_uri: str, version: int = 1) -> SimpleNamespace:
    path = tmp_path / "decision.json"
    path.write_text(json.dumps({"registry_uri": registry_uri, "champion_version": version, "challenger_version": version,
                                "model_uri": storage.join(registry_uri, "versions", str(version))}))
    return SimpleNamespace(path=str(path))


def test_component_dispatches_to_each_target(tmp_path, champion_registry, monkeypatch):  # noqa: F811
    from components.deploy import deploy as component

    run = component.python_func
    decision = _decision(tmp_path, champion_registry.uri)
    assert run(decision=decision, deploy_target="local", **COMPONENT_DEFAULTS).startswith("local: champion alias -> v1")

    seen = {}
    monkeypatch.setattr(deploy, "deploy_kserve", lambda uri, **kw: seen.setdefault("kserve", (uri, kw)) and "k")
    monkeypatch.setattr(deploy, "deploy_vertex", lambda uri, **kw: seen.setdefault("vertex", (uri, kw)) and "v")
    gcs_decision = _decision(tmp_path, "gs://b/registry", 3)
    assert run(decision=gcs_decision, deploy_target="kserve", **{**COMPONENT_DEFAULTS, "canary_percent": 20}) == "k"
    assert seen["kserve"] == ("gs://b/registry/versions/3", {
        "name": "catdog", "namespace": "catdog", "canary_percent": 20, "manifest": "manifests/base",
        "image": "img:1", "ready_timeout_s": 0})
    assert run(decision=gcs_decision, deploy_target="vertex", **COMPONENT_DEFAULTS) == "v"
    assert seen["vertex"][1]["traffic_percent"] == 100  # canary_percent 0 = all the traffic
    assert seen["vertex"][1]["project"] == "proj" and seen["vertex"][1]["serving_image"] == "img:1"
    with pytest.raises(ValueError, match="unknown deploy_target"):
        run(decision=gcs_decision, deploy_target="mars", **COMPONENT_DEFAULTS)


def test_component_parameters_are_the_pipeline_configs():
    from components.deploy import deploy as component
    from pipelines.config import PipelineConfig

    parameters = set(inspect.signature(component.python_func).parameters) - {"decision"}
    assert parameters <= set(PipelineConfig.model_fields)
    assert parameters == set(COMPONENT_DEFAULTS) | {"deploy_target"}


# --- the deploy parameters in the config ---------------------------------------------------------

@pytest.mark.parametrize(
    "overrides, named",
    [
        ({"deploy_target": "vertex", "registry_uri": "gs://b/r", "serving_image": "i"}, "vertex_project: required"),
        ({"deploy_target": "vertex", "registry_uri": "gs://b/r", "vertex_project": "p"}, "serving_image: required"),
        ({"deploy_target": "kserve", "serving_image": "i"}, "registry_uri: deploy_target=kserve"),
        ({"deploy_target": "kserve", "registry_uri": "gs://b/r"}, "serving_image: required when deploy_target=kserve"),
        ({"deploy_target": "vertex", "vertex_project": "p", "serving_image": "i"}, "registry_uri: deploy_target=vertex"),
        ({"canary_percent": "101"}, "canary_percent: Input should be less than or equal to 100"),
        ({"kserve_name": "Cat_Dog"}, "kserve_name: String should match pattern"),
        ({"vertex_min_replicas": "3"}, "vertex_max_replicas: 2 is below vertex_min_replicas 3"),
    ],
)
def test_config_rejects_bad_deploy_settings_naming_the_key(overrides, named):
    with pytest.raises(ConfigError) as info:
        build_config(overrides)
    assert named in str(info.value)


def test_config_accepts_remote_targets():
    config = build_config({"deploy_target": "vertex", "registry_uri": "gs://b/registry", "vertex_project": "p",
                           "serving_image": "europe-docker.pkg.dev/p/r/catdog-predictor:0.1.0", "canary_percent": "10"})
    assert (config.deploy_target, config.canary_percent) == ("vertex", 10)
    assert build_config({"deploy_target": "kserve", "registry_uri": "gs://b/registry",
                         "serving_image": "img:1"}).kserve_namespace == "catdog"


def test_a_gs_model_folder_with_a_centre_view_is_fetched_whole(gcs, tmp_path):
    """A model with test-time views (catdog.test_time_views) has centre.onnx beside model.onnx:
    deploy's verify_model and the server's gs:// source download it too; a folder without it is
    refused, naming it."""
    from catdog.model import save_model_dir
    from catdog.preprocessing import PREPROCESSING_SPEC
    from catdog.test_time_views import with_test_time_views
    from serving.source import ModelSource
    from tests.serving_fixtures import TINY_SIZE, _tiny_model

    _, classifier = _tiny_model("catdog-deploy-views-")
    local = save_model_dir(with_test_time_views(classifier, True, 0.8), tmp_path / "views", {
        "class_names": ["cat", "dog"], "image_size": TINY_SIZE, "input_size": 40, "preprocessing": PREPROCESSING_SPEC})
    whole, partial = gcs.uri("registry", "versions", "8"), gcs.uri("registry", "versions", "9")
    for name in ("model.onnx", "centre.onnx", "metadata.json"):
        storage.write_bytes(storage.join(whole, name), (local / name).read_bytes())
        if name != "centre.onnx":
            storage.write_bytes(storage.join(partial, name), (local / name).read_bytes())
    assert deploy.verify_model(whole)["test_time_views"]["centre_onnx"] == "centre.onnx"
    loaded = ModelSource(whole).load()
    assert loaded.predictor.centre_session is not None and loaded.predictor.image_size == 40
    with pytest.raises(DeployError, match="centre.onnx"):
        deploy.verify_model(partial)
