"""The predictor over real HTTP: V1, V2, Vertex, explain, metadata, health, metrics.

One uvicorn server (tiny 32 px model, served from a registry's champion) on 127.0.0.1 per module.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.serving_fixtures import (  # noqa: F401  (fixtures)
    b64,
    make_model,
    metric_value,
    photo,
    run_server,
    tiny_model,
    tiny_model_dir,
    v1_json,
    v2_json,
)

pytestmark = pytest.mark.filterwarnings("ignore::fastapi.exceptions.FastAPIDeprecationWarning")

VERTEX_PREDICT = "/v1/endpoints/123/deployedModels/456:predict"
VERTEX_HEALTH = "/v1/endpoints/123/deployedModels/456"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from catdog.registry import ModelRegistry

    registry = ModelRegistry(tmp_path_factory.mktemp("api") / "registry")
    registry.set_champion(registry.register(tiny_model_dir()))
    model = make_model("champion", registry.uri, reload_interval=0)
    with run_server(model, vertex_predict_route=VERTEX_PREDICT, vertex_health_route=VERTEX_HEALTH) as running:
        yield running


@pytest.fixture(scope="module")
def reference(tiny_model):
    """catdog.onnx_predictor.OnnxPredictor: the prediction path of `make evaluate`."""
    from catdog.onnx_predictor import OnnxPredictor

    return OnnxPredictor(tiny_model)


IMAGES = [photo(0), photo(1, "PNG", (40, 70)), photo(2, "WEBP", (120, 90)), photo(3, "PNG", (50, 50), "RGBA"),
          photo(4, "JPEG", (300, 200), "L")]


def test_v1_predict_matches_the_evaluate_path(server, reference):
    response = server.predict(IMAGES[0])
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "1"
    (prediction,) = response.json()["predictions"]
    expected = reference.predict_bytes([IMAGES[0]])[0]
    assert prediction["label"] == reference.class_names[int(expected.argmax())]
    assert set(prediction["probabilities"]) == {"cat", "dog"}
    assert np.allclose([prediction["probabilities"][c] for c in reference.class_names], expected, atol=1e-6)


def test_many_instances_run_as_one_batch(server, reference):
    before = server.get("/metrics").text
    response = server.predict(*IMAGES)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = reference.predict_bytes(IMAGES)
    assert [p["label"] for p in predictions] == [reference.class_names[i] for i in expected.argmax(axis=1)]
    assert {p["label"] for p in predictions} == {"cat", "dog"}  # the check above is not vacuous
    after = server.get("/metrics").text
    labels = {"model_name": "catdog", "model_version": "1"}
    assert metric_value(after, "catdog_inference_batch_size_count", **labels) - \
        metric_value(before, "catdog_inference_batch_size_count", **labels) == 1
    assert metric_value(after, "catdog_inference_batch_size_sum", **labels) - \
        metric_value(before, "catdog_inference_batch_size_sum", **labels) == len(IMAGES)


def test_v1_accepts_a_bare_b64_instance(server):
    response = server.post("/v1/models/catdog:predict", json={"instances": [{"b64": b64(IMAGES[0])}]})
    assert response.status_code == 200, response.text


def test_v2_infer_returns_label_and_probability_tensors(server, reference):
    response = server.post("/v2/models/catdog/infer", json=v2_json(*IMAGES[:3], request_id="req-42"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-42"
    assert body["model_name"] == "catdog" and body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["datatype"] == "BYTES" and outputs["label"]["shape"] == [3]
    assert outputs["probabilities"]["datatype"] == "FP32" and outputs["probabilities"]["shape"] == [3, 2]
    expected = reference.predict_bytes(IMAGES[:3])
    assert outputs["label"]["data"] == [reference.class_names[i] for i in expected.argmax(axis=1)]
    assert np.allclose(np.reshape(outputs["probabilities"]["data"], (3, 2)), expected, atol=1e-6)


def test_v2_response_id_is_generated_when_absent(server):
    first = server.post("/v2/models/catdog/infer", json=v2_json(IMAGES[0]))
    second = server.post("/v2/models/catdog/infer", json=v2_json(IMAGES[0]))
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] and first.json()["id"] != second.json()["id"]


def test_v2_variants(server):
    """[n, 1] shapes, JSON without a JSON content type, the versioned route, requested outputs."""
    assert server.post("/v2/models/catdog/infer", json=v2_json(*IMAGES[:2], shape=[2, 1])).status_code == 200
    import json

    response = server.post("/v2/models/catdog/infer", data=json.dumps(v2_json(IMAGES[0])),
                           headers={"content-type": "text/plain"})
    assert response.status_code == 200, response.text
    assert server.post("/v2/models/catdog/versions/1/infer", json=v2_json(IMAGES[0])).status_code == 200
    missing = server.post("/v2/models/catdog/versions/7/infer", json=v2_json(IMAGES[0]))
    assert missing.status_code == 404 and "version 7" in missing.json()["error"]
    only_labels = server.post("/v2/models/catdog/infer", json={**v2_json(IMAGES[0]), "outputs": [{"name": "label"}]})
    assert [o["name"] for o in only_labels.json()["outputs"]] == ["label"]


def test_metadata(server):
    v2 = server.get("/v2/models/catdog").json()
    assert v2["name"] == "catdog" and v2["versions"] == ["1"]
    assert v2["inputs"] == [{"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}]
    assert v2["parameters"]["class_names"] == ["cat", "dog"]
    assert v2["parameters"]["input_size"] == [32, 32, 3]
    v1 = server.get("/v1/models/catdog/metadata").json()
    assert v1["class_names"] == ["cat", "dog"] and v1["image_size"] == 32 and v1["model_version"] == "1"
    assert v1["follows_champion"] is True
    assert server.get("/v2/models/catdog/versions/1").status_code == 200
    assert server.get("/v2/models/nope").status_code == 404
    assert server.get("/v2").json()["extensions"] == []


def test_health(server):
    assert server.get("/").status_code == 200
    assert server.get("/v2/health/live").json() == {"live": True}
    assert server.get("/v2/health/ready").json() == {"ready": True}
    assert server.get("/v2/models/catdog/ready").json() == {"name": "catdog", "ready": True}
    assert server.get("/v1/models/catdog").json() == {"name": "catdog", "ready": True}
    assert server.get("/v1/models").json() == {"models": ["catdog"]}


def test_vertex_routes(server):
    health = server.get(VERTEX_HEALTH)
    assert health.status_code == 200 and health.json()["model_version"] == "1"
    response = server.post(VERTEX_PREDICT, json={**v1_json(IMAGES[0], IMAGES[1]), "parameters": {}})
    assert response.status_code == 200, response.text
    assert [set(p) for p in response.json()["predictions"]] == [{"label", "probabilities"}] * 2


def test_explain_gives_a_gradcam_map_per_photo(server):
    """On the champion, more photos than the occlusion fallback takes (tests/serving/test_explain.py
    checks the maps themselves)."""
    response = server.post("/v1/models/catdog:explain", json=v1_json(*IMAGES))
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == [p["label"] for p in server.predict(*IMAGES).json()["predictions"]]
    for prediction in predictions:
        explanation = prediction["explanation"]
        assert explanation["method"] == "grad-cam" and explanation["class"] == prediction["label"]
        assert explanation["grid"] == [1, 1]  # the 32 px model's last feature map
        assert 0 <= explanation["values"][0][0] <= 1


def test_metrics_carry_the_model_version(server):
    server.predict(IMAGES[0])
    text = server.get("/metrics").text
    assert metric_value(text, "catdog_model_info", model_name="catdog", model_version="1") == 1
    assert metric_value(text, "catdog_inference_requests_total", model_version="1", protocol="v1") >= 1
    assert metric_value(text, "catdog_inference_seconds_count", model_version="1") >= 1
    assert "request_predict_seconds" in text  # KServe's own histograms are there too


def test_model_repository_routes_are_not_exposed(server):
    response = server.post("/v2/repository/models/catdog/unload")
    assert response.status_code == 403 and "disabled" in response.json()["error"]
    assert server.predict(IMAGES[0]).status_code == 200
