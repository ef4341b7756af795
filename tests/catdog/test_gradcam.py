"""Grad-CAM inside the exported model (catdog.model), its predictor API (catdog.onnx_predictor), the
overlay (catdog.gradcam) and evaluate's "Where the model looks" page (catdog.gallery).

The model is a random-weight MobileNetV2 at 96 px (a 3x3 feature grid), made to depend on the
image; the photos are synthetic but photo-like (smooth colour gradients with filled shapes).
"""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from catdog.gradcam import overlay, overlay_png
from catdog.model_files import METADATA_FILE, ONNX_FILE
from catdog.preprocessing import PREPROCESSING_SPEC, image_to_pixels
from tests.serving_fixtures import tiny_model_dir

SIZE = 96
GRID = SIZE // 32  # MobileNetV2's output stride
CLASSES = ["cat", "dog"]
METADATA = {"class_names": CLASSES, "image_size": SIZE, "preprocessing": PREPROCESSING_SPEC}


def scene(seed: int, size=(120, 100)) -> np.ndarray:
    """A photo-like image: a smooth two-colour gradient with three filled shapes, through the
    shared preprocessing to (SIZE, SIZE, 3) uint8."""
    rng = np.random.default_rng(seed)
    width, height = size
    start, end = rng.integers(0, 256, (2, 3))
    ramp = (np.linspace(0, 1, width)[None, :, None] * rng.uniform(0.3, 1)
            + np.linspace(0, 1, height)[:, None, None] * rng.uniform(0, 0.7))
    ramp /= ramp.max()
    image = Image.fromarray(((1 - ramp) * start + ramp * end).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = rng.integers(0, width - 20), rng.integers(0, height - 20)
        box = (x, y, x + rng.integers(15, width // 2), y + rng.integers(15, height // 2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return image_to_pixels(buffer.getvalue(), SIZE)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return np.stack([scene(i) for i in range(8)])


@pytest.fixture(scope="module")
def classifier():
    """build_model's classifier, its BatchNorm variances shrunk so that its outputs depend on the
    image (see tests/serving_fixtures.py: a random MobileNetV2 otherwise answers ~[0.5, 0.5]), and
    a head bias that is not 0 (Grad-CAM must not depend on it)."""
    import keras

    from catdog.model import build_model

    keras.utils.set_random_seed(1)
    model = build_model(len(CLASSES), SIZE, 0.35, "none", 0.0)
    model.set_weights([np.full_like(w.numpy(), 0.1) if "moving_variance" in w.path else w.numpy()
                       for w in model.weights])
    head = model.get_layer("probabilities")
    head.set_weights([head.get_weights()[0], np.array([0.5, -0.5], np.float32)])
    return model


@pytest.fixture(scope="module")
def exported(classifier, tmp_path_factory):
    """Model folders: 'plain' and 'flip' (save_model_dir, two outputs) and 'old' (a single-output
    export as before Grad-CAM: Keras' exporter alone, metadata without outputs)."""
    from catdog.model import save_model_dir, with_flip_averaging

    root = tmp_path_factory.mktemp("gradcam")
    old = root / "old"
    old.mkdir()
    classifier(np.zeros((1, SIZE, SIZE, 3), np.float32))  # what export_onnx did before Grad-CAM
    classifier.export(str(old / ONNX_FILE), format="onnx", verbose=False)
    (old / METADATA_FILE).write_text(json.dumps(METADATA))
    return {"plain": save_model_dir(classifier, root / "plain", METADATA),
            "flip": save_model_dir(with_flip_averaging(classifier), root / "flip", METADATA), "old": old}


def normalised(maps: np.ndarray) -> np.ndarray:
    peak = maps.max(axis=(1, 2), keepdims=True)
    return maps / np.where(peak > 0, peak, 1)


def textbook_gradcam(classifier, pixels: np.ndarray) -> np.ndarray:
    """Grad-CAM by the book, (n, h, w, classes): the gradient of each class logit (pre-softmax,
    from the Dense layer's kernel and bias) w.r.t. the backbone's last activation A (out_relu),
    alpha_k = its spatial mean, map = ReLU(sum_k alpha_k A_k), normalised by its maximum."""
    import keras
    import tensorflow as tf

    backbone = classifier.get_layer("backbone")
    activations = keras.Model(backbone.input, [backbone.get_layer("out_relu").output, backbone.output])
    kernel, bias = classifier.get_layer("probabilities").get_weights()
    x = classifier.get_layer("normalise")(pixels.astype(np.float32))
    maps = []
    for c in range(kernel.shape[1]):
        with tf.GradientTape() as tape:
            features, pooled = activations(x)
            logit = tf.matmul(pooled, kernel[:, c:c + 1]) + bias[c]
        alpha = tf.reduce_mean(tape.gradient(logit, features), axis=(1, 2), keepdims=True)
        maps.append(tf.nn.relu(tf.reduce_sum(alpha * features, axis=-1)).numpy())
    return normalised(np.stack(maps, axis=-1))


def textbook_flip_averaged(classifier, pixels: np.ndarray) -> np.ndarray:
    """The same on the mirror image, mirrored back, averaged with the image's, normalised."""
    mirrored = textbook_gradcam(classifier, pixels[:, :, ::-1])[:, :, ::-1]
    return normalised((textbook_gradcam(classifier, pixels) + mirrored) / 2)


def predictor(model_dir):
    from catdog.onnx_predictor import OnnxPredictor

    return OnnxPredictor(model_dir)


# -- the export ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["plain", "flip"])
def test_exported_outputs_and_metadata(exported, kind):
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported[kind] / ONNX_FILE), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "gradcam"]
    metadata = json.loads((exported[kind] / METADATA_FILE).read_text())
    assert metadata["outputs"] == ["probabilities", "gradcam"]
    assert metadata["explanation"] == {"method": "grad-cam", "output": "gradcam", "feature_layer": "out_relu",
                                       "grid": [GRID, GRID]}
    assert {k: metadata[k] for k in METADATA} == METADATA


@pytest.mark.parametrize("kind", ["plain", "flip"])
def test_keras_and_onnx_agree_on_both_outputs(exported, photos, kind):
    from catdog.model import load_keras_model

    keras_probabilities, keras_maps = load_keras_model(exported[kind]).predict(photos.astype(np.float32), verbose=0)
    probabilities, maps = predictor(exported[kind]).explain_pixels(photos, batch_size=3)
    assert probabilities.shape == (len(photos), 2) and maps.shape == (len(photos), GRID, GRID, 2)
    assert maps.dtype == np.float32
    assert np.abs(probabilities - keras_probabilities).max() < 1e-4
    assert np.abs(maps - keras_maps).max() < 1e-3
    assert maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1.0, atol=1e-6)  # each map normalised


def test_probabilities_are_the_classifiers(classifier, exported, photos):
    """The gradcam output changes nothing about the probabilities (also vs a pre-Grad-CAM export)."""
    expected = classifier.predict(photos.astype(np.float32), verbose=0)
    assert np.abs(predictor(exported["plain"]).predict_pixels(photos) - expected).max() < 1e-4
    assert np.abs(predictor(exported["old"]).predict_pixels(photos) - expected).max() < 1e-4
    assert expected[:, 1].max() - expected[:, 1].min() > 0.05  # the model depends on the image


def test_exported_map_is_textbook_gradcam(classifier, exported, photos):
    expected = textbook_gradcam(classifier, photos)
    _, maps = predictor(exported["plain"]).explain_pixels(photos)
    assert np.abs(maps - expected).max() < 1e-3
    assert expected.std(axis=(1, 2)).min() > 0.05  # real spatial structure, not a constant map
    assert np.abs(expected[1:] - expected[:1]).max() > 0.1  # and it depends on the image


def test_flip_averaged_map_is_the_mirrored_back_average(classifier, exported, photos):
    expected = textbook_flip_averaged(classifier, photos)
    _, maps = predictor(exported["flip"]).explain_pixels(photos)
    assert np.abs(maps - expected).max() < 1e-3
    assert np.abs(expected - textbook_gradcam(classifier, photos)).max() > 0.05  # the averaging shows


# -- the predictor --------------------------------------------------------------------------------------
@pytest.fixture
def run_calls(monkeypatch):
    """Spy on OnnxPredictor sessions' run: record the output names each call asks for."""
    calls: list[list[str]] = []

    def spy_on(p):
        run = p.session.run
        monkeypatch.setattr(p.session, "run", lambda names, feeds: calls.append(list(names)) or run(names, feeds))
        return p

    return SimpleNamespace(calls=calls, spy_on=spy_on)


def test_predict_pixels_asks_for_the_probabilities_only(exported, photos, run_calls):
    p = run_calls.spy_on(predictor(exported["flip"]))
    assert p.predict_pixels(photos, batch_size=3).shape == (len(photos), 2)
    assert run_calls.calls == [["probabilities"]] * 3


def test_explain_pixels_is_one_run_per_batch(exported, photos, run_calls):
    p = run_calls.spy_on(predictor(exported["plain"]))
    probabilities, _ = p.explain_pixels(photos, batch_size=5)
    assert run_calls.calls == [["probabilities", "gradcam"]] * 2
    np.testing.assert_allclose(probabilities, p.predict_pixels(photos), atol=1e-6)


def test_explain_no_pixels(exported):
    probabilities, maps = predictor(exported["plain"]).explain_pixels(np.zeros((0, SIZE, SIZE, 3), np.uint8))
    assert probabilities.shape == (0, 2) and maps.shape == (0, GRID, GRID, 2)


def test_old_single_output_model_keeps_predicting(exported, photos):
    from catdog.onnx_predictor import load_checked

    old = load_checked(exported["old"])
    assert not old.has_gradcam and predictor(exported["plain"]).has_gradcam
    assert old.predict_pixels(photos).shape == (len(photos), 2)
    with pytest.raises(ValueError, match=r"no gradcam output \(exported before Grad-CAM: retrain it\)"):
        old.explain_pixels(photos)


def test_the_shared_tiny_model_has_both_outputs():
    """tests/serving_fixtures.py's model (the server tests') is a two-output model too."""
    assert predictor(tiny_model_dir()).has_gradcam


# -- the overlay ----------------------------------------------------------------------------------------
def test_overlay_png_is_the_photo_size_and_hot_is_red():
    photo = np.full((80, 120, 3), 128, np.uint8)  # H 80, W 120
    grid = np.zeros((2, 3), np.float32)
    grid[0, 0] = 1.0  # hot top-left cell; the bottom-right one is cold
    png = overlay_png(photo, grid)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (120, 80) and image.mode == "RGB"
    pixels = np.asarray(image).astype(int)
    redness = pixels[..., 0] - pixels[..., 2]
    assert redness[:20, :20].mean() > 40 > -40 > redness[-20:, -20:].mean()
    np.testing.assert_array_equal(pixels, overlay(photo, grid))


def test_overlay_keeps_the_photo_visible():
    photo = np.zeros((32, 32, 3), np.uint8)
    photo[:, 16:] = 255
    out = overlay(photo, np.full((1, 1), 0.5), alpha=0.45)
    assert out[:, 16:].mean() - out[:, :16].mean() == pytest.approx(0.55 * 255, abs=1)


def test_overlay_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"need \(H, W, 3\) pixels and an \(h, w\) grid"):
        overlay(np.zeros((8, 8), np.uint8), np.zeros((2, 2)))
    with pytest.raises(ValueError):
        overlay(np.zeros((8, 8, 3), np.uint8), np.zeros((2, 2, 2)))


# -- the gallery ----------------------------------------------------------------------------------------
class PageParser(HTMLParser):
    """Collects <img> sources and <figcaption> texts, and checks that tags nest properly."""

    VOID = {"img", "br", "meta"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.captions: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "figcaption":
            self.captions.append("")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"</{tag}> does not close <{self.stack[-1:]}>"

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "figcaption":
            self.captions[-1] += data


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    parser.close()
    assert page.startswith("<!DOCTYPE html>") and not parser.stack
    assert "<title>Where the model looks</title>" in page
    return parser


def _from_arrays(pixels: np.ndarray, maps: np.ndarray):
    """A gallery Explainer over arrays held in memory: indices -> (their pixels, their maps)."""
    return lambda indices: (pixels[indices], maps[indices])


def chosen_answers(labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, class_names=CLASSES):
    """(probabilities, maps) as a model would give them, with chosen predictions and confidences."""
    probabilities = np.full((len(labels), len(class_names)), 0.0, np.float32)
    probabilities[np.arange(len(labels)), predicted] = confidence
    probabilities[np.arange(len(labels)), 1 - predicted] = 1 - confidence
    maps = np.random.default_rng(0).random((len(labels), 2, 2, len(class_names))).astype(np.float32)
    return probabilities, maps


def test_choose_takes_every_wrong_one_most_confident_first_and_a_seeded_sample():
    from catdog.gallery import choose

    labels = np.array([0, 0, 1, 1, 0, 1, 0, 1, 0, 1])
    p_dog = np.array([0.7, 0.2, 0.1, 0.9, 0.95, 0.8, 0.1, 0.6, 0.3, 0.55])  # wrong: 0, 2, 4
    probabilities = np.stack([1 - p_dog, p_dog], axis=1)
    wrong, right = choose(labels, probabilities, n_right=4, seed=0)
    assert wrong.tolist() == [4, 2, 0]
    assert len(right) == 4 and set(right) <= {1, 3, 5, 6, 7, 8, 9} and right.tolist() == sorted(right)
    assert choose(labels, probabilities, 4, seed=0)[1].tolist() == right.tolist()
    assert choose(labels, probabilities, 4, seed=1)[1].tolist() != right.tolist()
    assert choose(labels, probabilities, 100, seed=0)[1].tolist() == [1, 3, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("max_wrong, shown, note", [(48, 30, "(all shown)"), (10, 10, "(the 10 most confident shown)")])
def test_gallery_shows_the_wrong_ones_up_to_the_cap_and_a_sample_of_right_ones(max_wrong, shown, note):
    from catdog.gallery import gallery_html

    n = 60
    labels = np.arange(n) % 2
    predicted = np.where(np.arange(n) < 30, 1 - labels, labels)  # the first 30 are wrong
    confidence = np.linspace(0.6, 0.99, n)
    probabilities, maps = chosen_answers(labels, predicted, confidence)
    pixels = np.stack([np.full((24, 24, 3), i * 4, np.uint8) for i in range(n)])
    asked = []

    def explain(indices):  # the page asks only for the photos it shows
        asked.extend(indices.tolist())
        return pixels[indices], maps[indices]

    page = gallery_html(labels, probabilities, explain, CLASSES, max_wrong=max_wrong, n_right=12)
    assert len(asked) == len(set(asked)) == shown + 12
    parsed = parse(page)
    assert f"Wrong: 30 of {n} test photos {note}" in page and "Right: a sample of 12 of 30" in page
    assert len(parsed.images) == shown + 12 == page.count('<figcaption class="wrong">') + 12
    expected_wrong = [f"{p:.1%}" for p in sorted(confidence[:30], reverse=True)[:shown]]
    assert [re.search(r"\((.*)\)", c).group(1) for c in parsed.captions[:shown]] == expected_wrong
    for caption in parsed.captions[shown:]:
        true, predicted_name = re.fullmatch(r"true: (\w+)predicted: (\w+) \(.*\)", caption).groups()
        assert true == predicted_name
    for src in parsed.images:
        assert src.startswith("data:image/jpeg;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size == (24, 24)


def test_gallery_escapes_every_text():
    from catdog.gallery import gallery_html

    names = ["<b>cat</b>", 'dog & "friends"']
    probabilities, maps = chosen_answers(np.array([0, 1]), np.array([1, 1]), np.array([0.9, 0.8]), names)
    page = gallery_html(np.array([0, 1]), probabilities, _from_arrays(np.zeros((2, 8, 8, 3), np.uint8), maps), names)
    parse(page)
    assert "<b>" not in page and "&lt;b&gt;cat&lt;/b&gt;" in page and "dog &amp; &quot;friends&quot;" in page


def test_gallery_of_a_real_model(exported, photos):
    from catdog.gallery import gallery_html

    labels = np.arange(len(photos)) % 2
    model = predictor(exported["flip"])
    probabilities, maps = model.explain_pixels(photos.astype(np.float32))
    parsed = parse(gallery_html(labels, probabilities, _from_arrays(photos.astype(np.float32), maps), model.class_names))
    assert len(parsed.images) == len(photos)  # every photo is either wrong (all shown) or in the sample
    assert Image.open(io.BytesIO(base64.b64decode(parsed.images[0].split(",", 1)[1]))).size == (SIZE, SIZE)


def test_gallery_of_a_model_without_gradcam_says_so(exported, photos):
    from catdog.gallery import gallery_html

    old = predictor(exported["old"])
    assert not old.has_gradcam
    page = gallery_html(np.zeros(len(photos), int), old.predict_pixels(photos), None, old.class_names)
    assert not parse(page).images
    assert "no Grad-CAM output" in page and "retrain it" in page


def test_overlay_jpeg_is_a_photo_sized_jpeg_far_smaller_than_the_png():
    from catdog.gradcam import overlay_jpeg

    rng = np.random.default_rng(3)
    photo = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    grid = rng.random((8, 8))
    jpeg, png = overlay_jpeg(photo, grid), overlay_png(photo, grid)
    image = Image.open(io.BytesIO(jpeg))
    assert (image.format, image.size) == ("JPEG", (256, 256)) and len(jpeg) < len(png) / 2
