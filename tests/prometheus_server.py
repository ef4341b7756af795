"""Debian's Prometheus and promtool for the monitoring tests (apt-get install prometheus).

- ``promtool`` (fixture): the promtool path; skips without it.
- ``prometheus_binary`` (fixture): the prometheus path; skips without it.
- ``run_prometheus(binary, folder, config)``: Prometheus on 127.0.0.1:<free port> with `config`
  (a dict written as its YAML config; rule_files as absolute paths), its data in `folder`, started as
  a child process and stopped on exit; yields its base URL once /-/ready answers.
- ``query(url, expr)``: the result list of an instant query through /api/v1/query (raises when the
  query fails).

Both fixtures carry the marker needs_prometheus (``FIXTURE_MARKERS``): with CI=true a skip fails
(tests/conftest.py).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml

from tests.helpers import LOOPBACK, free_port

MISSING = "{} is not installed (apt-get install prometheus)"
FIXTURE_MARKERS = {"promtool": "needs_prometheus", "prometheus_binary": "needs_prometheus"}
READY_TIMEOUT_S = 60


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(MISSING.format(name))
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _binary("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return _binary("prometheus")


@contextmanager
def run_prometheus(binary: str, folder: Path, config: dict):
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config_file}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address={LOOPBACK}:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({process.returncode}): "
                                   f"{(folder / 'prometheus.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready after {READY_TIMEOUT_S} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def query(url: str, expr: str) -> list[dict]:
    answer = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = answer.json()
    if answer.status_code != 200 or body.get("status") != "success":
        raise AssertionError(f"query {expr!r} failed: {answer.status_code} {body}")
    return body["data"]["result"]
