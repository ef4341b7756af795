"""V1 :explain over real HTTP: the predicted class's Grad-CAM map per photo from ONE inference, the
overlay PNG when asked, and the occlusion fallback for a model exported before Grad-CAM.

Models: a 96 px tiny MobileNetV2 (Grad-CAM grid 3x3, built once here: the shared 32 px test model's
grid is 1x1) and a copy of the shared tiny model whose ONNX graph has only the probabilities
output, as exports before Grad-CAM had.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.serving_fixtures import make_model, metric_value, photo, run_server, tiny_model_dir, v1_json, v2_json

pytestmark = pytest.mark.filterwarnings("ignore::fastapi.exceptions.FastAPIDeprecationWarning")

SIZE = 96
MAX_INSTANCES = 8
EXPLAIN = "/v1/models/catdog:explain"
PHOTOS = [photo(i, size=(80 + 9 * i, 64)) for i in range(MAX_INSTANCES)]


def _build_gradcam_model(target: Path) -> Path:
    """A tiny model at SIZE px whose labels depend on the photo (as tests.serving_fixtures does at 32 px)."""
    import keras

    from catdog.model import build_model, save_model_dir
    from catdog.preprocessing import PREPROCESSING_SPEC, image_to_pixels

    keras.utils.set_random_seed(1)
    model = build_model(2, SIZE, 0.35, "none", 0.0)
    model.set_weights([np.full_like(w.numpy(), 0.1) if "moving_variance" in w.path else w.numpy() for w in model.weights])
    pixels = np.stack([image_to_pixels(p, SIZE) for p in PHOTOS]).astype(np.float32)
    probabilities = model.predict(pixels, verbose=0)
    head = model.get_layer("probabilities")
    kernel, bias = head.get_weights()
    gap = float(np.median(np.log(probabilities[:, 1]) - np.log(probabilities[:, 0])))
    head.set_weights([kernel, bias + np.array([0.0, -gap], dtype=bias.dtype)])
    return save_model_dir(model, target, {"class_names": ["cat", "dog"], "image_size": SIZE,
                                          "preprocessing": PREPROCESSING_SPEC, "architecture": "tiny MobileNetV2"})


def without_gradcam(model_dir: Path, target: Path) -> Path:
    """A copy of a model folder as exported before Grad-CAM: one ONNX output (the probabilities,
    named Identity:0 as tf2onnx named it then) and no explanation in metadata.json."""
    import onnx
    import onnx.utils

    shutil.copytree(model_dir, target)
    onnx_path = str(target / "model.onnx")
    graph_input = onnx.load(onnx_path).graph.input[0].name
    onnx.utils.extract_model(onnx_path, onnx_path, [graph_input], ["probabilities"])
    graph_model = onnx.load(onnx_path)
    for node in graph_model.graph.node:
        node.output[:] = ["Identity:0" if name == "probabilities" else name for name in node.output]
    graph_model.graph.output[0].name = "Identity:0"
    onnx.save(graph_model, onnx_path)
    metadata = json.loads((target / "metadata.json").read_text())
    (target / "metadata.json").write_text(json.dumps({k: v for k, v in metadata.items()
                                                      if k not in ("outputs", "explanation")}))
    return target


class CountingSession:
    """Wraps an ONNX Runtime session: records (output names, batch size) of every run."""

    def __init__(self, session):
        self.session, self.runs = session, []

    def run(self, names, feeds):
        self.runs.append((list(names), len(next(iter(feeds.values())))))
        return self.session.run(names, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)


@pytest.fixture(scope="module")
def gradcam_model(tmp_path_factory) -> Path:
    return _build_gradcam_model(tmp_path_factory.mktemp("gradcam") / "model")


@pytest.fixture(scope="module")
def server(gradcam_model):
    with run_server(make_model(gradcam_model, max_instances=MAX_INSTANCES)) as running:
        yield running


@pytest.fixture(scope="module")
def reference(gradcam_model):
    from catdog.onnx_predictor import OnnxPredictor

    return OnnxPredictor(gradcam_model)


@pytest.fixture(scope="module")
def old_model(tmp_path_factory) -> Path:
    return without_gradcam(tiny_model_dir(), tmp_path_factory.mktemp("old") / "model")


@pytest.fixture(scope="module")
def old_server(old_model):
    with run_server(make_model(old_model)) as running:
        yield running


def _explain(server, images, **fields):
    response = server.post(EXPLAIN, json={**v1_json(*images), **fields})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def _png(text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    assert image.format == "PNG"
    return image


def test_explain_gives_the_predicted_class_gradcam_map_per_photo(server, reference, gradcam_model):
    predictions = _explain(server, PHOTOS)
    grid = json.loads((gradcam_model / "metadata.json").read_text())["explanation"]["grid"]
    assert grid == [3, 3]
    served_labels = [p["label"] for p in server.predict(*PHOTOS).json()["predictions"]]
    probabilities, maps = reference.explain_pixels(np.stack([reference.pixels(p) for p in PHOTOS]))
    targets = probabilities.argmax(axis=1)
    assert [p["label"] for p in predictions] == served_labels == [reference.class_names[t] for t in targets]
    assert set(served_labels) == {"cat", "dog"}  # the class choice below is not vacuous
    other_class_differs = False
    for prediction, image_maps, target in zip(predictions, maps, targets):
        explanation = prediction["explanation"]
        assert set(explanation) == {"method", "class", "grid", "values"}  # no overlay unless asked
        assert explanation["method"] == "grad-cam" and explanation["class"] == prediction["label"]
        assert explanation["grid"] == grid
        values = np.asarray(explanation["values"])
        assert values.shape == tuple(grid) and values.min() >= 0 and values.max() <= 1
        assert np.allclose(values, image_maps[..., target], atol=1e-3)
        other_class_differs |= not np.allclose(values, image_maps[..., 1 - target], atol=1e-3)
    assert other_class_differs


def test_explain_is_one_inference_for_the_batch(server, monkeypatch):
    counting = CountingSession(server.model.current.predictor.session)
    monkeypatch.setattr(server.model.current.predictor, "session", counting)
    _explain(server, PHOTOS[:5])
    assert counting.runs == [(["probabilities", "gradcam"], 5)]
    assert server.predict(*PHOTOS[:3]).status_code == 200
    assert counting.runs[1:] == [(["probabilities"], 3)]  # :predict computes no map


def _inference_counts(server, **labels) -> tuple[float, ...]:
    text = server.get("/metrics").text
    return tuple(metric_value(text, name, model_name="catdog", **labels) for name in (
        "catdog_inference_requests_total", "catdog_inference_seconds_count", "catdog_inference_images_total",
        "catdog_inference_batch_size_sum"))


@pytest.mark.parametrize("model", ["server", "old_server"])
def test_explain_requests_record_the_inference_metrics(model, request):
    """The feedback page only ever asks :explain: its requests count as inferences (verb="explain"),
    with their time, as :predict's do (verb="predict"), on the Grad-CAM path and the occlusion one."""
    server = request.getfixturevalue(model)
    explain_before, predict_before = _inference_counts(server, verb="explain"), _inference_counts(server, verb="predict")
    images_before = _inference_counts(server)[2:]
    _explain(server, PHOTOS[:2])
    _explain(server, PHOTOS[2:3])
    explained = [a - b for a, b in zip(_inference_counts(server, verb="explain"), explain_before)]
    assert explained[:2] == [2, 2]  # two requests, two timings
    assert [a - b for a, b in zip(_inference_counts(server)[2:], images_before)] == [3, 3]  # 3 images, batches 2 + 1
    assert _inference_counts(server, verb="predict") == predict_before
    text = server.get("/metrics").text
    assert metric_value(text, "catdog_inference_seconds_sum", verb="explain") > 0


def test_explain_takes_as_many_photos_as_predict(server):
    assert len(_explain(server, PHOTOS)) == MAX_INSTANCES
    too_many = server.post(EXPLAIN, json=v1_json(*PHOTOS, PHOTOS[0]))
    assert too_many.status_code == 400 and f"at most {MAX_INSTANCES}" in too_many.json()["error"]


def test_overlay_is_a_png_of_the_input_size_only_when_asked(server, reference):
    from catdog.gradcam import overlay

    predictions = _explain(server, PHOTOS[:2], overlay=True)
    for prediction, data in zip(predictions, PHOTOS):
        explanation = prediction["explanation"]
        image = _png(explanation["overlay_png"])
        assert image.size == (SIZE, SIZE) and image.mode == "RGB"
        pixels = reference.pixels(data)
        expected = overlay(pixels, np.asarray(explanation["values"]))
        assert np.abs(np.asarray(image, np.int16) - expected).max() <= 2
        assert np.abs(np.asarray(image, np.int16) - pixels).max() > 20  # the map is drawn over the photo
    assert all("overlay_png" not in p["explanation"] for p in _explain(server, PHOTOS[:2], overlay=False))


@pytest.mark.parametrize("path, body, words", [
    (EXPLAIN, {**v1_json(PHOTOS[0]), "overlay": "yes"}, "'overlay' must be true or false"),
    ("/v1/models/catdog:predict", {**v1_json(PHOTOS[0]), "overlay": True}, "'overlay' is for :explain"),
    (EXPLAIN, v1_json(PHOTOS[0], b"not an image"), "instances[1]"),
])
def test_bad_explain_requests_are_400s(server, path, body, words):
    response = server.post(path, json=body)
    assert response.status_code == 400 and words in response.json()["error"], response.text


def test_metadata_names_the_explanation(server):
    v1 = server.get("/v1/models/catdog/metadata").json()
    assert v1["explain_method"] == "grad-cam" and v1["explain_grid"] == [3, 3]
    v2 = server.get("/v2/models/catdog").json()
    assert {"name": "gradcam", "datatype": "FP32", "shape": [-1, 3, 3]} in v2["outputs"]
    assert v2["parameters"]["explain_method"] == "grad-cam"


def test_one_output_model_is_that_classifier(old_model):
    """The fallback tests below really serve an old-style export of the same classifier."""
    import onnx

    from catdog.onnx_predictor import OnnxPredictor

    assert [o.name for o in onnx.load(str(old_model / "model.onnx")).graph.output] == ["Identity:0"]
    old, new = OnnxPredictor(old_model), OnnxPredictor(tiny_model_dir())
    assert not old.has_gradcam and new.has_gradcam
    assert np.allclose(old.predict_bytes(PHOTOS), new.predict_bytes(PHOTOS), atol=1e-6)


def test_a_model_without_gradcam_falls_back_to_occlusion(old_server):
    labels = [p["label"] for p in old_server.predict(*PHOTOS[:2]).json()["predictions"]]
    predictions = _explain(old_server, PHOTOS[:2], overlay=True)
    assert [p["label"] for p in predictions] == labels
    for prediction in predictions:
        explanation = prediction["explanation"]
        assert explanation["method"] == "occlusion" and explanation["class"] == prediction["label"]
        assert explanation["measure"] == "log-odds drop" and "retraining" in explanation["note"]
        assert explanation["grid"] == [8, 8] and np.asarray(explanation["values"]).shape == (8, 8)
        assert _png(explanation["overlay_png"]).size == (32, 32)
    too_many = old_server.post(EXPLAIN, json=v1_json(*PHOTOS[:5]))
    assert too_many.status_code == 400
    assert "without Grad-CAM" in too_many.json()["error"] and "at most 4" in too_many.json()["error"]


def test_a_model_without_gradcam_has_no_gradcam_output(old_server):
    v2 = old_server.get("/v2/models/catdog").json()
    assert [o["name"] for o in v2["outputs"]] == ["label", "probabilities"]
    assert v2["parameters"]["explain_method"] == "occlusion"
    asked = old_server.post("/v2/models/catdog/infer", json={**v2_json(PHOTOS[0]), "outputs": [{"name": "gradcam"}]})
    assert asked.status_code == 400 and "exported without Grad-CAM" in asked.json()["error"]
    assert old_server.post("/v2/models/catdog/infer", json=v2_json(PHOTOS[0])).status_code == 200
