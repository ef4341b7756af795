"""`python -m serving.server` as a real process: Vertex env vars, loopback binding, no TensorFlow,
clean shutdown, clear errors; and the serving Dockerfile's promises, checked statically."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.helpers import REPO_ROOT, free_port
from tests.serving_fixtures import photo, tiny_model  # noqa: F401  (fixture)



def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIP_", "CATDOG_"))}
    return {**env, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _wait(url: str, process: subprocess.Popen, timeout: float = 60.0) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}: {process.stdout.read()[-2000:]}")
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout} s")


def test_server_process_with_vertex_environment(tiny_model):
    port = free_port()
    env = _env(AIP_HTTP_PORT=str(port), AIP_HEALTH_ROUTE="/vertex/health", AIP_PREDICT_ROUTE="/vertex/predict",
               AIP_STORAGE_URI=str(tiny_model))
    process = subprocess.Popen([sys.executable, "-m", "serving.server", "--log-level", "warning"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        health = _wait(base + "/vertex/health", process)
        assert health.json()["ready"] is True
        body = {"instances": [{"image_bytes": {"b64": base64.b64encode(photo(0)).decode()}}], "parameters": {}}
        response = requests.post(base + "/vertex/predict", json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"] in ("cat", "dog")
        assert requests.post(base + "/v1/models/catdog:predict", json=body, timeout=30).status_code == 200

        server = psutil.Process(process.pid)
        connections = getattr(server, "net_connections", None) or server.connections
        listening = [c.laddr for c in connections("tcp") if c.status == psutil.CONN_LISTEN]
        assert listening and {a.ip for a in listening} == {"127.0.0.1"}, listening
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        assert "tensorflow" not in maps and "libtensorflow" not in maps
        assert server.memory_info().rss < 400 * 2**20
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    # uvicorn shuts down gracefully, then re-raises the signal: exit status 0 or "killed by SIGTERM"
    assert process.returncode in (0, -signal.SIGTERM), output[-2000:]
    assert "Traceback" not in output, output[-2000:]


def test_serving_modules_do_not_import_tensorflow(tiny_model):
    code = (
        "import sys\n"
        "from serving.kserve_model import CatDogModel, ModelSource\n"
        "from serving.app import create_app\n"
        "import serving.server, bench.load_client, serving.metrics\n"
        f"model = CatDogModel(ModelSource({str(tiny_model)!r}))\n"
        "app = create_app(model)\n"
        "assert model.load(), model.last_error\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx', 'torch'))\n"
        "print('HEAVY', heavy)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HEAVY []" in result.stdout


@pytest.mark.parametrize("args, words", [
    (["--model", "/no/such/model"], "not a model folder"),
    (["--model", "latest"], "not a model folder"),
])
def test_bad_model_reference_exits_with_a_clear_error(args, words):
    result = subprocess.run([sys.executable, "-m", "serving.server", *args, "--port", str(free_port())],
                            cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert words in result.stderr


def test_dockerfile_is_small_non_root_and_tensorflow_free():
    text = (REPO_ROOT / "serving" / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    instructions = [i.strip() for i in "\n".join(lines).replace("\\\n", " ").splitlines() if i.strip()]
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in " ".join(instructions)
    assert all(i == "FROM ${PYTHON_IMAGE}" or i.startswith("FROM ${PYTHON_IMAGE} AS ") for i in instructions
               if i.startswith("FROM"))
    users = [i.split()[1] for i in instructions if i.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (install,) = [i for i in instructions if "pip install" in i]
    assert "-c /tmp/requirements.lock" in install
    assert not any(word in install.lower() for word in ("tensorflow", "keras", "kfp", "-r "))
    assert 'ENTRYPOINT ["python", "-m", "serving.server"]' in instructions
    assert any("CATDOG_HOST=0.0.0.0" in i for i in instructions)
    ignore = [line.strip() for line in (REPO_ROOT / "serving" / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*" and {"!catdog/", "!serving/", "!requirements.lock"} <= set(ignore)
