"""`make image-test`: build the predictor and component images with podman and run them for real.

No container registry is needed: the base is a local Debian 12 root (debootstrap, Python 3.11 from
Debian) imported into podman in place of python:3.11-slim-bookworm, and pip installs from a local
wheelhouse (images/wheelhouse, `pip wheel` of the lock's runtime packages) with no index and no
network (`podman build --network none`). Then:

predictor  build serving/Dockerfile, then run the image twice, on the host's loopback
           (--network host, bound to 127.0.0.1):
           - KServe: the model mounted read-only at /mnt/models (where KServe's storage initializer
             puts it), the container args of manifests/base/inferenceservice.yaml;
           - Vertex AI: no args, AIP_HTTP_PORT / AIP_HEALTH_ROUTE / AIP_PREDICT_ROUTE /
             AIP_STORAGE_URI (a gs:// model on a gcp-storage-emulator started here);
           each: readiness, the model served is the one given (x-model-version), V1 and V2 (and
           Vertex) predictions, bad requests (4xx, never 5xx), the server runs as uid 10001.
components build components/Dockerfile, then run the ingest component inside it the way KFP's
           launcher does: the executor's command and args from compiled/training_pipeline.yaml, the
           placeholders filled by kfp.local's own code (executor input JSON), the pipeline root
           mounted at the same path (kfp.local's DockerRunner), on a small synthetic dataset;
           checks the exit code, the executor output and the artifacts.

Each part's time and each image's size are printed at the end. The Debian root is cached as a
tarball in --cache (IMAGE_CACHE, default ~/.cache/catdog-images) and the wheelhouse in
images/wheelhouse (git-ignored) until requirements.lock changes; podman's storage lives in
--cache too (its own store: nothing else of podman's is touched). Built images are removed at the
end unless --keep-images. Needs root, podman and runc (apt-get install podman runc debootstrap),
debootstrap and the Debian mirror apt uses the first time. Run with the project's .venv python.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the test model is built with TensorFlow here

CONTAINERS_CONF = REPO / "images" / "containers.conf"
WHEELHOUSE = REPO / "images" / "wheelhouse"
WHEELHOUSE_ARG = "images/wheelhouse"  # the Dockerfiles' WHEELHOUSE build argument: a folder of the context
BASE_IMAGE = "localhost/catdog-debian:bookworm-python3.11"
DEBIAN_PACKAGES = ["python3", "python3-venv", "ca-certificates", "netbase"]
PARTS = ("predictor", "components")
USER_ID = "10001"
LOOPBACK = "127.0.0.1"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
READY_TIMEOUT_S = 180


class Failure(Exception):
    pass


# -- output -------------------------------------------------------------------------------------

TIMES: list[tuple[str, float, str]] = []  # (part, seconds, note)
RESULTS: list[tuple[str, bool, str]] = []  # (check, passed, detail)


def say(message: str) -> None:
    print(f"[image-test] {message}", flush=True)


@contextmanager
def timed(part: str, note: str = ""):
    say(f"{part} ...")
    start = time.monotonic()
    holder = {"note": note}
    try:
        yield holder
    finally:
        seconds = time.monotonic() - start
        TIMES.append((part, seconds, holder["note"]))
        say(f"{part}: {seconds:.1f} s {holder['note']}".rstrip())


def check(name: str, passed: bool, detail: str = "") -> bool:
    RESULTS.append((name, bool(passed), detail))
    print(f"  {'ok  ' if passed else 'FAIL'} {name}" + (f": {detail}" if detail and not passed else ""), flush=True)
    return bool(passed)


def human(size: float) -> str:
    """Decimal units, as podman prints sizes."""
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit != "MB" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


# -- podman -------------------------------------------------------------------------------------

class Podman:
    """podman with this test's own store under the cache, our containers.conf and runc."""

    def __init__(self, cache: Path, driver: str):
        self.root = cache / f"storage-{driver}"
        # podman wants a short runroot (under 50 characters); /run is cleared at boot, as a runroot must be
        self.runroot = Path("/run" if os.access("/run", os.W_OK) else "/tmp") / f"catdog-image-test-{driver}"
        self.driver = driver
        self.env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.root), "--runroot", str(self.runroot),
                "--storage-driver", self.driver, *args]

    def __call__(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(self.argv(*args), check=False, env=self.env, text=True, timeout=timeout,
                                capture_output=True)
        if check and result.returncode != 0:
            raise Failure(f"podman {' '.join(args[:3])} ... exited {result.returncode}:\n"
                          f"{(result.stderr or '')[-3000:]}")
        return result

    def image_exists(self, name: str) -> bool:
        return self("image", "exists", name, check=False).returncode == 0

    def image_size(self, name: str) -> int:
        return int(self("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())

    def shell_prefix(self) -> str:
        return f"CONTAINERS_CONF={shlex.quote(str(CONTAINERS_CONF))} {shlex.join(self.argv())}"


def require_tools() -> None:
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing:
        raise Failure(f"{' and '.join(missing)} not found: apt-get install podman runc debootstrap")
    if os.geteuid() != 0:
        raise Failure("run as root: the Debian base (debootstrap) and these podman settings need it")


# -- the Debian base ----------------------------------------------------------------------------

def apt_mirror(files: list[Path] | None = None) -> str:
    """The Debian mirror apt uses here (deb822 .sources or one-line .list), else deb.debian.org."""
    if files is None:
        files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        uris = [*re.findall(r"^\s*URIs:\s*(.+)$", text, re.MULTILINE),  # deb822 (.sources)
                *re.findall(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.MULTILINE)]  # one-line
        for uri in " ".join(uris).split():
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def slim_down(rootfs: Path) -> None:
    """What debian:bookworm-slim leaves out: apt's lists and caches, docs but copyrights, man pages, locales."""
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*", "usr/share/lintian/*"):
        for path in rootfs.glob(pattern):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in (rootfs / "usr/share/doc").glob("*/*"):
        if path.name != "copyright":
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def ensure_base(podman: Podman, cache: Path, mirror: str, refresh: bool) -> str:
    """The local stand-in for python:3.11-slim-bookworm; returns how it was obtained."""
    tarball = cache / "debian-bookworm-python3.11.tar"
    if podman.image_exists(BASE_IMAGE) and not refresh:
        return "in podman's store"
    how = "from the cached tarball"
    if refresh or not tarball.is_file():
        if shutil.which("debootstrap") is None:
            raise Failure("debootstrap not found: apt-get install debootstrap")
        rootfs = cache / "rootfs.partial"
        shutil.rmtree(rootfs, ignore_errors=True)
        say(f"debootstrap bookworm from {mirror} (about a minute)")
        result = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
                                 "bookworm", str(rootfs), mirror], check=False, capture_output=True, text=True)
        if result.returncode != 0:
            raise Failure(f"debootstrap failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        slim_down(rootfs)
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", f"{tarball}.partial", "."], check=True)
        os.replace(f"{tarball}.partial", tarball)
        shutil.rmtree(rootfs, ignore_errors=True)
        how = f"debootstrap from {mirror}"
    # like the official image: UTF-8 locale, python3 as the default command
    podman("import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', str(tarball), BASE_IMAGE)
    version = podman("run", "--rm", "--network", "none", BASE_IMAGE, "python3", "-c",
                     "import platform; print(platform.python_version())").stdout.strip()
    if not version.startswith("3.11."):
        raise Failure(f"the Debian base has Python {version}, not 3.11")
    return f"{how}, Python {version}"


# -- the wheelhouse -----------------------------------------------------------------------------

def runtime_requirements() -> list[str]:
    """pyproject.toml's runtime dependencies (the component image) and the predictor's list."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return [*deps, *serving_packages()]


def serving_packages() -> list[str]:
    """The package names serving/Dockerfile's pip step installs (after its -c constraints)."""
    text = (REPO / "serving" / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"pip install .*?-c /tmp/requirements\.lock (.*?)&&", text)
    if not match:
        raise Failure("serving/Dockerfile: no `pip install ... -c /tmp/requirements.lock <packages> &&` step")
    return match.group(1).split()


def ensure_wheelhouse(python: str) -> str:
    """Wheels of every runtime package at the lock's versions, for Debian 12's CPython 3.11 (x86_64)."""
    requirements = sorted(set(runtime_requirements()))
    lock = (REPO / "requirements.lock").read_bytes()
    digest = hashlib.sha256(lock + "\n".join(requirements).encode()).hexdigest()
    stamp = WHEELHOUSE / ".stamp"
    if stamp.is_file() and stamp.read_text().strip() == digest and any(WHEELHOUSE.glob("*.whl")):
        return f"cached ({len(list(WHEELHOUSE.glob('*.whl')))} wheels)"
    for old in WHEELHOUSE.glob("*.whl"):
        old.unlink()
    stamp.unlink(missing_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(requirements) + "\n")
    try:
        # sdist-only packages (kfp-server-api, ...) are built into wheels here: the build has no index
        result = subprocess.run([python, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                                 "-c", str(REPO / "requirements.lock"), "-r", handle.name, "-w", str(WHEELHOUSE)],
                                check=False, capture_output=True, text=True)
    finally:
        os.unlink(handle.name)
    if result.returncode != 0:
        raise Failure(f"pip wheel failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    stamp.write_text(digest + "\n")
    wheels = list(WHEELHOUSE.glob("*.whl"))
    return f"{len(wheels)} wheels, {human(sum(w.stat().st_size for w in wheels))}"


# -- builds ---------------------------------------------------------------------------------------

def build(podman: Podman, dockerfile: str, tag: str, layers: bool) -> None:
    result = podman("build", "--pull=never", "--network", "none", f"--layers={str(layers).lower()}",
                    "-f", dockerfile, "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
                    "--build-arg", f"WHEELHOUSE={WHEELHOUSE_ARG}", "-t", tag, str(REPO), check=False)
    if result.returncode != 0:
        print(result.stdout[-6000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
        raise Failure(f"podman build -f {dockerfile} failed ({result.returncode})")


# -- helpers for the runs -------------------------------------------------------------------------

def free_port() -> int:
    from tests.helpers import free_port as _free_port

    return _free_port()


def world_readable_copy(source: Path, target: Path) -> Path:
    """A copy the container's uid can read (tempfile's folders are 0700)."""
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


@contextmanager
def container(podman: Podman, name: str, image: str, *run_args: str, args: tuple[str, ...] = ()):
    podman("rm", "-f", name, check=False)
    podman("run", "-d", "--name", name, *run_args, image, *args)

    def show_logs():
        logs = podman("logs", name, check=False)
        print(f"--- last log lines of {name} ---\n{(logs.stdout + logs.stderr)[-4000:]}", file=sys.stderr)

    try:
        yield name
    except BaseException:
        show_logs()
        raise
    else:
        if any(not passed for _, passed, _ in RESULTS):
            show_logs()
    finally:
        podman("rm", "-f", "-t", "5", name, check=False)


def wait_ready(podman: Podman, name: str, url: str) -> float:
    import requests

    start = time.monotonic()
    while time.monotonic() - start < READY_TIMEOUT_S:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        state = podman("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip()
        if state != "true":
            logs = podman("logs", name, check=False)
            raise Failure(f"{name} exited before it was ready:\n{(logs.stdout + logs.stderr)[-4000:]}")
        time.sleep(0.5)
    raise Failure(f"{name}: {url} not ready after {READY_TIMEOUT_S} s")


def process_uid(podman: Podman, name: str) -> str:
    """The real uid of the container's main process (not just exec's default user)."""
    status = podman("exec", name, "cat", "/proc/1/status").stdout
    match = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
    return match.group(1) if match else "?"


# -- predictor ------------------------------------------------------------------------------------

def kserve_container_args() -> list[str]:
    """The args of the InferenceService's kserve-container (manifests/base/inferenceservice.yaml)."""
    import yaml

    spec = yaml.safe_load((REPO / "manifests" / "base" / "inferenceservice.yaml").read_text())
    (predictor,) = [c for c in spec["spec"]["predictor"]["containers"] if c["name"] == "kserve-container"]
    return [str(a) for a in predictor.get("args", [])]


def predictor_checks(base: str, mode: str, expected_version: str, vertex_routes: tuple[str, str] | None) -> None:
    import requests

    from tests.helpers import png_header_only
    from tests.serving_fixtures import b64, photo, v1_json, v2_json

    good = [photo(0), photo(1, fmt="PNG", size=(90, 70))]

    def post(path, **kwargs):
        return requests.post(base + path, timeout=60, **kwargs)

    metadata = requests.get(base + "/v2/models/catdog", timeout=10)
    check(f"{mode}: GET /v2/models/catdog (metadata)", metadata.status_code == 200
          and metadata.json().get("name") == "catdog", metadata.text[:300])

    v1 = post("/v1/models/catdog:predict", json=v1_json(*good))
    body = v1.json() if v1.headers.get("content-type", "").startswith("application/json") else {}
    predictions = body.get("predictions", [])
    check(f"{mode}: V1 predict, 2 photos", v1.status_code == 200 and len(predictions) == 2 and all(
        p.get("label") in ("cat", "dog") and abs(sum(p.get("probabilities", {}).values()) - 1) < 1e-3
        for p in predictions), f"{v1.status_code} {v1.text[:300]}")
    check(f"{mode}: the model served is the one given (x-model-version)",
          v1.headers.get("x-model-version") == expected_version,
          f"{v1.headers.get('x-model-version')!r} != {expected_version!r}")

    v2 = post("/v2/models/catdog/infer", json=v2_json(*good, request_id="image-test"))
    outputs = {o["name"]: o for o in v2.json().get("outputs", [])} if v2.status_code == 200 else {}
    check(f"{mode}: V2 infer, 2 photos", v2.status_code == 200 and v2.json().get("id") == "image-test"
          and outputs.get("label", {}).get("data") == [p["label"] for p in predictions]
          and outputs.get("probabilities", {}).get("shape") == [2, 2], f"{v2.status_code} {v2.text[:300]}")

    if vertex_routes:
        health_route, predict_route = vertex_routes
        health = requests.get(base + health_route, timeout=10)
        check(f"{mode}: GET AIP_HEALTH_ROUTE {health_route}", health.status_code == 200, str(health.status_code))
        vertex = post(predict_route, json={"instances": [{"b64": b64(g)} for g in good]})
        got = vertex.json().get("predictions", []) if vertex.status_code == 200 else []
        check(f"{mode}: POST AIP_PREDICT_ROUTE {predict_route} (Vertex's instances format)",
              [p.get("label") for p in got] == [p["label"] for p in predictions],
              f"{vertex.status_code} {vertex.text[:300]}")
        bad = post(predict_route, json={"instances": "not a list"})
        check(f"{mode}: bad request on {predict_route} -> 400", bad.status_code == 400,
              f"{bad.status_code} {bad.text[:200]}")

    bad_requests = [
        ("malformed JSON", "/v1/models/catdog:predict",
         {"data": b'{"instances": [', "headers": {"content-type": "application/json"}}, 400),
        ("not an image", "/v1/models/catdog:predict",
         {"json": {"instances": [{"b64": b64(b"text, not a photo" * 20)}]}}, 400),
        ("decompression bomb", "/v2/models/catdog/infer", {"json": v2_json(png_header_only(30_000, 30_000))}, 400),
        ("V2 wrong datatype", "/v2/models/catdog/infer",
         {"json": {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "FP32", "data": [1.0]}]}}, 400),
        ("unknown model", "/v1/models/nope:predict", {"json": v1_json(good[0])}, 404),
        ("body over CATDOG_MAX_BODY_BYTES", "/v1/models/catdog:predict",
         {"json": {"instances": [{"b64": "A" * 300_000}]}}, 413),
    ]
    for what, path, kwargs, status in bad_requests:
        response = post(path, **kwargs)
        check(f"{mode}: bad request ({what}) -> {status}", response.status_code == status
              and "error" in response.json(), f"{response.status_code} {response.text[:200]}")
    again = post("/v1/models/catdog:predict", json=v1_json(good[0]))
    check(f"{mode}: still serving after the bad requests", again.status_code == 200, str(again.status_code))
    metrics = requests.get(base + "/metrics", timeout=10)
    check(f"{mode}: /metrics (Prometheus text)", metrics.status_code == 200 and "# TYPE" in metrics.text,
          str(metrics.status_code))


def run_predictor(podman: Podman, image: str, work: Path) -> None:
    from catdog import storage
    from serving.source import content_version
    from tests.serving_fixtures import tiny_model_dir

    with timed("test model (tiny_model_dir, built here)"):
        model = world_readable_copy(tiny_model_dir(), work / "model")
        version = content_version(model)
    limits = ["-e", "CATDOG_MAX_BODY_BYTES=200000"]

    with timed("predictor, KServe mode"):
        port = free_port()
        args = [*kserve_container_args(), "--host", LOOPBACK, "--port", str(port)]
        say(f"  podman run {image} {shlex.join(args)}, {model} at /mnt/models (read-only)")
        with container(podman, "catdog-image-test-kserve", image, "--network", "host",
                       "-v", f"{model}:/mnt/models:ro", *limits, args=tuple(args)) as name:
            base = f"http://{LOOPBACK}:{port}"
            seconds = wait_ready(podman, name, base + "/v2/health/ready")
            check(f"kserve: ready (/v2/health/ready) after {seconds:.1f} s", True)
            check("kserve: the server process runs as uid 10001", process_uid(podman, name) == USER_ID)
            predictor_checks(base, "kserve", version, None)

    with timed("predictor, Vertex AI mode"), gcs_emulator() as emulator:
        os.environ["STORAGE_EMULATOR_HOST"] = emulator
        storage.gcs_client.cache_clear()
        uri = "gs://catdog-image-test/vertex/model"
        storage.upload_tree(model, uri)
        port = free_port()
        routes = ("/vertex/health", "/vertex/predict")
        env = {"AIP_HTTP_PORT": str(port), "AIP_HEALTH_ROUTE": routes[0], "AIP_PREDICT_ROUTE": routes[1],
               "AIP_STORAGE_URI": uri, "AIP_MODE": "PREDICTION", "STORAGE_EMULATOR_HOST": emulator,
               "CATDOG_HOST": LOOPBACK}
        say(f"  podman run {image} (no args) with " + " ".join(f"{k}={v}" for k, v in env.items()))
        env_args = [word for k, v in env.items() for word in ("-e", f"{k}={v}")]
        with container(podman, "catdog-image-test-vertex", image, "--network", "host", *env_args, *limits) as name:
            base = f"http://{LOOPBACK}:{port}"
            seconds = wait_ready(podman, name, base + routes[0])
            check(f"vertex: ready ({routes[0]}) after {seconds:.1f} s, model from {uri} on the GCS emulator", True)
            check("vertex: the server process runs as uid 10001", process_uid(podman, name) == USER_ID)
            predictor_checks(base, "vertex", version, routes)
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
        storage.gcs_client.cache_clear()


@contextmanager
def gcs_emulator():
    """gcp-storage-emulator in memory on a free loopback port (as tests/conftest.py's gcs_server)."""
    from gcp_storage_emulator.server import create_server

    for _ in range(5):
        port = free_port()
        server = create_server(LOOPBACK, port, in_memory=True, default_bucket="catdog-image-test")
        try:
            server.start()
        except OSError:
            continue
        break
    else:
        raise Failure("could not start gcp-storage-emulator")
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.stop()


# -- one component, the way KFP's launcher runs it ------------------------------------------------

def launcher_command(component: str, arguments: dict, pipeline_root: str,
                     pipeline_yaml: Path = REPO / "compiled" / "training_pipeline.yaml"):
    """(image, command, executor input) for one task of the compiled pipeline: the executor's
    container command + args with every placeholder filled as kfp.local does for its DockerRunner
    (outputs under <pipeline_root>/<run>/<task>/). `arguments`: the task's parameters; the rest
    come from the pipeline's defaults through the task's componentInputParameter."""
    import yaml
    from google.protobuf import json_format
    from kfp.local import executor_input_utils, placeholder_utils
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = yaml.safe_load(pipeline_yaml.read_text())
    task = spec["root"]["dag"]["tasks"][component]
    component_name = task["componentRef"]["name"]
    component_spec = json_format.ParseDict(spec["components"][component_name], pipeline_spec_pb2.ComponentSpec())
    executor = spec["deploymentSpec"]["executors"][spec["components"][component_name]["executorLabel"]]
    root_parameters = spec["root"]["inputDefinitions"]["parameters"]
    kinds = {name: p["parameterType"] for name, p in spec["components"][component_name]["inputDefinitions"]
             .get("parameters", {}).items()}
    values = {}
    for name, source in task["inputs"].get("parameters", {}).items():
        if name in arguments:
            values[name] = arguments[name]
        elif "componentInputParameter" in source:
            values[name] = root_parameters[source["componentInputParameter"]].get("defaultValue")
        else:
            raise ValueError(f"{component}.{name}: not a pipeline parameter; pass it in arguments")
        if kinds.get(name) == "NUMBER_INTEGER":
            values[name] = int(values[name])
    unknown = set(arguments) - set(values)
    if unknown:
        raise ValueError(f"{component} has no parameters {sorted(unknown)}")

    run_name = executor_input_utils.get_local_pipeline_resource_name(spec["pipelineInfo"]["name"])
    task_name = executor_input_utils.get_local_task_resource_name(component_name)
    task_root = executor_input_utils.construct_local_task_root(pipeline_root, run_name, task_name)
    executor_input = executor_input_utils.construct_executor_input(component_spec, values, task_root,
                                                                   block_input_artifact=True)
    executor_input_dict = executor_input_utils.executor_input_to_dict(executor_input, component_spec)
    container_spec = executor["container"]
    command = placeholder_utils.replace_placeholders(
        full_command=[*container_spec["command"], *container_spec["args"]],
        executor_input_dict=executor_input_dict, pipeline_resource_name=run_name,
        task_resource_name=task_name, pipeline_root=pipeline_root,
        unique_pipeline_id=placeholder_utils.make_random_id(),
    )
    return container_spec["image"], command, executor_input_dict


def synthetic_dataset(root: Path, per_class: int = 8) -> Path:
    """cat/ and dog/ photos (tests.helpers) plus two files ingest must skip, world-readable."""
    from tests.helpers import make_class_folders, make_image

    make_class_folders(root, {"cat": per_class, "dog": per_class})
    (root / "cat" / "notes.jpg").write_text("not a photo")
    make_image(root / "dog" / "tiny.jpg", size=(8, 8), seed=99)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def run_component(podman: Podman, image: str, work: Path) -> None:
    with timed("component ingest in the component image"):
        data = synthetic_dataset(work / "data")
        pipeline_root = work / "pipeline_root"
        pipeline_root.mkdir()
        pipeline_root.chmod(0o777)  # the image's uid 10001 writes the outputs
        compiled_image, command, executor_input = launcher_command("ingest", {"data_uri": str(data)},
                                                                   str(pipeline_root))
        say(f"  compiled/training_pipeline.yaml: exec-ingest, image {compiled_image} (here {image}), "
            f"command {shlex.join(command[:2])} ... --executor_input <JSON> --function_to_execute ingest")
        name = "catdog-image-test-ingest"
        podman("rm", "-f", name, check=False)
        result = podman("run", "--name", name, "--network", "none", "-v", f"{data}:{data}:ro",
                        "-v", f"{pipeline_root}:{pipeline_root}", "--entrypoint", command[0], image, *command[1:],
                        check=False)
        podman("rm", "-f", name, check=False)
        log = result.stdout + result.stderr
        check("ingest: exit status 0", result.returncode == 0, f"{result.returncode}\n{log[-4000:]}")
        output_file = Path(executor_input["outputs"]["outputFile"])
        owner = str(output_file.stat().st_uid) if output_file.is_file() else "no executor output"
        check("ingest: ran as the image's user 10001 (owner of what it wrote)", owner == USER_ID, owner)
        check("ingest: its log says what it kept and skipped", "kept 16 images" in log and "skipped 2" in log,
              log[-1500:])
        outputs = executor_input["outputs"]
        written = json.loads(output_file.read_text()) if output_file.is_file() else {}
        dataset = (written.get("artifacts", {}).get("dataset", {}).get("artifacts") or [{}])[0]
        metadata = dataset.get("metadata", {})
        check("ingest: executor output with the dataset's metadata (16 images, 2 skipped)",
              metadata.get("n_images") == 16 and metadata.get("n_skipped") == 2
              and metadata.get("class_counts") == {"cat": 8, "dog": 8}, json.dumps(written)[:500])
        paths = {name: Path(a["artifacts"][0]["uri"]) for name, a in outputs["artifacts"].items()}
        report = paths["report"].read_text() if paths["report"].is_file() else ""
        check("ingest: report (Markdown) and report_json written", "notes.jpg" in report
              and json.loads(paths["report_json"].read_text()).get("n_images") == 16, report[:300])
        files = [p for p in paths["dataset"].rglob("*") if p.is_file()] if paths["dataset"].is_dir() else []
        check("ingest: the dataset artifact holds the kept photos", len(files) >= 16, f"{len(files)} files")


# -- main -----------------------------------------------------------------------------------------

def summary(podman_sizes: dict[str, int]) -> None:
    print("\n[image-test] times", flush=True)
    for part, seconds, note in TIMES:
        print(f"  {part:<48} {seconds:7.1f} s  {note}".rstrip())
    print(f"  {'total':<48} {sum(t for _, t, _ in TIMES):7.1f} s")
    for image, size in podman_sizes.items():
        print(f"[image-test] image {image}: {human(size)}")
    failed = [name for name, passed, _ in RESULTS if not passed]
    print(f"[image-test] checks: {len(RESULTS) - len(failed)} passed, {len(failed)} failed"
          + "".join(f"\n  FAILED {name}" for name in failed), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=list(PARTS), help=f"any of {', '.join(PARTS)} (default: both)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("IMAGE_CACHE") or
                                                            Path.home() / ".cache" / "catdog-images"),
                        help="the Debian root tarball and podman's store (env IMAGE_CACHE)")
    parser.add_argument("--storage-driver", default=os.environ.get("IMAGE_STORAGE_DRIVER") or "auto",
                        choices=("auto", "overlay", "vfs"), help="podman storage driver (env IMAGE_STORAGE_DRIVER); "
                        "auto: overlay when it works here, else vfs (slower, works anywhere)")
    parser.add_argument("--mirror", default=os.environ.get("DEBIAN_MIRROR") or apt_mirror(),
                        help="Debian mirror for debootstrap (env DEBIAN_MIRROR; default: apt's)")
    parser.add_argument("--tag", default="image-test", help="tag of the built images (localhost/catdog-*:TAG)")
    parser.add_argument("--layers", action="store_true", help="podman build --layers (cache each step; "
                        "slower from scratch, above all with vfs)")
    parser.add_argument("--refresh-base", action="store_true", help="debootstrap again")
    parser.add_argument("--keep-images", action="store_true", help="leave the built images in the store")
    parser.add_argument("--wheelhouse-only", action="store_true", help="only fill images/wheelhouse (for an "
                        "offline build with --build-arg WHEELHOUSE=images/wheelhouse); needs neither root nor podman")
    options = parser.parse_args(argv)
    if options.wheelhouse_only:
        try:
            say(f"images/wheelhouse: {ensure_wheelhouse(sys.executable)}")
        except Failure as exc:
            print(f"[image-test] error: {exc}", file=sys.stderr)
            return 1
        return 0
    parts = [p for part in options.parts for p in part.replace(",", " ").split()]
    if not parts or set(parts) - set(PARTS):
        parser.error(f"parts: any of {', '.join(PARTS)}, got {parts}")

    sizes: dict[str, int] = {}
    drivers = ["overlay", "vfs"] if options.storage_driver == "auto" else [options.storage_driver]
    podman = Podman(options.cache, drivers[0])
    images = {"predictor": ("serving/Dockerfile", f"localhost/catdog-predictor:{options.tag}"),
              "components": ("components/Dockerfile", f"localhost/catdog-components:{options.tag}")}
    try:
        require_tools()
        options.cache.mkdir(parents=True, exist_ok=True)
        say(f"podman {podman('--version').stdout.split()[-1]}, runtime runc, "
            f"CONTAINERS_CONF={CONTAINERS_CONF.relative_to(REPO)}, cache {options.cache}")
        for driver in drivers:
            podman = Podman(options.cache, driver)
            try:
                with timed(f"Debian base image (storage {driver})") as part:
                    part["note"] = ensure_base(podman, options.cache, options.mirror, options.refresh_base)
                break
            except Failure as exc:
                if driver == drivers[-1]:
                    raise
                say(f"the {driver} storage driver does not work here, falling back to vfs: "
                    f"{str(exc).strip().splitlines()[-1][:300]}")
        sizes[BASE_IMAGE] = podman.image_size(BASE_IMAGE)
        with timed("wheelhouse") as part:
            part["note"] = ensure_wheelhouse(sys.executable)
        with tempfile.TemporaryDirectory(prefix="catdog-image-test-") as tmp:
            work = Path(tmp)
            work.chmod(0o755)
            for part_name in parts:
                dockerfile, tag = images[part_name]
                with timed(f"build {part_name} image ({dockerfile})") as part:
                    build(podman, dockerfile, tag, options.layers)
                    sizes[tag] = podman.image_size(tag)
                    part["note"] = human(sizes[tag])
                (work / part_name).mkdir()
                (run_predictor if part_name == "predictor" else run_component)(podman, tag, work / part_name)
    except Failure as exc:
        print(f"[image-test] error: {exc}", file=sys.stderr, flush=True)
        RESULTS.append(("image-test ran to the end", False, str(exc)))
    finally:
        if not options.keep_images and shutil.which("podman"):
            for _, tag in images.values():
                podman("rmi", "-f", tag, check=False)
        elif options.keep_images:
            say(f"images kept; run them with: {podman.shell_prefix()} run ...")
        summary(sizes)
    return 0 if RESULTS and all(passed for _, passed, _ in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
