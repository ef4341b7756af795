"""The "neither" score (catdog.ood): its statistics, threshold and metrics, the OodScore layer in the
exported model, OnnxPredictor's score and flag, evaluation's OOD metrics and calibration, and the
served V1/V2/explain answers. Synthetic images only (tests.serving_fixtures.tiny_ood_model_dir)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from catdog.calibration import calibration, reliability_html
from catdog.ood import (
    auroc,
    choose_threshold,
    detection_metrics,
    fit_statistics,
    residual_scores,
)
from tests.serving_fixtures import (  # noqa: F401 (champion_registry, tiny_model: fixtures)
    champion_registry,
    make_model,
    ood_photo,
    photo,
    run_server,
    tiny_model,
    tiny_model_dir,
    tiny_ood_model_dir,
    v1_json,
    v2_json,
)

IN_PHOTOS = [photo(i, size=(70, 50)) for i in range(1000, 1040)]  # not among the fixture's fitting photos
OOD_PHOTOS = [ood_photo(i) for i in range(30)]


# -- the statistics ----------------------------------------------------------------------------------
def test_the_score_is_the_distance_to_the_nearest_class_mean_outside_the_main_directions():
    """Features that vary a lot along the first two axes and little along the others: the basis is
    those two axes, and the score counts only the others (min over the two class means)."""
    rng = np.random.default_rng(0)
    labels = np.arange(4000) % 2
    spread = np.array([10.0, 5.0, 0.1, 0.1, 0.1])
    features = rng.normal(size=(4000, 5)) * spread + np.where(labels[:, None] == 1, 1.0, -1.0)
    means, basis = fit_statistics(features, labels, 2, components=2)
    np.testing.assert_allclose(basis @ basis.T, np.diag([1.0, 1, 0, 0, 0]), atol=0.01)  # spans those two axes
    np.testing.assert_allclose(means, [features[labels == c].mean(axis=0) for c in (0, 1)], atol=1e-5)
    queries = np.array([[20.0, -10.0, 1.0, 1.0, 1.0], [0.0, 0.0, -1.0, -1.0, -1.0], [0.0, 0.0, 4.0, 0.0, 0.0]])
    expected = [min(np.sum((q[2:] - m[2:]) ** 2) for m in (-np.ones(5), np.ones(5))) for q in queries]
    np.testing.assert_allclose(residual_scores(queries, means, basis), expected, rtol=0.05, atol=0.1)
    # all directions kept: nothing left, every score 0
    assert np.allclose(residual_scores(queries, *fit_statistics(features, labels, 2, components=5)), 0, atol=1e-2)


def test_fit_statistics_keeps_at_most_the_data_rank_and_needs_every_class():
    features = np.random.default_rng(1).normal(size=(6, 50))
    means, basis = fit_statistics(features, np.array([0, 1] * 3), 2, components=64)
    assert basis.shape == (50, 4) and means.shape == (2, 50)  # 6 photos - 2 class means
    np.testing.assert_allclose(basis.T @ basis, np.eye(4), atol=1e-5)
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        fit_statistics(features, np.zeros(6, int), 2)


def test_threshold_is_an_upper_confidence_bound_on_the_target_quantile():
    scores = np.random.default_rng(0).permutation(np.arange(1000, dtype=float))
    threshold, rate = choose_threshold(scores, 0.01)
    # P(Binomial(1000, 0.99) <= 995) >= 95 %: the 996th smallest score, 4 above it (the plain 99th percentile: 9)
    assert threshold == 995.0 and rate == 0.004
    assert choose_threshold(scores, 0.01, confidence=0.5) == (990.0, 0.009)
    assert choose_threshold(np.arange(444.0), 0.01) == (443.0, 0.0)  # 444 photos: the bound is their highest score
    assert choose_threshold(np.array([3.0, 1.0, 2.0]))[0] == 3.0  # few photos: none rejected


def test_the_threshold_keeps_the_false_reject_rate_of_new_photos_under_the_target():
    """In 200 draws of 444 validation and 10,000 new in-distribution scores, the threshold lets at most
    1 % of the new ones through as false rejects in about 95 % of draws (the plain quantile: about half)."""
    rng = np.random.default_rng(1)
    within = [np.mean(rng.normal(size=10_000) > choose_threshold(rng.normal(size=444), 0.01)[0]) <= 0.01
              for _ in range(200)]
    assert 0.9 <= np.mean(within) <= 1.0
    with pytest.raises(ValueError):
        choose_threshold(np.array([]))


def test_detection_metrics_and_auroc():
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 1.0
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 0.0
    assert auroc(np.array([1.0, 3.0]), np.array([2.0, 4.0])) == 0.75
    assert np.isnan(auroc(np.array([1.0]), np.array([])))
    assert detection_metrics(np.array([1.0, 2.0]), np.array([1.5, 3.0, 4.0, 0.5]), 2.5) == {
        "ood_n": 4, "ood_detection_rate": 0.5, "ood_auroc": 0.625}


# -- calibration -------------------------------------------------------------------------------------
def test_calibration_by_hand():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.95, 0.05], [0.55, 0.45], [0.3, 0.7], [0.65, 0.35]])
    result = calibration(labels, probabilities)
    filled = {round(b["low"], 1): b for b in result["bins"] if b["n"]}
    assert sorted(filled) == pytest.approx([0.5, 0.6, 0.9])
    assert filled[0.5]["n"] == 1 and filled[0.5]["accuracy"] == 1.0  # 0.55, right
    assert filled[0.6]["n"] == 2 and filled[0.6]["accuracy"] == 0.5  # 0.7 right, 0.65 wrong
    expected_ece = (abs(1 - 0.95) + abs(1 - 0.55) + 2 * abs(0.5 - 0.675)) / 4
    assert result["ece"] == pytest.approx(expected_ece)
    assert result["log_loss"] == pytest.approx(-np.mean(np.log([0.95, 0.55, 0.7, 0.35])))
    assert len(result["bins"]) == 10 and sum(b["n"] for b in result["bins"]) == 4
    page = reliability_html(result)
    assert "<title>Reliability diagram</title>" in page and 'src="data:image/png;base64,' in page
    assert f"{expected_ece:.4f}" in page


def test_a_probability_of_one_falls_in_the_last_bin():
    result = calibration(np.array([1]), np.array([[0.0, 1.0]]))
    assert result["bins"][-1]["n"] == 1 and result["ece"] == 0.0


# -- the exported model ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ood_predictor():
    from catdog.onnx_predictor import OnnxPredictor

    return OnnxPredictor(tiny_ood_model_dir())


def _pixels(predictor, photos):
    return np.stack([predictor.pixels(b) for b in photos])


def test_the_exported_model_has_the_score_and_its_metadata(ood_predictor):
    import onnxruntime as ort

    metadata = ood_predictor.metadata
    assert metadata["outputs"] == ["probabilities", "gradcam", "ood_score", "embedding"]
    assert metadata["ood"]["method"] == "tied-residual-pca" and metadata["ood"]["score_output"] == "ood_score"
    assert metadata["ood"]["components"] == 32 and metadata["ood"]["val_false_reject_rate"] <= 0.01
    session = ort.InferenceSession(str(tiny_ood_model_dir() / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "gradcam", "ood_score", "embedding"]
    assert ood_predictor.has_ood and ood_predictor.ood_threshold == metadata["ood"]["threshold"]
    assert ood_predictor.has_embedding and metadata["embedding"]["dims"] == 32


def test_the_embedding_is_the_centred_features_on_the_fit_s_top_directions(ood_predictor):
    """The embedding output (catdog.model.FeatureEmbedding) equals (features - mean of the class
    means) @ the OOD fit's first basis columns, in Keras and ONNX; asked only when wanted."""
    import keras

    from catdog.model import POOLED_FEATURES, load_keras_model

    served = load_keras_model(tiny_ood_model_dir())
    pixels = _pixels(ood_predictor, IN_PHOTOS[:3] + OOD_PHOTOS[:2])
    features = keras.Model(served.inputs, served.get_layer(POOLED_FEATURES).output).predict(
        pixels.astype(np.float32), verbose=0)
    means, basis = served.get_layer("ood_score").get_weights()
    dims = ood_predictor.metadata["embedding"]["dims"]
    expected = (features - means.mean(axis=0)) @ basis[:, :dims]
    outputs = ood_predictor.run_pixels(pixels, batch_size=2, embedding=True)
    assert outputs.embedding.shape == (5, dims)
    np.testing.assert_allclose(outputs.embedding, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    np.testing.assert_allclose(outputs.ood_score, ood_predictor.run_pixels(pixels).ood_score, rtol=1e-5)
    assert ood_predictor.run_pixels(pixels).embedding is None  # not asked: not computed
    assert ood_predictor.run_pixels(pixels[:0], embedding=True).embedding.shape == (0, dims)


def test_the_score_is_computed_from_the_flip_averaged_features(ood_predictor):
    """Keras and ONNX agree, and both equal the NumPy score of the features the model pools."""
    import keras

    from catdog.model import POOLED_FEATURES, load_keras_model

    served = load_keras_model(tiny_ood_model_dir())
    pixels = _pixels(ood_predictor, IN_PHOTOS[:4] + OOD_PHOTOS[:4])
    features = keras.Model(served.inputs, served.get_layer(POOLED_FEATURES).output).predict(
        pixels.astype(np.float32), verbose=0)
    means, basis = served.get_layer("ood_score").get_weights()
    keras_probabilities, _, keras_scores, _ = served.predict(pixels.astype(np.float32), verbose=0)
    outputs = ood_predictor.run_pixels(pixels, batch_size=3)
    np.testing.assert_allclose(outputs.ood_score, residual_scores(features, means, basis), rtol=1e-3)
    np.testing.assert_allclose(outputs.ood_score, keras_scores, rtol=1e-3)
    np.testing.assert_allclose(outputs.probabilities, keras_probabilities, atol=1e-4)
    # the score of a photo and its mirror image are the same (averaged features)
    mirrored = ood_predictor.run_pixels(pixels[:, :, ::-1])
    np.testing.assert_allclose(mirrored.ood_score, outputs.ood_score, rtol=1e-3)
    np.testing.assert_array_equal(outputs.neither, outputs.ood_score > ood_predictor.ood_threshold)


def test_photos_unlike_the_training_ones_score_higher(ood_predictor):
    inside = ood_predictor.run_pixels(_pixels(ood_predictor, IN_PHOTOS))
    outside = ood_predictor.run_pixels(_pixels(ood_predictor, OOD_PHOTOS))
    assert auroc(inside.ood_score, outside.ood_score) > 0.85
    assert inside.neither.mean() <= 0.05 and outside.neither.sum() >= 1


def test_a_model_without_the_score_has_no_score_nor_flag():
    from catdog.onnx_predictor import OnnxPredictor

    old = OnnxPredictor(tiny_model_dir())
    outputs = old.run_pixels(_pixels(old, IN_PHOTOS[:2]), gradcam=True)
    assert not old.has_ood and old.ood_threshold is None
    assert outputs.ood_score is None and outputs.neither is None and outputs.gradcam.shape[0] == 2


def test_a_score_output_without_its_threshold_is_refused(tmp_path):
    import shutil

    from catdog.onnx_predictor import OnnxPredictor

    broken = shutil.copytree(tiny_ood_model_dir(), tmp_path / "model")
    metadata = json.loads((broken / "metadata.json").read_text())
    del metadata["ood"]
    (broken / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="no ood.threshold"):
        OnnxPredictor(broken)


# -- evaluation --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood-eval")
    for i, data in enumerate(IN_PHOTOS):
        folder = root / "labelled" / ("dog" if i % 2 == 0 else "cat")  # photo(): even seeds are blue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.jpg").write_bytes(data)
    (root / "neither" / "more").mkdir(parents=True)
    for i, data in enumerate(OOD_PHOTOS):
        (root / "neither" / ("more" if i % 2 else "") / f"{i}.jpg").write_bytes(data)
    return root


def test_make_evaluate_reports_false_rejects_detection_and_calibration(folders, capsys, ood_predictor):
    from catdog.evaluation import main

    assert main(["--model", str(tiny_ood_model_dir()), "--data", str(folders / "labelled"),
                 "--ood-data", str(folders / "neither")]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    inside = ood_predictor.run_pixels(_pixels(ood_predictor, IN_PHOTOS))
    outside = ood_predictor.run_pixels(_pixels(ood_predictor, OOD_PHOTOS))
    assert summary["ood_threshold"] == ood_predictor.ood_threshold
    assert summary["ood_false_reject_rate"] == pytest.approx(inside.neither.mean())
    assert summary["ood_n"] == len(OOD_PHOTOS)
    assert summary["ood_detection_rate"] == pytest.approx(outside.neither.mean())
    assert summary["ood_auroc"] == pytest.approx(auroc(inside.ood_score, outside.ood_score))
    assert summary["ood_data"] == str(folders / "neither")
    assert summary["ece"] >= 0 and summary["log_loss"] > 0
    assert "neither:" in out and "  ece" in out


def test_make_evaluate_of_a_model_without_the_score(folders, capsys):
    from catdog.evaluation import main

    assert main(["--model", str(tiny_model_dir()), "--data", str(folders / "labelled")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not any(key.startswith("ood_") for key in summary) and "ece" in summary
    assert main(["--model", str(tiny_model_dir()), "--data", str(folders / "labelled"),
                 "--ood-data", str(folders / "neither")]) == 2
    assert "no ood_score output" in capsys.readouterr().err


# -- serving -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ood_server():
    with run_server(make_model(tiny_ood_model_dir())) as server:
        yield server


def test_v1_predict_and_explain_carry_the_score_and_the_flag(ood_server, ood_predictor):
    photos = [IN_PHOTOS[0], *OOD_PHOTOS[:5]]
    expected = ood_predictor.run_pixels(_pixels(ood_predictor, photos))
    for verb in ("predict", "explain"):
        response = ood_server.post(f"/v1/models/catdog:{verb}", json=v1_json(*photos))
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert [p["neither"] for p in predictions] == expected.neither.tolist()
        np.testing.assert_allclose([p["ood_score"] for p in predictions], expected.ood_score, rtol=1e-5)
        np.testing.assert_allclose([p["probabilities"]["dog"] for p in predictions], expected.probabilities[:, 1],
                                   atol=1e-6)
        assert [p["label"] for p in predictions] == [["cat", "dog"][i] for i in expected.probabilities.argmax(1)]


def test_v2_outputs_by_default_and_by_name(ood_server, ood_predictor):
    photos = [IN_PHOTOS[1], *OOD_PHOTOS[:3]]
    expected = ood_predictor.run_pixels(_pixels(ood_predictor, photos))
    body = ood_server.post("/v2/models/catdog/infer", json=v2_json(*photos)).json()
    outputs = {o["name"]: o for o in body["outputs"]}
    assert list(outputs) == ["label", "probabilities", "ood_score", "neither"]
    assert outputs["neither"]["datatype"] == "BOOL" and outputs["neither"]["shape"] == [4]
    assert outputs["neither"]["data"] == expected.neither.tolist()
    assert outputs["ood_score"]["datatype"] == "FP32"
    np.testing.assert_allclose(outputs["ood_score"]["data"], expected.ood_score, rtol=1e-5)
    assert outputs["neither"]["parameters"]["threshold"] == pytest.approx(ood_predictor.ood_threshold)
    named = ood_server.post("/v2/models/catdog/infer", json={**v2_json(*photos), "outputs": [{"name": "neither"}]})
    assert [o["name"] for o in named.json()["outputs"]] == ["neither"]
    v2_outputs = ood_server.get("/v2/models/catdog").json()["outputs"]
    assert {"name": "ood_score", "datatype": "FP32", "shape": [-1]} in v2_outputs
    assert {"name": "neither", "datatype": "BOOL", "shape": [-1]} in v2_outputs
    metadata = ood_server.get("/v1/models/catdog/metadata").json()
    assert metadata["v2_outputs"] == v2_outputs and metadata["ood"]["threshold"] == ood_predictor.ood_threshold
    # the feedback app reads the threshold from the V2 metadata's parameters (feedback/predictor_client/client.py)
    assert ood_server.get("/v2/models/catdog").json()["parameters"]["ood"]["threshold"] == ood_predictor.ood_threshold


def test_the_embedding_is_answered_only_when_asked(ood_server, ood_predictor):
    """V1/Vertex "parameters": {"embedding": true} on :predict and :explain, V2 by name; never by default."""
    photos = [IN_PHOTOS[2], OOD_PHOTOS[0]]
    expected = ood_predictor.run_pixels(_pixels(ood_predictor, photos), embedding=True).embedding
    for verb in ("predict", "explain"):
        plain = ood_server.post(f"/v1/models/catdog:{verb}", json=v1_json(*photos)).json()["predictions"]
        assert all("embedding" not in p for p in plain)
        response = ood_server.post(f"/v1/models/catdog:{verb}", json={**v1_json(*photos), "parameters": {"embedding": True}})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose([p["embedding"] for p in response.json()["predictions"]], expected, atol=1e-4)
    body = ood_server.post("/v2/models/catdog/infer", json={**v2_json(*photos), "outputs": [{"name": "embedding"}]}).json()
    (output,) = body["outputs"]
    assert output["name"] == "embedding" and output["shape"] == [2, expected.shape[1]]
    np.testing.assert_allclose(np.reshape(output["data"], expected.shape), expected, rtol=1e-5, atol=1e-6)
    assert {"name": "embedding", "datatype": "FP32", "shape": [-1, expected.shape[1]]} in \
        ood_server.get("/v2/models/catdog").json()["outputs"]
    for bad in ({"embedding": "yes"}, ["embedding"]):
        response = ood_server.post("/v1/models/catdog:predict", json={**v1_json(photos[0]), "parameters": bad})
        assert response.status_code == 400 and "parameters" in response.json()["error"]


def test_a_model_without_the_score_answers_without_it(champion_registry):
    with run_server(make_model("champion", champion_registry.uri, reload_interval=0)) as server:
        (prediction,) = server.predict(IN_PHOTOS[0]).json()["predictions"]
        assert set(prediction) == {"label", "probabilities"}
        body = server.post("/v2/models/catdog/infer", json=v2_json(IN_PHOTOS[0])).json()
        assert [o["name"] for o in body["outputs"]] == ["label", "probabilities"]
        named = server.post("/v2/models/catdog/infer", json={**v2_json(IN_PHOTOS[0]), "outputs": [{"name": "ood_score"}]})
        assert named.status_code == 400 and "without the neither score" in named.text
        assert [o["name"] for o in server.get("/v2/models/catdog").json()["outputs"]] == ["label", "probabilities",
                                                                                        "gradcam"]
        assert server.get("/v1/models/catdog/metadata").json()["ood"] is None
        asked = server.post("/v1/models/catdog:predict", json={**v1_json(IN_PHOTOS[0]), "parameters": {"embedding": True}})
        assert asked.status_code == 200 and set(asked.json()["predictions"][0]) == {"label", "probabilities"}
        named = server.post("/v2/models/catdog/infer", json={**v2_json(IN_PHOTOS[0]), "outputs": [{"name": "embedding"}]})
        assert named.status_code == 400 and "trained without it" in named.json()["error"]


def test_the_app_stores_the_real_predictor_s_embedding_and_orders_by_it(tmp_path, ood_server, ood_predictor):
    """The feedback app against the real predictor (a model with the embedding): each stored
    prediction keeps the model's embedding, and the diverse review order uses it (/api/review-queue)."""
    from feedback.store import queries
    from tests.feedback_fixtures import feedback_settings, running_app

    photos = IN_PHOTOS[:4] + OOD_PHOTOS[:2]
    expected = ood_predictor.run_pixels(_pixels(ood_predictor, photos), embedding=True).embedding
    with running_app(feedback_settings(tmp_path, ood_server.url)) as app:
        ids = [app.predict(data).json()["id"] for data in photos]
        with app.service.db.read() as session:
            stored = [np.frombuffer(queries.get_prediction(session, i).embedding, "<f4") for i in ids]
        np.testing.assert_allclose(np.stack(stored), expected, atol=1e-4)
        page = app.get("/api/review-queue", params={"order": "diverse", "limit": 6}).json()
        assert page["order"] == "diverse" and sorted(p["id"] for p in page["predictions"]) == sorted(ids)
