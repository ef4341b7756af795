"""The model and its ONNX export: one input contract, one preprocessing path, Keras/ONNX parity."""

from __future__ import annotations

import json

import numpy as np
import pytest

from catdog.model_files import KERAS_FILE, METADATA_FILE, ONNX_FILE, serving_files
from catdog.preprocessing import PREPROCESSING_SPEC, batch_to_model_input, image_to_pixels
from tests.helpers import image_bytes
from tests.serving_fixtures import TINY_SIZE, tiny_model_dir

# (format, (width, height), Pillow mode): real encoded images of different sizes and modes,
# including alpha (composited on white), palette, greyscale, CMYK and a large JPEG (DCT draft path).
CASES = [
    ("JPEG", (64, 48), "RGB"),
    ("PNG", (100, 30), "RGBA"),
    ("PNG", (40, 90), "L"),
    ("PNG", (50, 50), "P"),
    ("JPEG", (300, 200), "RGB"),
    ("JPEG", (64, 64), "CMYK"),
    ("WEBP", (70, 60), "RGB"),
    ("BMP", (33, 47), "RGB"),
    ("GIF", (48, 48), "P"),
    ("JPEG", (37, 41), "L"),
]


def _images() -> list[bytes]:
    return [image_bytes(fmt, size, mode, seed=i, color=(200, 60, 40) if i % 2 else (40, 90, 200))
            for i, (fmt, size, mode) in enumerate(CASES)]


@pytest.fixture(scope="module")
def models():
    import keras

    from catdog.onnx_predictor import OnnxPredictor

    model_dir = tiny_model_dir()
    return keras.models.load_model(model_dir / KERAS_FILE), OnnxPredictor(model_dir)


def test_model_folder_contents():
    model_dir = tiny_model_dir()
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([KERAS_FILE, ONNX_FILE, METADATA_FILE])
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    assert metadata["class_names"] == ["cat", "dog"]
    assert metadata["image_size"] == TINY_SIZE
    assert metadata["preprocessing"] == PREPROCESSING_SPEC
    assert metadata["outputs"] == ["probabilities", "gradcam"]
    assert metadata["explanation"] == {"method": "grad-cam", "output": "gradcam", "feature_layer": "out_relu",
                                       "grid": [1, 1]}  # 32 px / 32 (MobileNetV2's output stride)


def test_model_normalises_inside(models):
    """The model takes [0, 255] pixels: the [-1, 1] normalisation is its first layer."""
    keras_model, _ = models
    assert tuple(keras_model.input_shape) == (None, TINY_SIZE, TINY_SIZE, 3)
    layer = keras_model.get_layer("normalise")
    out = np.asarray(layer(np.array([[[[0.0, 127.5, 255.0]]]], np.float32)))
    np.testing.assert_allclose(out, [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)


def test_onnx_matches_keras_on_real_encoded_images(models):
    keras_model, predictor = models
    images = _images()
    pixels = np.stack([image_to_pixels(b, TINY_SIZE) for b in images])
    assert pixels.shape == (len(CASES), TINY_SIZE, TINY_SIZE, 3) and pixels.dtype == np.uint8
    expected, _ = keras_model.predict(batch_to_model_input(list(pixels)), verbose=0)  # (probabilities, gradcam)
    onnx = predictor.predict_bytes(images)
    assert onnx.shape == (len(CASES), 2) and onnx.dtype == np.float32
    assert np.abs(onnx - expected).max() < 1e-4
    np.testing.assert_allclose(onnx.sum(axis=1), 1.0, atol=1e-5)
    # and through predict_pixels with batches that split the input (batch_size 3 -> 4 runs)
    assert np.abs(predictor.predict_pixels(pixels, batch_size=3) - expected).max() < 1e-4


def test_probabilities_depend_on_the_image(models):
    _, predictor = models
    probabilities = predictor.predict_bytes(_images())
    dog = probabilities[:, 1]
    assert dog.max() - dog.min() > 0.05, dog  # a constant model would make every parity check vacuous
    assert len(np.unique(np.round(dog, 4))) >= 8
    assert set(probabilities.argmax(axis=1).tolist()) == {0, 1}  # both labels occur


def test_onnx_on_file_bytes_equals_keras_on_shared_preprocessing(models, tmp_path):
    """OnnxPredictor reads raw file bytes; Keras gets image_to_pixels' output: same numbers."""
    keras_model, predictor = models
    paths = []
    for i, data in enumerate(_images()):
        paths.append(tmp_path / f"img{i}.bin")  # extension says nothing: content decides
        paths[-1].write_bytes(data)
    file_bytes = [p.read_bytes() for p in paths]
    for data in file_bytes:
        np.testing.assert_array_equal(predictor.pixels(data), image_to_pixels(data, TINY_SIZE))
    keras_probs, _ = keras_model.predict(
        np.stack([image_to_pixels(b, TINY_SIZE) for b in file_bytes]).astype(np.float32), verbose=0
    )
    assert np.abs(predictor.predict_bytes(file_bytes) - keras_probs).max() < 1e-4


def test_predictor_uses_the_shared_preprocessing_function(models, monkeypatch):
    """predict_bytes goes through catdog.preprocessing.image_to_pixels, not its own decoder."""
    import catdog.onnx_predictor as predictor_module

    _, predictor = models
    calls = []

    def spy(data, size, max_pixels):
        calls.append((len(data), size))
        return image_to_pixels(data, size, max_pixels)

    monkeypatch.setattr(predictor_module, "image_to_pixels", spy)
    images = _images()[:3]
    predictor.predict_bytes(images)
    assert calls == [(len(b), TINY_SIZE) for b in images]


def test_alpha_is_composited_on_white_before_the_model():
    """A fully transparent image is white for the model, whatever the hidden colour values."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (40, 40), (10, 200, 30, 0)).save(buffer, format="PNG")
    pixels = image_to_pixels(buffer.getvalue(), TINY_SIZE)
    assert pixels.shape == (TINY_SIZE, TINY_SIZE, 3)
    assert (pixels == 255).all()


def test_flip_averaged_model_is_mirror_invariant_in_keras_and_onnx(tmp_path):
    """with_flip_averaging: the exported model answers the same for a photo and its mirror image,
    and still differs from the plain model (so the averaging is really in the graph)."""

    from catdog.model import load_keras_model, save_model_dir, with_flip_averaging
    from catdog.onnx_predictor import OnnxPredictor

    plain = load_keras_model(tiny_model_dir())
    averaged_dir = save_model_dir(with_flip_averaging(plain), tmp_path / "averaged", {
        "class_names": ["cat", "dog"], "image_size": TINY_SIZE, "preprocessing": PREPROCESSING_SPEC})
    pixels = np.stack([image_to_pixels(image_bytes(size=(60 + 7 * i, 41 + 5 * i), seed=i), TINY_SIZE)
                       for i in range(6)]).astype(np.float32)
    mirrored = pixels[:, :, ::-1, :].copy()
    onnx = OnnxPredictor(averaged_dir)
    keras_model = load_keras_model(averaged_dir)
    np.testing.assert_allclose(onnx.predict_pixels(pixels), onnx.predict_pixels(mirrored), atol=1e-5)
    np.testing.assert_allclose(keras_model.predict(pixels, verbose=0)[0], onnx.predict_pixels(pixels), atol=1e-4)
    plain_probabilities, mirrored_probabilities = (plain.predict(x, verbose=0)[0] for x in (pixels, mirrored))
    np.testing.assert_allclose(onnx.predict_pixels(pixels), (plain_probabilities + mirrored_probabilities) / 2, atol=1e-4)
    assert np.abs(plain_probabilities - mirrored_probabilities).max() > 1e-4


def test_test_time_input_size_keeps_the_centre_crop_symmetric():
    from catdog.test_time_views import test_time_input_size

    assert test_time_input_size(256, 0.8) == 320 and test_time_input_size(32, 0.8) == 40
    assert test_time_input_size(256, 1.0) == 256
    assert all((test_time_input_size(size, crop) - size) % 2 == 0 for size in (32, 33, 224, 256) for crop in (0.7, 0.85, 0.9))
    with pytest.raises(ValueError, match="test_time_crop"):
        test_time_input_size(256, 0.0)


def test_test_time_views_answer_the_whole_photo_or_its_mean_with_the_centre_view(tmp_path):
    """with_test_time_views (crop 0.8): a 40-px input for the 32-px classifier. A confident photo gets
    the whole photo's flip-averaged answer (the input downscaled), an unsure one (top probability
    below CENTRE_VIEW_BELOW) the mean of that and its centre crop's; the same from the Keras model and
    from the predictor over the two ONNX files, the same for a photo and its mirror image, alone or in
    a batch, and the Grad-CAM maps are the whole photo's."""
    import keras

    from catdog.model import load_keras_model, save_model_dir, with_flip_averaging
    from catdog.test_time_views import CENTRE_VIEW_BELOW, with_test_time_views
    from catdog.onnx_predictor import OnnxPredictor
    from tests.serving_fixtures import _tiny_model

    _, classifier = _tiny_model("catdog-views-test-")
    head = classifier.get_layer("probabilities")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 100, bias * 100])  # spreads the answers: some photos confident, some not
    model_dir = save_model_dir(with_test_time_views(classifier, True, 0.8), tmp_path / "views", {
        "class_names": ["cat", "dog"], "image_size": TINY_SIZE, "input_size": 40, "preprocessing": PREPROCESSING_SPEC})
    onnx = OnnxPredictor(model_dir)
    assert onnx.image_size == 40
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    assert metadata["outputs"] == ["probabilities", "gradcam"]
    assert metadata["test_time_views"] | {"rule": ""} == {"input_size": 40, "view_size": 32, "centre_share": 0.8,
                                                            "mirrored": True, "centre_view_below": CENTRE_VIEW_BELOW,
                                                            "centre_onnx": "centre.onnx", "rule": ""}
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([KERAS_FILE, ONNX_FILE, "centre.onnx", METADATA_FILE])
    pixels = np.stack([image_to_pixels(image_bytes(size=(60 + 7 * i, 41 + 5 * i), seed=i, color=(30 * i, 200 - 20 * i, 90)), 40)
                       for i in range(10)]).astype(np.float32)
    flip_averaged = with_flip_averaging(classifier)
    whole_probabilities, whole_maps = flip_averaged.predict(keras.ops.image.resize(pixels, (32, 32)), verbose=0)
    centre, _ = flip_averaged.predict(pixels[:, 4:36, 4:36], verbose=0)
    unsure = whole_probabilities.max(axis=1) < CENTRE_VIEW_BELOW
    assert 0 < unsure.sum() < len(unsure), whole_probabilities  # both kinds of photo are checked
    expected = np.where(unsure[:, None], (whole_probabilities + centre) / 2, whole_probabilities)
    outputs = onnx.run_pixels(pixels, gradcam=True)
    np.testing.assert_allclose(outputs.probabilities, expected, atol=1e-4)
    np.testing.assert_allclose(outputs.gradcam, whole_maps, atol=1e-4)
    np.testing.assert_allclose(load_keras_model(model_dir).predict(pixels, verbose=0)[0], expected, atol=1e-4)
    np.testing.assert_allclose(onnx.predict_pixels(pixels[:, :, ::-1].copy()), outputs.probabilities, atol=1e-5)
    np.testing.assert_allclose(onnx.predict_pixels(pixels[unsure][:1]), expected[unsure][:1], atol=1e-4)  # alone too
    # what a server downloads from a gs:// folder; a centre file name that leaves the folder is refused
    assert serving_files(metadata) == [ONNX_FILE, METADATA_FILE, "centre.onnx"]
    metadata["test_time_views"]["centre_onnx"] = "../centre.onnx"
    (model_dir / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match="centre_onnx must name an .onnx file in the model folder"):
        OnnxPredictor(model_dir)
