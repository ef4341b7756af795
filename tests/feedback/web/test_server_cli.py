"""`python -m feedback.web.server` and `make up` as users run them: settings errors, a database with a
newer schema, and the predictor + app pair that one Ctrl-C stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from feedback.settings import SettingsError, load_settings
from tests.helpers import LOOPBACK, REPO_ROOT, free_port
from tests.serving_fixtures import champion_registry, photo, tiny_model  # noqa: F401


def test_settings_come_from_the_environment():
    settings = load_settings({"PREDICTOR_URL": "http://10.0.0.5:8080/", "LABELS": "cat, dog,bird",
                              "APP_TOKEN": "tok-9f8e7d", "APP_HOST": "0.0.0.0", "MAX_PHOTO_BYTES": "1000"})
    assert settings.predictor_url == "http://10.0.0.5:8080" and settings.labels == ("cat", "dog", "bird")
    assert settings.auth_required and settings.max_photo_bytes == 1000
    assert "tok-9f8e7d" not in repr(settings) and settings.app_token.get_secret_value() == "tok-9f8e7d"
    assert load_settings({}, port=9000).port == 9000


@pytest.mark.parametrize("environ, words", [
    ({"APP_HOST": "0.0.0.0"}, "APP_TOKEN must be set to bind '0.0.0.0'"),
    ({"PREDICTOR_TIMEOUT_S": "-1"}, "PREDICTOR_TIMEOUT_S"),
    ({"PREDICTOR_URL": "ftp://x"}, "PREDICTOR_URL: must be an http"),
    ({"LABELS": "cat"}, "LABELS: need two or more"),
    ({"LABELS": "cat,../dog"}, "LABELS: labels may hold"),
    ({"PREDICTOR_PROTOCOL": "grpc"}, "PREDICTOR_PROTOCOL"),
])
def test_bad_settings_name_the_variable(environ, words):
    with pytest.raises(SettingsError, match=words.replace("(", r"\(")):
        load_settings(environ)


def server(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "feedback.web.server", *args], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def test_binding_another_address_without_a_token_is_refused():
    result = server("--host", "0.0.0.0", env={"APP_TOKEN": ""})
    assert result.returncode == 2 and "APP_TOKEN must be set" in result.stderr


def test_a_database_with_a_newer_schema_is_refused_at_start(tmp_path):
    from sqlalchemy import text

    from feedback.store.db import migrate, open_database

    url = f"sqlite:///{tmp_path}/feedback.db"
    database = open_database(url)
    migrate(database)
    with database.writing() as session:
        session.execute(text("UPDATE alembic_version SET version_num = '0042'"))
    database.close()
    result = server("--port", str(free_port()), env={"DATABASE_URL": url, "FEEDBACK_URI": str(tmp_path / "fb")})
    assert result.returncode == 2
    assert "'0042'" in result.stderr and "newer than this code knows" in result.stderr


def wait_for(url: str, process: subprocess.Popen, timeout: float = 90) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}: {process.stdout.read()}")
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((LOOPBACK, port)) != 0


def make_up(tmp_path, registry: Path) -> tuple[subprocess.Popen, int, int]:
    app_port, predictor_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/store/feedback.db", FEEDBACK_URI=str(tmp_path / "store"))
    process = subprocess.Popen(
        ["make", "-s", "up", f"REGISTRY={registry}", f"PORT={app_port}", f"PREDICTOR_PORT={predictor_port}"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return process, app_port, predictor_port


def stop_with_ctrl_c(process: subprocess.Popen, *ports: int) -> None:
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while not all(port_is_closed(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(port_is_closed(p) for p in ports), "a server outlived Ctrl-C"


@pytest.mark.slow
def test_make_up_without_a_champion_starts_and_says_how_to_train(tmp_path):
    process, app_port, predictor_port = make_up(tmp_path, tmp_path / "empty-registry")
    try:
        page = wait_for(f"http://{LOOPBACK}:{app_port}/", process)
        deadline = time.monotonic() + 60
        while "No model is being served yet" not in page.text and time.monotonic() < deadline:
            time.sleep(1)  # until the predictor listens (it starts alongside the app)
            page = requests.get(f"http://{LOOPBACK}:{app_port}/", timeout=5)
        assert "No model is being served yet" in page.text and "make run DATA=" in page.text
    finally:
        stop_with_ctrl_c(process, app_port, predictor_port)


@pytest.mark.slow
def test_make_up_serves_the_champion_and_the_app_uses_it(tmp_path, champion_registry):  # noqa: F811
    process, app_port, predictor_port = make_up(tmp_path, champion_registry.uri)
    base = f"http://{LOOPBACK}:{app_port}"
    try:
        wait_for(f"{base}/health", process)
        deadline = time.monotonic() + 90
        while requests.get(f"{base}/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the predictor never became ready"
            time.sleep(0.5)
        body = requests.post(f"{base}/api/predict", files={"image": ("a.jpg", photo(1))}, timeout=30).json()
        served = requests.get(f"http://{LOOPBACK}:{predictor_port}/v2/models/catdog", timeout=5).json()
        assert body["model_version"] == served["parameters"]["model_version"] == "1"  # the registry's champion
        requests.post(f"{base}/api/predictions/{body['id']}/validation", json={"label": "dog"}, timeout=30)
        assert (tmp_path / "store" / "dataset" / "dog" / f"{body['photo']['sha256']}.jpg").is_file()
    finally:
        stop_with_ctrl_c(process, app_port, predictor_port)
