"""Training on a tiny synthetic dataset written through the real ingest + preprocess code."""

from __future__ import annotations

import base64
import dataclasses
import json
import re

import numpy as np
import pytest

from catdog.model_files import KERAS_FILE, METADATA_FILE, ONNX_FILE
from catdog.preprocessing import PREPROCESSING_SPEC
from tests.model_fixtures import TINY, load_split_arrays, make_dataset, train_params


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 1 + 1 epoch run at 32 px on 12 synthetic photos (about 8 s); shared by the module."""
    from catdog.train import train_model

    root = tmp_path_factory.mktemp("train")
    built = make_dataset(root, {"cat": 6, "dog": 6}, seed=3)
    params = train_params(seed=3)
    output = root / "out" / "model"
    metadata = train_model(built.dataset_dir, output, params)
    return built, params, output, metadata


def test_train_writes_the_model_folder(trained):
    _, _, output, metadata = trained
    assert sorted(p.name for p in output.iterdir()) == sorted([KERAS_FILE, ONNX_FILE, METADATA_FILE])
    assert json.loads((output / METADATA_FILE).read_text()) == metadata
    assert not list(output.parent.glob("*-best.keras"))  # the checkpoint is cleaned up


def test_train_metadata(trained):
    built, params, _, metadata = trained
    assert metadata["class_names"] == ["cat", "dog"]
    assert metadata["image_size"] == TINY
    assert metadata["preprocessing"] == PREPROCESSING_SPEC
    assert metadata["training_parameters"] == dataclasses.asdict(params)
    assert metadata["training_parameters"]["weights"] == "none"
    assert metadata["data_fingerprint"] == built.result.fingerprint == built.metadata["fingerprint"]
    assert re.fullmatch(r"[0-9a-f]{64}", metadata["data_fingerprint"])
    assert metadata["split_counts"] == {"train": 4, "validation": 4, "test": 4}  # round(6 * 0.25) = 2 per class
    assert [(h["phase"], h["epoch"]) for h in metadata["history"]] == [("frozen", 1), ("finetune", 2)]
    for entry in metadata["history"]:
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(entry)
        assert 0.0 <= entry["val_accuracy"] <= 1.0 and entry["loss"] > 0
    assert metadata["best_val_accuracy"] == min(metadata["history"], key=lambda h: h["val_loss"])["val_accuracy"]
    assert "alpha=0.35" in metadata["architecture"]
    assert metadata["outputs"] == ["probabilities", "gradcam", "ood_score", "embedding"]
    assert metadata["embedding"]["dims"] == 2  # the first EMBEDDING_DIMS of the fit's 2 directions
    assert metadata["explanation"]["grid"] == [1, 1]  # 32 px / 32
    # the neither score: fitted on the 4 train photos' features, its threshold on the 4 validation ones
    assert metadata["ood"]["train_n"] == metadata["ood"]["val_n"] == 4
    assert metadata["ood"]["components"] == 2 and metadata["ood"]["val_false_reject_rate"] == 0.0  # 4 - 2 classes


def test_trained_model_loads_and_predicts(trained):
    """Both exports load; the ONNX one gives a probability pair per image, and Grad-CAM maps."""
    import keras

    from catdog.onnx_predictor import OnnxPredictor

    _, _, output, _ = trained
    pixels, labels = load_split_arrays(trained[0].dataset_dir, "test")
    predictor = OnnxPredictor(output)
    assert predictor.class_names == ["cat", "dog"] and predictor.image_size == TINY
    onnx = predictor.predict_pixels(pixels.astype(np.uint8))
    keras_probs, keras_maps, keras_scores, keras_embedding = keras.models.load_model(output / KERAS_FILE).predict(
        pixels, verbose=0)
    assert keras_embedding.shape == (4, 2)
    assert onnx.shape == (len(labels), 2) == (4, 2)
    np.testing.assert_allclose(onnx.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(onnx - keras_probs).max() < 1e-4
    assert predictor.has_gradcam
    _, maps = predictor.explain_pixels(pixels)
    assert maps.shape == keras_maps.shape == (4, 1, 1, 2) and np.abs(maps - keras_maps).max() < 1e-3
    assert predictor.has_ood and keras_scores.shape == predictor.run_pixels(pixels).ood_score.shape == (4,)


def test_training_curves_html(trained, tmp_path):
    from catdog.train import curves_html

    _, _, _, metadata = trained
    page = tmp_path / "curves.html"
    page.write_text(curves_html(metadata["history"]))
    html = page.read_text()
    assert html.startswith("<html>") and html.rstrip().endswith("</html>")
    match = re.search(r'<img alt="training curves" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert match, "no embedded PNG"
    png = base64.b64decode(match.group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert html.count("<tr><td>") == len(metadata["history"]) == 2
    assert "<td>finetune</td>" in html and "<td>frozen</td>" in html


def test_same_seed_same_split_and_fingerprint(trained, tmp_path):
    """Writing the dataset again from the same source with the same seed: same split, same fingerprint."""
    built, _, _, metadata = trained
    again = make_dataset(tmp_path / "again", seed=3, source=built.source)
    assert again.result.fingerprint == built.result.fingerprint == metadata["data_fingerprint"]
    for split in ("train", "validation", "test"):
        assert again.metadata["splits"][split]["sha256"] == built.metadata["splits"][split]["sha256"]
    other = make_dataset(tmp_path / "other", seed=4, source=built.source)
    assert other.result.fingerprint == built.result.fingerprint  # the data, not the split
    assert any(other.metadata["splits"][s]["sha256"] != built.metadata["splits"][s]["sha256"]
               for s in ("train", "validation", "test"))


def test_train_params_have_no_defaults_and_match_the_pipeline_config():
    from catdog.train import TrainParams
    from pipelines.config import PipelineConfig

    fields = dataclasses.fields(TrainParams)
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields)
    with pytest.raises(TypeError):
        TrainParams()  # type: ignore[call-arg]
    assert {f.name for f in fields} <= set(PipelineConfig.model_fields)


def test_missing_weights_file_is_a_clear_error(trained, tmp_path):
    from catdog.train import train_model

    missing = tmp_path / "nope" / "mobilenet.h5"
    output = tmp_path / "model"
    with pytest.raises(FileNotFoundError, match=f"weights file not found: {re.escape(str(missing))}"):
        train_model(trained[0].dataset_dir, output, train_params(weights=str(missing)))
    assert not output.exists()  # nothing half-written


def test_unknown_augmentation_is_a_clear_error(trained, tmp_path):
    from catdog.train import train_model

    output = tmp_path / "model"
    with pytest.raises(ValueError, match=r"unknown augmentation\(s\) \['sepia'\]"):
        train_model(trained[0].dataset_dir, output, train_params(augmentations="flip,sepia"))
    assert not output.exists()


def test_the_frozen_phase_trains_only_the_head_on_features_computed_once(tmp_path):
    import keras

    from catdog.dataset import load_split, load_split_features
    from catdog.model import BACKBONE_NAME, HEAD_NAME, build_model
    from catdog.train import pooled_features, train_head

    built = make_dataset(tmp_path, {"cat": 6, "dog": 6}, seed=1)
    params = train_params(frozen_epochs=3, early_stopping_patience=5, augmentations="flip", batch_size=3)
    model = build_model(2, TINY, 0.35, "none", 0.1)
    backbone_before = [w.copy() for w in model.get_layer(BACKBONE_NAME).get_weights()]
    head_before = [w.copy() for w in model.get_layer(HEAD_NAME).get_weights()]
    features, labels = pooled_features(model, built.dataset_dir, "train", True, 4)
    n_train = built.metadata["splits"]["train"]["count"]
    assert features.shape[0] == labels.shape[0] == 2 * n_train  # each photo and its mirror image
    history = train_head(model, built.dataset_dir, params, keras.losses.SparseCategoricalCrossentropy(),
                         features_dir=tmp_path / "features")
    # the features it computed, written for the label-issues step: the photos themselves, in file order
    saved = load_split_features(tmp_path / "features")
    originals, _ = pooled_features(model, built.dataset_dir, "train", False, 4)
    np.testing.assert_allclose(saved["train_features"], originals, atol=1e-5)
    assert saved["train_sha256"].tolist() == built.metadata["splits"]["train"]["sha256"]
    assert saved["validation_features"].shape[0] == built.metadata["splits"]["validation"]["count"]
    assert len(history["loss"]) == 3 and {"val_loss", "val_accuracy", "accuracy"} <= set(history)
    assert all(np.array_equal(a, b) for a, b in zip(backbone_before, model.get_layer(BACKBONE_NAME).get_weights()))
    assert not np.array_equal(head_before[0], model.get_layer(HEAD_NAME).get_weights()[0])
    # the full model predicts with the trained head: its probabilities equal the head's on the features
    x, _ = next(iter(load_split(built.dataset_dir, "train").batch(2)))
    dense = model.get_layer(HEAD_NAME)
    expected = dense(features[:2])
    np.testing.assert_allclose(model.predict_on_batch(x.numpy()), np.asarray(expected), atol=1e-5)


def test_without_a_frozen_phase_the_features_are_still_written(trained, tmp_path):
    """frozen_epochs=0: no frozen phase computes them, so train does (the label-issues step needs them)."""
    from catdog.dataset import load_split_features
    from catdog.train import train_model

    built = trained[0]
    train_model(built.dataset_dir, tmp_path / "model", train_params(frozen_epochs=0, finetune_epochs=1),
                features_dir=tmp_path / "features")
    saved = load_split_features(tmp_path / "features")
    for split in ("train", "validation"):
        assert saved[f"{split}_sha256"].tolist() == built.metadata["splits"][split]["sha256"]
        assert saved[f"{split}_labels"].shape == (built.metadata["splits"][split]["count"],)
        assert saved[f"{split}_features"].shape[0] == built.metadata["splits"][split]["count"]


def test_finetune_ema_swaps_the_averaged_weights_in_at_the_end_of_every_epoch():
    """finetune_ema_momentum > 0: Keras' own weight averaging (use_ema), overwriting the model's
    weights with the averages at the last step of each epoch; 0: plain Adam."""
    import keras

    from catdog.train import finetune_optimizer

    assert not finetune_optimizer(train_params(finetune_ema_momentum=0.0), 20).use_ema
    n, batch_size = 20, 8  # 3 steps an epoch, the last one short
    optimizer = finetune_optimizer(train_params(finetune_ema_momentum=0.9, batch_size=batch_size), n)
    assert (optimizer.use_ema, optimizer.ema_momentum, optimizer.ema_overwrite_frequency) == (True, 0.9, 3)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 2, n)
    model.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
    averages = optimizer._model_variables_moving_average  # Keras' EMA slots, one per trainable variable
    for variable, average in zip(model.trainable_variables, averages):
        np.testing.assert_allclose(np.asarray(variable), np.asarray(average), atol=1e-7)
    # the averages lag the raw Adam steps: without EMA the same fit ends elsewhere
    keras.utils.set_random_seed(0)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    plain.compile(optimizer=finetune_optimizer(train_params(finetune_ema_momentum=0.0, batch_size=batch_size), n),
                  loss="sparse_categorical_crossentropy")
    plain.fit(x, y, batch_size=batch_size, epochs=2, shuffle=False, verbose=0)
    assert not np.allclose(np.asarray(plain.trainable_variables[0]), np.asarray(model.trainable_variables[0]))


def test_cosine_schedule_decays_the_fine_tuning_rate_to_zero_and_drops_the_plateau_cut():
    """finetune_lr_schedule="cosine": the rate falls from finetune_learning_rate to 0 over
    finetune_epochs epochs, and ReduceLROnPlateau (which cannot set a scheduled rate) is left out."""
    import keras

    from catdog.train import _callbacks, finetune_optimizer

    params = train_params(finetune_lr_schedule="cosine", finetune_learning_rate=1e-3, finetune_epochs=3, batch_size=8)
    rate = finetune_optimizer(params, 20)._learning_rate  # 3 steps an epoch: 9 steps in all
    assert isinstance(rate, keras.optimizers.schedules.CosineDecay)
    assert float(rate(0)) == pytest.approx(1e-3) and float(rate(9)) == pytest.approx(0.0, abs=1e-9)
    assert 0.0 < float(rate(4)) < 1e-3
    kinds = {type(c).__name__ for c in _callbacks(params, None, plateau=False)}
    assert kinds == {"EarlyStopping"}
    assert "ReduceLROnPlateau" in {type(c).__name__ for c in _callbacks(params, None)}
    plain = finetune_optimizer(train_params(finetune_learning_rate=1e-3), 20)
    assert not isinstance(plain._learning_rate, keras.optimizers.schedules.LearningRateSchedule)


def test_label_smoothing_cosine_rate_and_lower_finetune_resolution_in_one_run(tmp_path, capsys):
    """label_smoothing > 0: categorical cross-entropy with smoothing on one-hot labels, in both
    phases; 0: sparse cross-entropy on indices. One whole 1 + 1 epoch run with the cosine rate
    and finetune_image_scale < 1 (FixRes) too: the fine-tuning batches are the augmented photos
    downscaled, validation batches stay at image_size; and test_time_crop < 1: the exported Keras
    and ONNX models take input_size (image_size / test_time_crop), with the centre view's ONNX file."""
    import keras
    import onnx

    from catdog.model import load_keras_model
    from catdog.onnx_predictor import OnnxPredictor
    from catdog.train import _datasets, _label_encoder, train_model, training_loss

    smooth = train_params(label_smoothing=0.1)
    loss = training_loss(smooth)
    assert isinstance(loss, keras.losses.CategoricalCrossentropy) and loss.get_config()["label_smoothing"] == 0.1
    np.testing.assert_array_equal(np.asarray(_label_encoder(smooth, 2)(np.array([1, 0]))), [[0, 1], [1, 0]])
    assert isinstance(training_loss(train_params()), keras.losses.SparseCategoricalCrossentropy)
    # a perfect prediction still has a loss under smoothing (the targets are 0.95 / 0.05)
    assert float(loss(np.array([[0.0, 1.0]]), np.array([[1e-7, 1 - 1e-7]]))) > 0.1
    built = make_dataset(tmp_path, {"cat": 6, "dog": 6}, seed=3, image_size=64)
    params = train_params(seed=3, label_smoothing=0.1, finetune_lr_schedule="cosine", finetune_image_scale=0.5,
                          test_time_crop=0.8)
    train, validation = _datasets(built.dataset_dir, params, 2, 64)
    assert next(iter(train))[0].shape[1:] == (32, 32, 3)
    assert next(iter(validation))[0].shape[1:] == (64, 64, 3)
    output = tmp_path / "out" / "model"
    metadata = train_model(built.dataset_dir, output, params)
    assert [(h["phase"], h["epoch"]) for h in metadata["history"]] == [("frozen", 1), ("finetune", 2)]
    assert all(np.isfinite(h["loss"]) and 0.0 <= h["val_accuracy"] <= 1.0 for h in metadata["history"])
    assert metadata["training_parameters"]["label_smoothing"] == 0.1
    assert "on photos at 32 px (validation at 64)" in capsys.readouterr().out
    assert (metadata["image_size"], metadata["finetune_image_size"]) == (64, 32)
    assert (metadata["input_size"], metadata["test_time_views"]["view_size"]) == (80, 64)
    assert metadata["architecture"].endswith(
        "averaged over the whole photo and its mirror image; for a photo whose top probability is below 0.98, "
        "also its centre 80% and its mirror image (input 80 px, each view at 64)")
    assert load_keras_model(output).input_shape == (None, 80, 80, 3)
    for name in (ONNX_FILE, "centre.onnx"):
        dims = onnx.load(str(output / name)).graph.input[0].type.tensor_type.shape.dim
        assert [d.dim_value for d in dims][1:] == [80, 80, 3]
    predictor = OnnxPredictor(output)
    assert predictor.image_size == 80
    np.testing.assert_allclose(predictor.predict_pixels(np.full((2, 80, 80, 3), 90, np.uint8)).sum(axis=1), 1, atol=1e-5)
