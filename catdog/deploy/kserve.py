"""Deploy a newly promoted champion. Runs only when the champion step promoted a challenger.

Three targets, one rule: everything that can be checked is checked BEFORE the first call that
changes what is served (the model folder has model.onnx + metadata.json, loads and predicts; the
manifest renders and is a valid InferenceService), and a failure after that leaves the previous
model serving:

- ``deploy_local``: `make serve` (MODEL=champion) follows the registry's champion alias, so
  deploying means checking the alias and a smoke prediction.
- ``deploy_kserve``: creates or merge-patches a KServe ``InferenceService`` (our predictor image as a
  custom container; KServe's storage initializer downloads ``STORAGE_URI`` to /mnt/models). With
  ``canary_percent`` the new revision gets that share and the previous one keeps the rest; a new
  revision that never becomes ready gets no traffic (KServe keeps routing to the last ready one).
- ``deploy_vertex``: uploads the model as a new version of the Vertex Model Registry model, deploys
  it to the endpoint with a traffic share, then moves the ``default`` and ``champion`` aliases to
  it; the models already deployed keep serving until the new one is up, and are retired only after
  a full (100 %) rollout.

The manifests (manifests/base, manifests/overlays/*) are rendered here by a small subset of
kustomize (resources, namespace, patches, images), so the deploy step needs no kustomize binary;
tests/test_manifests.py checks that it agrees with `kubectl kustomize` where one is installed.
"""

from __future__ import annotations

import copy
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from catdog import storage
from catdog.model_files import METADATA_FILE, ONNX_FILE
from catdog.registry import ModelRegistry, RegistryError

logger = logging.getLogger("catdog.deploy")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = "manifests/base"
KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
KSERVE_API_VERSION = f"{KSERVE_GROUP}/{KSERVE_VERSION}"
KSERVE_CONTAINER = "kserve-container"  # the name KServe gives the predictor's model-server container
STORAGE_URI_ENV = "STORAGE_URI"  # on a custom container, KServe's storage initializer fetches this to /mnt/models
# The predictor's routes (serving/app.py); the Vertex container gets them as AIP_PREDICT_ROUTE /
# AIP_HEALTH_ROUTE, so Vertex uses the same KServe V1 predict route and V2 readiness route.
SERVING_PORT = 8080
VERTEX_CHAMPION_ALIAS = "champion"
VERTEX_PREDICT_ROUTE = "/v1/models/catdog:predict"
VERTEX_HEALTH_ROUTE = "/v2/health/ready"
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # Kubernetes object names and namespaces (DNS-1123)
MAX_SERVICE_NAME = 45  # KServe derives longer host and revision names from an InferenceService's name


class DeployError(RuntimeError):
    """Nothing was changed: the model or the manifest failed a check before any mutating call."""


class ManifestError(DeployError):
    """A manifest that does not render, or is not a valid InferenceService."""


# --- the model ---------------------------------------------------------------------------------

def smoke_test(model_dir: Path) -> dict:
    """Load a local model folder's ONNX and predict one blank image; returns its metadata."""
    from catdog.predictor import load_checked  # ONNX Runtime: only the deploy step needs it here

    try:
        return load_checked(Path(model_dir)).metadata
    except ValueError as exc:
        raise DeployError(str(exc)) from exc


def verify_model(model_uri: str) -> dict:
    """A model folder (local or gs://) holds model.onnx + metadata.json that load and predict.

    For gs:// only those two files are downloaded (to a temporary folder). Returns the metadata.
    """
    if not storage.is_gcs(model_uri):
        return smoke_test(Path(model_uri))
    with tempfile.TemporaryDirectory(prefix="catdog-deploy-") as tmp:
        for name in (ONNX_FILE, METADATA_FILE):
            uri = storage.join(model_uri, name)
            try:
                data = storage.read_bytes(uri)
            except Exception as exc:  # NotFound, Forbidden, network
                raise DeployError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc
            Path(tmp, name).write_bytes(data)
        return smoke_test(Path(tmp))


def _require_gcs(model_uri: str, target: str) -> None:
    if not storage.is_gcs(model_uri):
        raise DeployError(f"{target} reads the model from a gs:// folder, got {model_uri!r}: "
                          "use a gs:// registry (registry_uri=gs://BUCKET/registry)")


def _version_tag(model_uri: str) -> str:
    """'gs://b/registry/versions/7' -> 'v7' (else the folder's name)."""
    last = model_uri.rstrip("/").rsplit("/", 1)[-1]
    return f"v{last}" if last.isdigit() else last


# --- local -------------------------------------------------------------------------------------

def deploy_local(registry_uri: str, version: int) -> str:
    """Local target: `make serve` (MODEL=champion) follows the registry's champion alias and reloads
    on change, so deploying means checking the alias names this version and that it loads and
    predicts; a broken model fails here, before anyone is served by it."""
    registry = ModelRegistry(registry_uri)
    if registry.champion_version() != version:
        raise RegistryError(f"champion of {registry.uri} is v{registry.champion_version()}, expected v{version}")
    smoke_test(registry.fetch(version))
    return f"local: champion alias -> v{version}; `make serve` reloads it"


# --- manifests: a small kustomize --------------------------------------------------------------

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "namespace", "patches", "images"}


def resolve_manifest(path: str | Path) -> Path:
    """A manifest path as given, or relative to the repository (the component's working directory
    is not the repository's)."""
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute():
        return path
    return REPO_ROOT / path


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge key by key, None deletes a key, anything else (lists
    included) replaces. It is also what kustomize's strategic merge does to a custom resource for the
    maps and scalars our overlays patch (it has no schema for lists inside an InferenceService)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _load_documents(path: Path) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise ManifestError(f"{path}: every document must be a Kubernetes object with apiVersion and kind")
    return docs


def _matches(doc: dict, target: dict) -> bool:
    unknown = set(target) - {"kind", "name", "group", "version", "namespace"}
    if unknown:
        raise ManifestError(f"unsupported patch target field(s) {sorted(unknown)}")
    group, _, version = doc["apiVersion"].rpartition("/")
    meta = doc.get("metadata", {})
    return all([
        target.get("kind", doc["kind"]) == doc["kind"],
        target.get("name", meta.get("name")) == meta.get("name"),
        target.get("group", group) == group,
        target.get("version", version) == version,
        target.get("namespace", meta.get("namespace")) == meta.get("namespace"),
    ])


def _set_images(node: Any, images: list[dict]) -> None:
    """kustomize's `images:` transformer: every containers[] / initContainers[] image, at any depth."""
    if isinstance(node, list):
        for item in node:
            _set_images(item, images)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("containers", "initContainers") and isinstance(value, list):
            for container in value:
                if isinstance(container, dict) and isinstance(container.get("image"), str):
                    container["image"] = _new_image(container["image"], images)
        _set_images(value, images)


def _new_image(image: str, images: list[dict]) -> str:
    name, tag = image, ""
    if "@" in image:
        name, tag = image.split("@", 1)
        tag = "@" + tag
    elif ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
        tag = ":" + tag
    for rule in images:
        if rule.get("name") != name:
            continue
        unknown = set(rule) - {"name", "newName", "newTag", "digest"}
        if unknown:
            raise ManifestError(f"unsupported images field(s) {sorted(unknown)}")
        if "digest" in rule:
            tag = "@" + rule["digest"]
        elif "newTag" in rule:
            tag = ":" + str(rule["newTag"])
        return rule.get("newName", name) + tag
    return image


def render(path: str | Path) -> list[dict]:
    """The objects a manifest file or a kustomization folder produces (a subset of `kustomize
    build`: resources, namespace, patches with `path` or inline `patch` and an optional target,
    images). Anything else in a kustomization is an error rather than silently ignored."""
    path = resolve_manifest(path)
    if path.is_file():
        return _load_documents(path)
    if not path.is_dir():
        raise ManifestError(f"no manifest at {path}")
    kfile = next((path / n for n in KUSTOMIZATION_FILES if (path / n).is_file()), None)
    if kfile is None:
        raise ManifestError(f"{path} is a folder without a kustomization.yaml")
    spec = yaml.safe_load(kfile.read_text()) or {}
    unsupported = set(spec) - SUPPORTED_KUSTOMIZE_KEYS
    if unsupported:
        raise ManifestError(f"{kfile}: unsupported kustomization key(s) {sorted(unsupported)} "
                            f"(supported: {sorted(SUPPORTED_KUSTOMIZE_KEYS)})")
    docs: list[dict] = []
    for resource in spec.get("resources", []):
        docs.extend(render(path / resource))
    for patch in spec.get("patches", []):
        if "path" in patch:
            body = _load_documents(path / patch["path"])
        elif "patch" in patch:
            body = [d for d in yaml.safe_load_all(patch["patch"]) if d is not None]
        else:
            raise ManifestError(f"{kfile}: a patch needs `path` or `patch`")
        if len(body) != 1 or not isinstance(body[0], dict):
            raise ManifestError(f"{kfile}: each patch must be one object (JSON 6902 lists are not supported)")
        body = body[0]
        target = patch.get("target") or {"kind": body.get("kind"), "name": body.get("metadata", {}).get("name")}
        hits = [i for i, doc in enumerate(docs) if _matches(doc, target)]
        if not hits:
            raise ManifestError(f"{kfile}: patch {patch.get('path', '(inline)')} matches no resource ({target})")
        for i in hits:
            docs[i] = merge_patch(docs[i], body)
    if "namespace" in spec:
        for doc in docs:
            doc.setdefault("metadata", {})["namespace"] = spec["namespace"]
    if spec.get("images"):
        for doc in docs:
            _set_images(doc, spec["images"])
    return docs


# --- manifests: validation against KServe's and Kubernetes' API models -------------------------

_PRIMITIVES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _api_class(name: str):
    import kubernetes.client.models as k8s
    import kserve.models as ks

    for module in (ks, k8s):
        if hasattr(module, name):
            return getattr(module, name)
    raise ManifestError(f"no API model named {name}")


def to_api_model(data: Any, type_name: str, where: str = "") -> Any:
    """Build KServe / Kubernetes client model objects from a manifest dict, strictly: an unknown key
    (a typo), a wrong type or a missing required field raises ManifestError naming the path."""
    if data is None:
        return None
    if type_name.startswith("list["):
        if not isinstance(data, list):
            raise ManifestError(f"{where}: expected a list, got {type(data).__name__}")
        inner = type_name[5:-1]
        return [to_api_model(item, inner, f"{where}[{i}]") for i, item in enumerate(data)]
    if type_name.startswith("dict("):
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a map, got {type(data).__name__}")
        inner = re.match(r"dict\(([^,]*), (.*)\)", type_name).group(2)
        return {k: to_api_model(v, inner, f"{where}.{k}") for k, v in data.items()}
    if type_name in _PRIMITIVES:
        ok = isinstance(data, _PRIMITIVES[type_name]) and not (type_name != "bool" and isinstance(data, bool))
        if not ok:
            hint = " (quote quantities such as cpu: \"1\")" if type_name == "str" else ""
            raise ManifestError(f"{where}: expected {type_name}, got {data!r}{hint}")
        return data
    if type_name in ("object", "datetime", "date"):
        return data
    klass = _api_class(type_name)
    if not isinstance(data, dict):
        raise ManifestError(f"{where or type_name}: expected a {type_name} map, got {type(data).__name__}")
    by_key = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    unknown = sorted(set(data) - set(by_key))
    if unknown:
        raise ManifestError(f"{where or type_name}: unknown field(s) {unknown} for {type_name}")
    kwargs = {by_key[k]: to_api_model(v, klass.openapi_types[by_key[k]], f"{where}.{k}".lstrip("."))
              for k, v in data.items()}
    try:
        return klass(**kwargs)
    except ValueError as exc:  # the generated models check required fields and enums
        raise ManifestError(f"{where or type_name}: {exc}") from exc


def validate_inference_service(doc: dict) -> Any:
    """A rendered InferenceService -> kserve.V1beta1InferenceService, or ManifestError."""
    if doc.get("apiVersion") != KSERVE_API_VERSION or doc.get("kind") != "InferenceService":
        raise ManifestError(f"expected {KSERVE_API_VERSION} InferenceService, "
                            f"got {doc.get('apiVersion')} {doc.get('kind')}")
    isvc = to_api_model(doc, "V1beta1InferenceService")
    if isvc.spec is None or isvc.spec.predictor is None:
        raise ManifestError("InferenceService without spec.predictor")
    predictor = isvc.spec.predictor
    if predictor.min_replicas is not None and predictor.max_replicas is not None \
            and predictor.min_replicas > predictor.max_replicas:
        raise ManifestError(f"minReplicas {predictor.min_replicas} > maxReplicas {predictor.max_replicas}")
    if predictor.canary_traffic_percent is not None and not 0 <= predictor.canary_traffic_percent <= 100:
        raise ManifestError(f"canaryTrafficPercent {predictor.canary_traffic_percent} is not in 0..100")
    return isvc


def _kserve_container(body: dict) -> dict:
    containers = body.get("spec", {}).get("predictor", {}).get("containers") or []
    found = [c for c in containers if c.get("name") == KSERVE_CONTAINER]
    if len(found) != 1:
        raise ManifestError(f"the predictor needs exactly one container named {KSERVE_CONTAINER!r} (KServe's "
                            f"storage initializer only serves that one), found {[c.get('name') for c in containers]}")
    return found[0]


def inference_service_body(
    model_uri: str,
    name: str = "catdog",
    namespace: str = "catdog",
    canary_percent: int = 0,
    manifest: str | Path = DEFAULT_MANIFEST,
    image: str = "",
) -> dict:
    """The InferenceService to apply: the manifest's one InferenceService with this name, namespace,
    the model's STORAGE_URI, the image (when given) and canaryTrafficPercent (when > 0; else the
    manifest's, if any). Validated; raises ManifestError."""
    for key, value, longest in (("name", name, MAX_SERVICE_NAME), ("namespace", namespace, 63)):
        if not re.match(DNS_LABEL, value) or len(value) > longest:
            raise ManifestError(f"{key} {value!r} is not a DNS-1123 label of at most {longest} characters")
    if not 0 <= int(canary_percent) <= 100:
        raise ManifestError(f"canary_percent {canary_percent} is not in 0..100")
    services = [d for d in render(manifest) if d.get("kind") == "InferenceService"]
    if len(services) != 1:
        raise ManifestError(f"{manifest} renders {len(services)} InferenceServices, expected 1")
    body = copy.deepcopy(services[0])
    body.pop("status", None)
    metadata = body.setdefault("metadata", {})
    for key in ("resourceVersion", "uid", "generation", "creationTimestamp", "managedFields"):
        metadata.pop(key, None)
    metadata["name"], metadata["namespace"] = name, namespace
    container = _kserve_container(body)
    env = [e for e in container.get("env", []) if e.get("name") != STORAGE_URI_ENV]
    container["env"] = [{"name": STORAGE_URI_ENV, "value": model_uri}, *env]
    if image:
        container["image"] = image
    if canary_percent:
        body["spec"]["predictor"]["canaryTrafficPercent"] = int(canary_percent)
    validate_inference_service(body)
    return body


# --- KServe ------------------------------------------------------------------------------------

def _custom_objects_api():
    """CustomObjectsApi from the pod's service account, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def _ready_condition(obj: dict) -> dict | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition
    return None


def wait_until_ready(api, name: str, namespace: str, generation: int | None, timeout_s: float,
                     poll_s: float = 5.0, clock=None, sleep=None) -> dict:
    """Poll the InferenceService until it has observed `generation` and is Ready; TimeoutError
    otherwise (KServe keeps the traffic on the last ready revision meanwhile). The same test as
    kserve's own KServeClient.is_isvc_ready(expected_generation=...): a Ready condition alone may
    still describe the previous generation."""
    import time

    clock, sleep = clock or time.monotonic, sleep or time.sleep
    deadline = clock() + timeout_s
    while True:
        obj = api.get_namespaced_custom_object(KSERVE_GROUP, KSERVE_VERSION, namespace, KSERVE_PLURAL, name)
        status = obj.get("status") or {}
        ready = _ready_condition(obj)
        observed = status.get("observedGeneration")
        if ready and ready.get("status") == "True" and (generation is None or (observed or 0) >= generation):
            return obj
        if clock() >= deadline:
            messages = "; ".join(
                f"{c.get('type')}={c.get('status')} {c.get('reason', '')} {c.get('message', '')}".strip()
                for c in status.get("conditions") or [])
            raise TimeoutError(f"InferenceService {namespace}/{name} not ready after {timeout_s:g} s "
                               f"(generation {generation}, observed {observed}): {messages or 'no status yet'}")
        sleep(poll_s)


def deploy_kserve(
    model_uri: str,
    name: str = "catdog",
    namespace: str = "catdog",
    canary_percent: int = 0,
    manifest: str | Path = DEFAULT_MANIFEST,
    image: str = "",
    ready_timeout_s: float = 0,
    api=None,
) -> str:
    """Create or update the InferenceService `namespace/name` to serve the model folder `model_uri`.

    `api` is a kubernetes CustomObjectsApi (default: in-cluster config, else kubeconfig). Exists ->
    merge patch (the whole rendered body; canaryTrafficPercent set to null when no canary is wanted,
    so a canary from a previous deploy does not linger); 404 -> create. With ready_timeout_s > 0,
    waits for the new generation to be Ready.
    """
    from kubernetes.client.exceptions import ApiException

    _require_gcs(model_uri, "KServe's storage initializer")
    body = inference_service_body(model_uri, name, namespace, canary_percent, manifest, image)
    verify_model(model_uri)
    api = api or _custom_objects_api()
    try:
        api.get_namespaced_custom_object(KSERVE_GROUP, KSERVE_VERSION, namespace, KSERVE_PLURAL, name)
        exists = True
    except ApiException as exc:
        if exc.status != 404:
            raise
        exists = False
    canary = body["spec"]["predictor"].get("canaryTrafficPercent")
    if exists:
        patch = copy.deepcopy(body)
        patch["spec"]["predictor"].setdefault("canaryTrafficPercent", None)  # null removes an old canary
        result = api.patch_namespaced_custom_object(KSERVE_GROUP, KSERVE_VERSION, namespace, KSERVE_PLURAL, name,
                                                    patch, field_validation="Strict")
        action = "patched"
    else:
        result = api.create_namespaced_custom_object(KSERVE_GROUP, KSERVE_VERSION, namespace, KSERVE_PLURAL,
                                                     body, field_validation="Strict")
        action = "created"
    generation = ((result or {}).get("metadata") or {}).get("generation") if isinstance(result, dict) else None
    where = f"kserve: InferenceService {namespace}/{name} {action} -> {model_uri}"
    if canary is not None:  # a first revision takes all the traffic: there is nothing to split with
        where += (f" (canary: {canary}% of traffic to the new revision)" if exists
                  else f" (canaryTrafficPercent {canary} applies from the next update)")
    logger.info(where)
    if ready_timeout_s > 0:
        wait_until_ready(api, name, namespace, generation, ready_timeout_s)
        where += "; ready"
    return where


# --- Vertex AI ---------------------------------------------------------------------------------

def deploy_vertex(
    model_uri: str,
    project: str,
    region: str = "us-central1",
    display_name: str = "catdog",
    endpoint_name: str = "catdog",
    serving_image: str = "",
    traffic_percent: int = 100,
    machine_type: str = "n1-standard-2",
    min_replicas: int = 1,
    max_replicas: int = 2,
    retire_previous: bool = True,
) -> str:
    """Upload the model folder as a new version of the Vertex model `display_name`, deploy it to the
    endpoint `endpoint_name` (created when missing) with `traffic_percent` of the traffic (the rest
    stays with the models already deployed), then move the `default` and `champion` aliases to it.

    Nothing is undeployed and no alias moves before the new model is up: if the deploy fails, the
    endpoint's traffic split and the Model Registry's aliases are unchanged and the error propagates. After a 100 % rollout, the previously deployed
    models (now at 0 %) are undeployed when retire_previous (a failure there is logged, not raised:
    the new model is serving).
    """
    if not project:
        raise DeployError("deploy_vertex needs a project (vertex_project)")
    if not serving_image:
        raise DeployError("deploy_vertex needs the predictor image (serving_image), pushed to Artifact Registry")
    if not 1 <= int(traffic_percent) <= 100:
        raise DeployError(f"traffic_percent {traffic_percent} is not in 1..100")
    if not 1 <= min_replicas <= max_replicas:
        raise DeployError(f"replicas: need 1 <= min ({min_replicas}) <= max ({max_replicas})")
    _require_gcs(model_uri, "Vertex AI")
    verify_model(model_uri)

    from google.cloud import aiplatform

    aiplatform.init(project=project, location=region)
    parents = aiplatform.Model.list(filter=f'display_name="{display_name}"', order_by="update_time desc")
    parent = parents[0].resource_name if parents else None
    endpoints = aiplatform.Endpoint.list(filter=f'display_name="{endpoint_name}"', order_by="update_time desc")
    endpoint = endpoints[0] if endpoints else None
    tag = _version_tag(model_uri)

    # -- mutating calls from here on --
    model = aiplatform.Model.upload(
        display_name=display_name,
        artifact_uri=model_uri,
        serving_container_image_uri=serving_image,
        serving_container_predict_route=VERTEX_PREDICT_ROUTE,
        serving_container_health_route=VERTEX_HEALTH_ROUTE,
        serving_container_ports=[SERVING_PORT],
        parent_model=parent,
        is_default_version=parent is None,  # a later version becomes default once it serves (below)
        version_aliases=None,
        version_description=f"catdog {tag} from {model_uri}",
        sync=True,
    )
    if endpoint is None:
        endpoint = aiplatform.Endpoint.create(display_name=endpoint_name, sync=True)
    previous = [m.id for m in endpoint.list_models()]
    traffic = int(traffic_percent) if previous else 100  # the first model on an endpoint takes it all
    try:
        endpoint.deploy(
            model,
            deployed_model_display_name=f"{display_name}-{tag}",
            traffic_percentage=traffic,
            machine_type=machine_type,
            min_replica_count=min_replicas,
            max_replica_count=max_replicas,
            sync=True,
        )
    except Exception as exc:
        logger.error("deploying %s to endpoint %s failed (%s: %s); its traffic split is unchanged: "
                     "the deployed models %s keep serving. The uploaded version %s stays in the Model "
                     "Registry.", tag, endpoint.resource_name, type(exc).__name__, exc, previous,
                     getattr(model, "resource_name", model))
        raise
    model.versioning_registry.add_version_aliases(new_aliases=["default", VERTEX_CHAMPION_ALIAS], version=model.version_id)
    where = (f"vertex: {model.resource_name} version {model.version_id} ({tag}, aliases default and "
             f"{VERTEX_CHAMPION_ALIAS}) on endpoint {endpoint.resource_name} with {traffic}% of traffic")
    if retire_previous and traffic == 100 and previous:
        split = endpoint.traffic_split
        for deployed_id in previous:
            if split.get(deployed_id, 0) == 0:
                try:
                    endpoint.undeploy(deployed_model_id=deployed_id, sync=True)
                    where += f"; retired deployed model {deployed_id}"
                except Exception as exc:  # the new model serves; an idle old one only costs money
                    logger.warning("could not undeploy the previous model %s: %s", deployed_id, exc)
                    where += f"; could not retire {deployed_id} ({type(exc).__name__})"
    logger.info(where)
    return where
