"""deploy_target=kserve: create or merge-patch a KServe InferenceService (our predictor image as a
custom container; KServe's storage initializer downloads STORAGE_URI to /mnt/models).

With canary_percent the new revision gets that share and the previous one keeps the rest; a new
revision that never becomes ready gets no traffic (KServe keeps routing to the last ready one).
The rendered manifest (catdog/deploy/kustomize.py) is validated against KServe's and Kubernetes'
API models, and the model checked, before the first call to the cluster.
"""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Any

from catdog.deploy.checks import ManifestError, require_gcs, verify_model
from catdog.deploy.kustomize import DEFAULT_MANIFEST, render
from catdog.k8s_names import DNS_LABEL, MAX_SERVICE_NAME

logger = logging.getLogger("catdog.deploy")

KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
KSERVE_API_VERSION = f"{KSERVE_GROUP}/{KSERVE_VERSION}"
KSERVE_CONTAINER = "kserve-container"  # the name KServe gives the predictor's model-server container
STORAGE_URI_ENV = "STORAGE_URI"  # on a custom container, KServe's storage initializer fetches this to /mnt/models


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

    require_gcs(model_uri, "KServe's storage initializer")
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


