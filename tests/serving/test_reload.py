"""Loading and following the champion: 503 until loaded, new champions swapped in without
downtime, broken versions skipped while the old one keeps serving."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.serving_fixtures import (  # noqa: F401  (fixtures)
    champion_registry,
    make_model,
    metric_value,
    photo,
    run_server,
    tiny_model,
    v1_json,
    variant_of,
)

pytestmark = pytest.mark.filterwarnings("ignore::fastapi.exceptions.FastAPIDeprecationWarning")

POLL = 0.2  # seconds between checks of the champion alias in these tests


def wait_for(condition, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_not_ready_until_a_champion_exists_then_serves_it(tmp_path, tiny_model):
    from catdog.registry import ModelRegistry

    registry = ModelRegistry(tmp_path / "empty-registry")
    model = make_model("champion", registry.uri, reload_interval=POLL)
    with run_server(model, wait_ready=False, vertex_health_route="/health") as server:
        assert server.get("/v2/health/live").status_code == 200
        assert server.get("/").status_code == 200
        for path in ("/v2/health/ready", "/v2/models/catdog/ready", "/v1/models/catdog", "/health"):
            assert server.get(path).status_code == 503, path
        response = server.predict(photo(0))
        assert response.status_code == 503 and "not ready" in response.json()["error"]
        assert server.get("/v1/models/catdog/metadata").json()["model_version"] is None

        registry.set_champion(registry.register(tiny_model))
        server.wait_ready()
        assert server.get("/health").status_code == 200
        response = server.predict(photo(0))
        assert response.status_code == 200 and response.headers["x-model-version"] == "1"


def test_new_champion_is_served_without_downtime(tmp_path, champion_registry, tiny_model):
    model = make_model("champion", champion_registry.uri, reload_interval=POLL)
    with run_server(model) as server:
        versions: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def client():
            session = requests.Session()
            while not stop.is_set():
                try:
                    response = session.post(server.url + "/v1/models/catdog:predict", json=v1_json(photo(1)), timeout=30)
                except requests.RequestException as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                else:
                    versions.append(response.headers["x-model-version"])

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(versions) > 20, what="requests served by version 1")
            v2 = champion_registry.register(variant_of(tiny_model, tmp_path / "v2", note="second version"))
            champion_registry.set_champion(v2)
            wait_for(lambda: versions.count("2") > 20, what="requests served by version 2")
        finally:
            stop.set()
            for t in threads:
                t.join(30)

        assert failures == []
        assert versions[0] == "1" and versions[-1] == "2"
        assert set(versions) == {"1", "2"}
        metadata = server.get("/v2/models/catdog").json()
        assert metadata["versions"] == ["2"]
        text = server.get("/metrics").text
        assert metric_value(text, "catdog_model_info", model_name="catdog", model_version="2") == 1
        assert metric_value(text, "catdog_model_info", model_name="catdog", model_version="1") == 0
        assert metric_value(text, "catdog_inference_requests_total", model_version="2") > 0


def test_broken_champion_is_skipped_and_the_old_one_keeps_serving(tmp_path, champion_registry, tiny_model):
    model = make_model("champion", champion_registry.uri, reload_interval=POLL)
    with run_server(model) as server:
        failures_before = metric_value(server.get("/metrics").text, "catdog_model_loads_total", outcome="failure")
        broken_dir = variant_of(tiny_model, tmp_path / "broken")
        (broken_dir / "model.onnx").write_bytes(b"this is not an ONNX model")
        broken = champion_registry.register(broken_dir)
        champion_registry.set_champion(broken)

        wait_for(lambda: server.get("/v1/models/catdog/metadata").json()["last_load_error"], what="the failed load")
        assert metric_value(server.get("/metrics").text, "catdog_model_loads_total", outcome="failure") > failures_before
        for _ in range(5):  # still version 1, still ready
            response = server.predict(photo(2))
            assert response.status_code == 200 and response.headers["x-model-version"] == "1"
        assert server.get("/v2/health/ready").status_code == 200

        fixed = champion_registry.register(variant_of(tiny_model, tmp_path / "fixed", note="fixed"))
        champion_registry.set_champion(fixed)
        wait_for(lambda: server.predict(photo(2)).headers.get("x-model-version") == str(fixed), what="the fixed version")
        assert server.get("/v1/models/catdog/metadata").json()["last_load_error"] is None


def test_a_fixed_version_is_not_followed(tmp_path, champion_registry, tiny_model):
    model = make_model("1", champion_registry.uri, reload_interval=POLL)
    with run_server(model) as server:
        champion_registry.set_champion(champion_registry.register(variant_of(tiny_model, tmp_path / "v2")))
        time.sleep(5 * POLL)
        assert server.predict(photo(0)).headers["x-model-version"] == "1"
        assert server.get("/v1/models/catdog/metadata").json()["follows_champion"] is False


def test_a_model_folder_is_versioned_by_content(tiny_model):
    from serving.kserve_model import content_version

    model = make_model(tiny_model)
    with run_server(model) as server:
        response = server.predict(photo(0))
        assert response.headers["x-model-version"] == content_version(tiny_model)


def test_follows_a_champion_in_a_gcs_registry(gcs, tmp_path, tiny_model):
    from catdog.registry import ModelRegistry

    registry = ModelRegistry(gcs.uri("registry"))
    registry.set_champion(registry.register(tiny_model))
    model = make_model("champion", registry.uri, reload_interval=POLL)
    with run_server(model) as server:
        assert server.predict(photo(0)).headers["x-model-version"] == "1"
        registry.set_champion(registry.register(variant_of(tiny_model, tmp_path / "v2", note="v2")))
        wait_for(lambda: server.predict(photo(0)).headers.get("x-model-version") == "2", what="version 2 from GCS")


def test_serves_a_gcs_model_folder(gcs, tiny_model):
    from catdog import storage
    from serving.kserve_model import content_version

    uri = gcs.uri("models", "tiny")
    storage.upload_tree(tiny_model, uri)
    with run_server(make_model(uri)) as server:
        response = server.predict(photo(0))
        assert response.status_code == 200 and response.headers["x-model-version"] == content_version(tiny_model)
