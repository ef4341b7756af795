"""manifests/feedback (the feedback web app on Kubernetes) and feedback/Dockerfile, checked statically.

tests/manifests/test_manifests.py already renders every kustomization (and compares it with `kubectl
kustomize` where one is installed) and validates every object against the Kubernetes API models.
Here: what those models cannot see. The probes hit the app's real routes on the container's port,
the Service reaches that port, no secret value is in a manifest, SQLite gets one pod on its PVC,
the Cloud SQL overlay has its proxy sidecar and no PVC, every reference resolves, the ConfigMap
holds valid settings of the app, and the Dockerfile (parsed as text; no image is built here)
agrees with all of it and installs only what the app needs.
"""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from catdog.deploy import ManifestError, render
from tests.helpers import REPO_ROOT
from tests.manifests.test_manifests import MANIFESTS, _validate

REPO = REPO_ROOT
DOCKERFILE = REPO / "feedback" / "Dockerfile"
DOCKERIGNORE = REPO / "feedback" / "Dockerfile.dockerignore"
DOC = REPO / "docs" / "feedback-deploy.md"
SQLITE, CLOUDSQL = "feedback", "feedback/overlays/cloudsql"
FLAVOURS = [SQLITE, CLOUDSQL]
NAME = "catdog-feedback"  # the Deployment, Service, ConfigMap, ServiceAccount and Secret
APP_CONTAINER = "feedback"
NAMESPACE = "catdog"
DATA_DIR = "/data"
SECRET_KEYS = {"APP_TOKEN": False, "DATABASE_URL": True, "LOGGER_TOKEN": True}  # key -> optional
PUSHED_IMAGE = "REGION-docker.pkg.dev/PROJECT/catdog/catdog-feedback:0.1.0"
# the training and serving stacks; kfp and aiplatform are in: the app submits remote retraining runs
FORBIDDEN_PACKAGES = {"tensorflow", "tensorflow-cpu", "tf-keras", "keras", "kserve", "onnxruntime", "torch"}
APP_PACKAGES = ("catdog", "feedback", "pipelines", "components")  # the project's code the image copies


# --- helpers ------------------------------------------------------------------------------------

def _objects(flavour: str) -> dict[tuple[str, str], dict]:
    docs = render(MANIFESTS / flavour)
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _pod(objects: dict) -> dict:
    return objects[("Deployment", NAME)]["spec"]["template"]["spec"]


def _containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _app(pod: dict) -> dict:
    (container,) = [c for c in pod["containers"] if c["name"] == APP_CONTAINER]
    return container


def _port_number(container: dict, port) -> int:
    """A probe's or Service's port (a number or a container port's name) -> the number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return number


def _config(objects: dict) -> dict[str, str]:
    return objects[("ConfigMap", NAME)]["data"]


def _strings(node, path=""):
    """(path, value) for every string in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def _secret_problems(docs: list[dict]) -> list[str]:
    """Every way a secret value could sit in these manifests; [] when none does."""
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Secret":
            problems.append(f"{where}: a Secret is checked in")
        if doc["kind"] == "ConfigMap":
            for key in doc.get("data", {}):
                if re.search(r"TOKEN|PASSWORD|SECRET|CREDENTIAL", key, re.I):
                    problems.append(f"{where}: key {key} in a ConfigMap")
        for path, value in _strings(doc):
            if "://" in value and urlsplit(value).password:
                problems.append(f"{where}{path}: a URL with a password")
        for container in _containers(doc["spec"]["template"]["spec"]) if doc["kind"] == "Deployment" else []:
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    problems.append(f"{where} {container['name']}: envFrom a Secret (name its keys instead)")
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if env["name"] in SECRET_KEYS or re.search(r"TOKEN|PASSWORD|SECRET", env["name"], re.I):
                    if "value" in env or ref is None:
                        problems.append(f"{where} {container['name']}: {env['name']} not from a secretKeyRef")
                if ref is not None:
                    if ref.get("name") != NAME or ref.get("key") not in SECRET_KEYS:
                        problems.append(f"{where} {container['name']}: {env['name']} from {ref}")
                    elif bool(ref.get("optional", False)) != SECRET_KEYS[ref["key"]]:
                        problems.append(f"{where} {container['name']}: {ref['key']} optional={ref.get('optional')}")
    return problems


def _dockerfile(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction: comments dropped, continuation lines joined."""
    instructions, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # (Docker drops comment and empty lines inside a continuation too)
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, rest = (current + stripped).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, f"{path}: ends inside a continuation"
    return instructions


def _last(instruction: str) -> str:
    return [args for keyword, args in _dockerfile() if keyword == instruction][-1]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile()
    start = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[start:]


def _pip_requirements() -> list[Requirement]:
    """The packages the Dockerfile's `pip install` names (options such as -c dropped)."""
    (run,) = [args for keyword, args in _dockerfile() if keyword == "RUN" and "pip install" in args]
    command = run.split("pip install", 1)[1].split("&&", 1)[0]
    command = shlex.split(re.sub(r"\$\{[^}]*\}", " ", command))  # ${WHEELHOUSE:+--no-index ...}: options only
    packages, skip = [], False
    for token in command:
        if skip:
            skip = False
        elif token in ("-c", "--constraint", "-r", "--requirement"):
            skip = True
        elif not token.startswith("-"):
            packages.append(Requirement(token))
    return packages


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            pins[canonicalize_name(name)] = version
    return pins


# --- what the flavours render ------------------------------------------------------------------

@pytest.mark.parametrize("flavour, expected", [
    (SQLITE, {("ServiceAccount", NAME), ("ConfigMap", NAME), ("Service", NAME), ("Deployment", NAME),
              ("PersistentVolumeClaim", "catdog-feedback-data")}),
    (CLOUDSQL, {("ServiceAccount", NAME), ("ConfigMap", NAME), ("Service", NAME), ("Deployment", NAME)}),
])
def test_each_flavour_renders_its_objects_in_namespace_catdog(flavour, expected):
    objects = _objects(flavour)
    assert set(objects) == expected
    for doc in objects.values():
        assert doc["metadata"]["namespace"] == NAMESPACE
        _validate(doc)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_probes_hit_health_and_ready_on_the_container_port_and_the_service_reaches_it(flavour):
    from feedback.web.routers import status

    objects = _objects(flavour)
    deployment, service = objects[("Deployment", NAME)], objects[("Service", NAME)]
    pod = _pod(objects)
    app = _app(pod)
    assert [p["containerPort"] for p in app["ports"]] == [8000]
    probes = {kind: app[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: (get["path"], _port_number(app, get["port"])) for kind, get in probes.items()} == {
        "startupProbe": ("/health", 8000), "livenessProbe": ("/health", 8000), "readinessProbe": ("/ready", 8000)}
    assert {"/health", "/ready"} <= {route.path for route in status.router.routes}  # the app's own routes
    # the Service: ClusterIP, port 80 -> the container's port, selecting these pods
    assert service["spec"]["type"] == "ClusterIP"
    assert [(p["port"], _port_number(app, p["targetPort"])) for p in service["spec"]["ports"]] == [(80, 8000)]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_no_secret_value_in_any_manifest(flavour):
    docs = render(MANIFESTS / flavour)
    assert _secret_problems(docs) == []
    app = _app(_pod({(d["kind"], d["metadata"]["name"]): d for d in docs}))
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in app["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert set(refs) == set(SECRET_KEYS)
    assert not refs["APP_TOKEN"].get("optional", False)  # the server refuses 0.0.0.0 without it
    # and no file under manifests/feedback holds a Secret, rendered or not
    for path in (MANIFESTS / "feedback").rglob("*.yaml"):
        assert all(d.get("kind") != "Secret" for d in yaml.safe_load_all(path.read_text()) if d), path


@pytest.mark.parametrize("mistake, expected", [
    (lambda app, cm: app["env"].append({"name": "APP_TOKEN", "value": "s3cret"}), "APP_TOKEN not from a secretKeyRef"),
    (lambda app, cm: app["env"][0]["valueFrom"]["secretKeyRef"].update(optional=True), "APP_TOKEN optional=True"),
    (lambda app, cm: app["envFrom"].append({"secretRef": {"name": NAME}}), "envFrom a Secret"),
    (lambda app, cm: cm.update(DATABASE_URL="postgresql+psycopg://u:pw@127.0.0.1/db"), "a URL with a password"),
    (lambda app, cm: cm.update(APP_TOKEN="abc"), "key APP_TOKEN in a ConfigMap"),
    (lambda app, cm: app["env"].append({"name": "DB_PASSWORD", "value": "pw"}), "DB_PASSWORD not from a secretKeyRef"),
])
def test_the_secret_check_catches_a_leak(mistake, expected):
    objects = copy.deepcopy(_objects(SQLITE))
    mistake(_app(_pod(objects)), _config(objects))
    assert any(expected in problem for problem in _secret_problems(list(objects.values())))


def test_sqlite_flavour_is_one_pod_on_its_pvc():
    from sqlalchemy.engine import make_url

    objects = _objects(SQLITE)
    deployment, pvc = objects[("Deployment", NAME)], objects[("PersistentVolumeClaim", "catdog-feedback-data")]
    pod = _pod(objects)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two pods on the database
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _app(pod)["volumeMounts"]}
    assert volumes[mounts[DATA_DIR]]["persistentVolumeClaim"] == {"claimName": pvc["metadata"]["name"]}
    assert "initContainers" not in pod
    database = make_url(_config(objects)["DATABASE_URL"])
    assert database.get_backend_name() == "sqlite" and database.database.startswith(DATA_DIR + "/")
    assert _config(objects)["FEEDBACK_URI"].startswith(DATA_DIR + "/")


def test_cloudsql_overlay_has_the_proxy_sidecar_and_no_pvc():
    objects = _objects(CLOUDSQL)
    deployment = objects[("Deployment", NAME)]
    pod = _pod(objects)
    config = _config(objects)
    assert not [k for k in objects if k[0] == "PersistentVolumeClaim"]
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (proxy,) = pod["initContainers"]
    assert proxy["image"].startswith("gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.")
    assert proxy["restartPolicy"] == "Always"  # a native sidecar: up before the app's migrations
    args = dict(a.removeprefix("--").partition("=")[::2] for a in proxy["args"])
    assert proxy["startupProbe"]["httpGet"]["port"] == int(args["http-port"])
    assert proxy["livenessProbe"]["httpGet"]["port"] == int(args["http-port"])
    env = {e["name"]: e["valueFrom"]["configMapKeyRef"]["key"] for e in proxy["env"]}
    # the database listener stays on 127.0.0.1 (the proxy's default): no --address, no CSQL_PROXY_ADDRESS
    assert "address" not in args and "CSQL_PROXY_ADDRESS" not in env
    assert re.fullmatch(r"[^:\s]+:[^:\s]+:[^:\s]+", config[env["CSQL_PROXY_INSTANCE_CONNECTION_NAME"]])
    assert config[env["CSQL_PROXY_PORT"]] in ("5432", "3306")
    assert config["FEEDBACK_URI"].startswith("gs://")
    assert objects[("ServiceAccount", NAME)]["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        ".iam.gserviceaccount.com")
    # the overlay changes the pod around the app, never the app container itself
    assert _app(pod) == _app(_pod(_objects(SQLITE)))


def test_cloudsql_without_database_url_in_the_secret_stops_at_start_up():
    """The overlay's ConfigMap DATABASE_URL is what the app gets when the Secret lacks one: the
    app's own open_database must refuse it, naming the Secret (not fall back to a pod-local SQLite)."""
    from sqlalchemy.exc import SQLAlchemyError

    from feedback.store.db import open_database

    placeholder = _config(_objects(CLOUDSQL))["DATABASE_URL"]
    with pytest.raises(SQLAlchemyError, match="DATABASE_URL_in_the_catdog_feedback_Secret"):
        open_database(placeholder).engine.connect()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_non_root_read_only_and_bounded(flavour):
    pod = _pod(_objects(flavour))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    for container in _containers(pod):
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True, container["name"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), container["name"]
        assert "memory" in container["resources"]["limits"], container["name"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _app(pod)["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # writable /tmp on a read-only root


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_reference_resolves(flavour):
    objects = _objects(flavour)
    pod = _pod(objects)
    volumes = [v["name"] for v in pod["volumes"]]
    assert len(set(volumes)) == len(volumes)
    mounted = set()
    for container in _containers(pod):
        paths = [m["mountPath"] for m in container.get("volumeMounts", [])]
        assert len(set(paths)) == len(paths), container["name"]
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, (container["name"], mount)
            mounted.add(mount["name"])
        for source in container.get("envFrom", []):
            assert ("ConfigMap", source["configMapRef"]["name"]) in objects
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("configMapKeyRef")
            if ref is not None:
                assert ("ConfigMap", ref["name"]) in objects, env
                assert ref.get("optional") or ref["key"] in objects[("ConfigMap", ref["name"])]["data"], env
    assert mounted == set(volumes)  # no volume declared for nothing
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in objects
    assert ("ServiceAccount", pod["serviceAccountName"]) in objects


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_configmap_holds_valid_settings_of_the_app(flavour):
    """Every ConfigMap key is a setting the app reads (a typo'd name would be silently ignored),
    and the values load as the server in the image loads them (host 0.0.0.0, a token in the Secret)."""
    from feedback.settings import ENVIRONMENT, SettingsError, load_settings

    config = _config(_objects(flavour))
    proxy_keys = {k for k in config if k.startswith("CLOUD_SQL_")}  # read by the proxy sidecar
    assert set(config) - proxy_keys <= set(ENVIRONMENT)
    settings = load_settings({**config, "APP_TOKEN": "from-the-secret"}, host="0.0.0.0", port=8000)
    assert settings.predictor_protocol == "kserve"
    with pytest.raises(SettingsError, match="APP_TOKEN"):
        load_settings(config, host="0.0.0.0", port=8000)


def test_predictor_url_is_the_base_inference_service_in_the_same_namespace():
    (isvc,) = render(MANIFESTS / "base")
    name = isvc["metadata"]["name"]
    args = isvc["spec"]["predictor"]["containers"][0]["args"]
    for flavour in FLAVOURS:
        config = _config(_objects(flavour))
        # KServe's predictor Service, <isvc>-predictor, exists in Knative and Standard (raw) mode alike
        assert config["PREDICTOR_URL"] == f"http://{name}-predictor.{NAMESPACE}.svc.cluster.local"
        assert config["PREDICTOR_MODEL"] == args[args.index("--model-name") + 1]
    (prod,) = render(MANIFESTS / "overlays" / "prod")
    assert prod["metadata"]["namespace"] == NAMESPACE  # where the prod InferenceService goes


def test_images_follow_the_placeholder_convention():
    (shared,) = [d for d in render(MANIFESTS / "feedback" / "app") if d["kind"] == "Deployment"]
    assert _app(shared["spec"]["template"]["spec"])["image"] == "catdog-feedback:0.1.0"
    for flavour in FLAVOURS:
        assert _app(_pod(_objects(flavour)))["image"] == PUSHED_IMAGE


@pytest.mark.parametrize("path, value, rename, expected", [
    ("spec.template.spec.containers.0.readinessProbe.httpGet.path", None, "paht", "unknown field(s) ['paht']"),
    ("spec.template.spec.containers.0.env.0.valueFrom.secretKeyRef.name", None, "nmae", "unknown field(s) ['nmae']"),
    ("spec.template.spec.containers.0.ports.0.containerPort", "8000", None, "containerPort: expected int"),
    ("spec.template.spec.initContainers.0.restartPolicy", None, "restartpolicy", "['restartpolicy']"),
    ("spec.template.spec.volumes.0.emptyDir", None, "emptydir", "['emptydir']"),
    ("spec.replicas", "2", None, "replicas: expected int"),
    ("apiVersion", "apps/v1beta1", None, "expected 'apps/v1'"),
    ("kind", "Secret", None, "no validation for kind 'Secret'"),
])
def test_a_typo_in_the_deployment_fails_naming_the_field(path, value, rename, expected):
    doc = copy.deepcopy(_objects(CLOUDSQL)[("Deployment", NAME)])
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if rename is not None:
        node[rename] = node.pop(last)
    else:
        node[last] = value
    with pytest.raises(ManifestError) as info:
        _validate(doc)
    assert expected in str(info.value)


# --- the Dockerfile ----------------------------------------------------------------------------

def test_dockerfile_command_port_user_and_data_dir_agree_with_the_manifests():
    from feedback.web.server import build_parser

    entrypoint, cmd = json.loads(_last("ENTRYPOINT")), json.loads(_last("CMD"))
    assert entrypoint == ["python", "-m", "feedback.web.server"]
    args = build_parser().parse_args(cmd)
    exposed = [int(p.split("/")[0]) for p in _last("EXPOSE").split()]
    user, _, group = _last("USER").partition(":")
    healthcheck = json.loads(_last("HEALTHCHECK").split(" CMD ", 1)[1])
    final = _final_stage()
    workdir = [args_ for keyword, args_ in final if keyword == "WORKDIR"][-1]
    volumes = [v for keyword, args_ in final if keyword == "VOLUME" for v in json.loads(args_)]
    assert args.host == "0.0.0.0"
    assert exposed == [args.port] == [8000]
    assert f"http://127.0.0.1:{args.port}/health" in healthcheck[-1]
    assert workdir == DATA_DIR and volumes == [DATA_DIR]
    for flavour in FLAVOURS:
        pod = _pod(_objects(flavour))
        app = _app(pod)
        assert "command" not in app and "args" not in app  # the image's command runs as is
        assert [p["containerPort"] for p in app["ports"]] == [args.port]
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(user), int(group))
        assert {m["mountPath"] for m in app["volumeMounts"]} >= {workdir}


def test_dockerfile_base_image_and_non_root_user():
    instructions = _dockerfile()
    args = dict(a.split("=", 1) for keyword, a in instructions if keyword == "ARG" and "=" in a)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a.split()[0])
             for keyword, a in instructions if keyword == "FROM"]
    assert len(bases) == 2 and all(base.startswith("python:3.11-slim") for base in bases)  # multi-stage, like serving's
    final = [keyword for keyword, _ in _final_stage()]
    assert "USER" in final and final.index("USER") < final.index("ENTRYPOINT")
    assert _last("USER").split(":")[0] not in ("root", "0")


def test_dockerfile_copies_only_the_app_s_code_and_the_compiled_pipeline():
    copies = [shlex.split(args) for keyword, args in _dockerfile() if keyword in ("COPY", "ADD")]
    assert all(keyword != "ADD" for keyword, _ in _dockerfile())
    from_context = [[a for a in c if not a.startswith("--")] for c in copies if not any(a.startswith("--from=") for a in c)]
    sources = {source for *sources_, _destination in from_context for source in sources_}
    assert sources == {"requirements.lock", "compiled/", *(f"{p}/" for p in APP_PACKAGES)}
    packages = {Path(c[-1]).name for c in from_context if c[-1].startswith("/app/")}
    assert packages == {"compiled", *APP_PACKAGES}
    # the build context holds nothing else (BuildKit reads feedback/Dockerfile.dockerignore)
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"
    # container_tests/wheelhouse: make image-test's wheels, bind-mounted for pip (WHEELHOUSE), never copied
    assert {p for p in patterns if p.startswith("!")} == {"!requirements.lock", "!compiled/", "!container_tests/wheelhouse/",
                                                          *(f"!{p}/" for p in APP_PACKAGES)}


def test_dockerfile_installs_no_training_or_serving_stack_and_pins_every_package():
    run = [args for keyword, args in _dockerfile() if keyword == "RUN" and "pip install" in args][0]
    assert "-c /tmp/requirements.lock" in run  # constraints: the lock's versions
    installed = {canonicalize_name(r.name) for r in _pip_requirements()}
    assert not installed & FORBIDDEN_PACKAGES
    instructions = " ".join(f"{keyword} {args}" for keyword, args in _dockerfile()).lower()  # comments dropped
    assert not re.search(r"tensorflow|kserve|onnxruntime", instructions)
    needed = {"fastapi", "uvicorn", "jinja2", "python-multipart", "httpx", "sqlalchemy", "alembic", "psycopg",
              "pymysql", "pillow", "numpy", "pydantic", "google-cloud-storage", "google-auth"}
    assert needed <= installed
    lock = _lock()
    assert installed - set(lock) == set()  # a name the lock lacks would install unpinned
    # and so are their dependencies (as installed here, from the same lock, on the same Python 3.11)
    assert _closure(_pip_requirements()) - set(lock) == set()
    binary = [r for r in _pip_requirements() if canonicalize_name(r.name) == "psycopg"][0]
    assert binary.extras == {"binary"} and "psycopg-binary" in lock


def _imported_modules(path: Path, module_level_only: bool = False) -> set[str]:
    names = set()
    tree = ast.parse(path.read_text())
    for node in (tree.body if module_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _distribution_of(module: str, candidates: list[str]) -> str | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin in (None, "namespace"):
        return None  # not a module, or a namespace package (google, google.cloud): its portions are checked
    origin = Path(spec.origin).resolve()
    for name in candidates:
        if any(Path(file.locate()).resolve() == origin for file in importlib.metadata.distribution(name).files or []):
            return canonicalize_name(name)
    return None


def _closure(requirements: list[Requirement]) -> set[str]:
    """The distributions these requirements install, dependencies included (as installed here)."""
    seen, todo = set(), [(canonicalize_name(r.name), frozenset(r.extras)) for r in requirements]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for spec in requires:
            requirement = Requirement(spec)
            if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in {"", *extras}):
                continue
            todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return {name for name, _ in seen}


def test_the_image_has_every_package_feedback_imports():
    """feedback/ and the catdog modules it imports (every import, lazy ones too) need only what the
    Dockerfile installs, with its dependencies: a new import in the app fails here, not in a pod.
    The pipelines/ modules the app imports (the run config, `make run`'s parser, the remote
    submission), and what they import, are followed at module level: their functions that need the
    training stack (run_local, the deploy step's KServe objects) run in the pipeline's own process
    or image, never in the app's, and the app's remote launchers are scanned whole in feedback/."""
    todo = [(path, False) for path in sorted((REPO / "feedback").rglob("*.py"))]
    modules, seen_files = set(), set()
    while todo:
        path, module_level_only = todo.pop()
        if (path, module_level_only) in seen_files or (path, False) in seen_files:
            continue
        seen_files.add((path, module_level_only))
        for module in _imported_modules(path, module_level_only):
            top = module.split(".")[0]
            if top in APP_PACKAGES:
                for file in (REPO / (module.replace(".", "/") + ".py"), REPO / module.replace(".", "/") / "__init__.py"):
                    if file.is_file():
                        todo.append((file, module_level_only or top in ("pipelines", "components")))
            elif module.split(".")[0] not in {"__future__", *sys.stdlib_module_names}:
                modules.add(module)
    assert any(p.parent.name == "catdog" for p, _ in seen_files)  # the scan did follow catdog imports
    assert any(p.parent.name == "pipelines" for p, _ in seen_files)
    top_level = importlib.metadata.packages_distributions()
    needed = {}
    for module in sorted(modules):
        candidates = top_level.get(module.split(".")[0], [])
        dist = _distribution_of(module, candidates)
        if dist is not None:
            needed.setdefault(dist, module)
        elif "." not in module or importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.fail(f"{module} (imported by feedback/ or catdog/) is not installed here at all")
    image = _closure(_pip_requirements())
    missing = {dist: module for dist, module in needed.items() if dist not in image}
    assert missing == {}, f"imported, but not installed by feedback/Dockerfile: {missing}"


# --- the deploy doc ----------------------------------------------------------------------------

def test_the_deploy_doc_matches_the_manifests():
    text = DOC.read_text()
    for path in re.findall(r"kubectl apply -k (\S+)", text):
        assert (REPO / path / "kustomization.yaml").is_file(), path
    assert f"create secret generic {NAME}" in text
    for key in SECRET_KEYS:
        assert f"{key}=" in text
    assert "docker build -f feedback/Dockerfile" in text
    assert "PREDICTOR_PROTOCOL=vertex" in text or "PREDICTOR_PROTOCOL: vertex" in text
    assert "roles/aiplatform.user" in text and "roles/cloudsql.client" in text
    assert _config(_objects(SQLITE))["PREDICTOR_URL"] in text
