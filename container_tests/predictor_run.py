"""make image-test: the predictor image run in KServe and Vertex AI modes, and its checks."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from container_tests.common import Failure, LOOPBACK, READY_TIMEOUT_S, REPO, RESULTS, USER_ID, check, say, timed
from container_tests.build import Podman



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


def run_predictor(podman: Podman, image: str, model: Path, uri: str, emulator: str) -> None:
    """`model`: a world-readable model folder; `uri`: the same model on the GCS emulator at `emulator`."""
    from serving.source import content_version

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

    with timed("predictor, Vertex AI mode"):
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
