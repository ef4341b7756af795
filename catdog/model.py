"""The classifier: MobileNetV2 backbone + pooled features + softmax head, and its exports.

The model takes float32 RGB pixels in [0, 255] (catdog.preprocessing's output) and normalises
them itself, so the Keras and ONNX models share one input contract. The exported (serving) model
has two outputs: `probabilities` (n, classes) and `gradcam` (n, h, w, classes), the Grad-CAM map
of every class at the last feature map's resolution (see GradCamHead); a model trained with an
out-of-distribution fit (catdog.ood) has a third, `ood_score` (n,): OodScore on the same pass's
pooled features (flip-averaged when the probabilities are), higher = less like the training photos,
and a fourth, `embedding` (n, EMBEDDING_DIMS): FeatureEmbedding, the same pooled features centred
and projected onto the fit's top principal directions (the feedback app's diverse review order
spreads its queue over them; catdog.ood has the fit).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import keras
import numpy as np
import onnx

from catdog import storage
from catdog.model_files import CENTRE_ONNX_FILE, KERAS_FILE, METADATA_FILE, ONNX_FILE
from catdog.ood import EMBEDDING_DIMS
from catdog.onnx_predictor import EMBEDDING_OUTPUT, GRADCAM_OUTPUT, OOD_OUTPUT, PROBABILITIES_OUTPUT

BACKBONE_NAME = "backbone"
HEAD_NAME = "probabilities"  # the Dense softmax layer of build_model
FEATURE_LAYER = "out_relu"  # the backbone's last feature map, just before its average pooling
POOLED_FEATURES = "pooled_features"  # its global average (what the head sees), flip-averaged when the model is
# catdog.test_time_views: the layers named for its two passes' probabilities, and its whole-photo view
WHOLE_OUTPUT, CENTRE_OUTPUT, WHOLE_VIEW = "whole_probabilities", "centre_probabilities", "whole_view"


def resolve_weights(weights: str) -> str | None:
    """'imagenet' (Keras download), 'none' (random init, for tests), a local .h5 or a gs:// URI."""
    if weights in ("imagenet",):
        return weights
    if weights.lower() == "none":
        return None
    if storage.is_gcs(weights):
        local = Path(tempfile.mkdtemp(prefix="catdog-weights-")) / Path(storage.split_gcs(weights)[1]).name
        local.write_bytes(storage.read_bytes(weights))
        return str(local)
    if not Path(weights).is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    return weights


def build_model(num_classes: int, image_size: int | None, alpha: float, weights: str, dropout: float) -> keras.Model:
    """The classifier; image_size None: it takes any size (fine-tuning at a lower resolution than
    it serves at, catdog.train; at_fixed_size makes the exported one)."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalise")(inputs)  # MobileNetV2's [-1, 1]
    backbone = keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3),
        alpha=alpha,
        include_top=False,
        weights=resolve_weights(weights),
        pooling="avg",
        name=BACKBONE_NAME,
    )
    backbone.trainable = False
    x = backbone(x, training=False)  # BatchNorm stays in inference mode, also when fine-tuning
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=HEAD_NAME)(x)
    return keras.Model(inputs, outputs, name="catdog_mobilenet_v2")


def at_fixed_size(classifier: keras.Model, image_size: int, alpha: float) -> keras.Model:
    """A build_model classifier with its input fixed at image_size, the weights of `classifier`
    (one built for any size) copied in: the exports need a fixed shape."""
    fixed = build_model(int(classifier.output_shape[-1]), image_size, alpha, "none",
                        classifier.get_layer("dropout").rate)
    fixed.set_weights(classifier.get_weights())
    return fixed


@keras.saving.register_keras_serializable(package="catdog")
class HorizontalFlip(keras.layers.Layer):
    """Mirror NHWC images left-right (deterministic, unlike keras.layers.RandomFlip)."""

    def call(self, images):
        # A gather of reversed column indices rather than ops.flip: tf2onnx turns flip (ReverseV2)
        # into a slow ReverseSequence; with Gather the flip-averaged model runs 1.4x faster in ONNX
        # Runtime (2.9 vs 4.1 ms per photo at 256 px, one thread, measured 2026-11-26).
        return keras.ops.take(images, keras.ops.arange(images.shape[2] - 1, -1, -1), axis=2)


@keras.saving.register_keras_serializable(package="catdog")
class StackViews(keras.layers.Layer):
    """Views of one batch of photos (a list of (n, ...) tensors), concatenated along the batch axis."""

    def call(self, views):
        return keras.ops.concatenate(views, axis=0)


@keras.saving.register_keras_serializable(package="catdog")
class UnstackViews(keras.layers.Layer):
    """StackViews undone: (views x n, ...) -> a list of `views` tensors (n, ...)."""

    def __init__(self, views: int, **kwargs):
        super().__init__(**kwargs)
        self.views = views

    def call(self, stacked):
        stacked = keras.ops.reshape(stacked, (self.views, -1, *stacked.shape[1:]))
        return [stacked[i] for i in range(self.views)]

    def get_config(self) -> dict:
        return {**super().get_config(), "views": self.views}


@keras.saving.register_keras_serializable(package="catdog")
class CentreViewRule(keras.layers.Layer):
    """[whole-photo probabilities, centre-view probabilities] (each (n, classes)) -> the whole photo's
    where their top value is at least `below`, else the mean of both (catdog.test_time_views)."""

    def __init__(self, below: float, **kwargs):
        super().__init__(**kwargs)
        self.below = below

    def call(self, inputs):
        whole, centre = inputs
        unsure = keras.ops.max(whole, axis=1, keepdims=True) < self.below
        return keras.ops.where(unsure, (whole + centre) / 2, whole)

    def get_config(self) -> dict:
        return {**super().get_config(), "below": self.below}


def normalise_maps(maps):
    """Each (image, class) map of (n, h, w, classes) divided by its maximum; an all-zero map stays 0."""
    peak = keras.ops.max(maps, axis=(1, 2), keepdims=True)
    return maps / keras.ops.where(peak > 0, peak, keras.ops.ones_like(peak))


@keras.saving.register_keras_serializable(package="catdog")
class NormaliseMaps(keras.layers.Layer):
    """normalise_maps as a layer."""

    def call(self, maps):
        return normalise_maps(maps)


@keras.saving.register_keras_serializable(package="catdog")
class GradCamHead(keras.layers.Layer):
    """The classifier's head on the last feature map A (n, h, w, k): its probabilities (global
    average pooling, then the trained Dense softmax layer, which this layer owns) and the Grad-CAM
    map of every class (n, h, w, classes), ReLU'd and normalised by its maximum.

    With average pooling, d logit_c / d A_ijk = W_kc / (h * w) for every position, so Grad-CAM's
    channel weights are the Dense weights and the map ReLU(sum_k W_kc A_k) is exact (it is the class
    activation map). Dropout, between pooling and Dense in training, is the identity here."""

    def __init__(self, dense: keras.layers.Dense, **kwargs):
        super().__init__(**kwargs)
        self.dense = dense

    def build(self, input_shape):
        if not self.dense.built:  # when loaded from model.keras
            self.dense.build((input_shape[0], input_shape[-1]))

    def call(self, features):
        probabilities = self.dense(keras.ops.mean(features, axis=(1, 2)))
        # A @ W as a 1x1 convolution: in ONNX about half the nodes of a Tensordot (a matmul)
        kernel = keras.ops.reshape(self.dense.kernel, (1, 1, *self.dense.kernel.shape))
        maps = keras.ops.relu(keras.ops.conv(features, kernel))
        return probabilities, normalise_maps(maps)

    def get_config(self) -> dict:
        return {**super().get_config(), "dense": keras.saving.serialize_keras_object(self.dense)}

    @classmethod
    def from_config(cls, config: dict) -> "GradCamHead":
        config = dict(config)
        return cls(keras.saving.deserialize_keras_object(config.pop("dense")), **config)


@keras.saving.register_keras_serializable(package="catdog")
class OodScore(keras.layers.Layer):
    """The out-of-distribution score of pooled features (n, d) -> (n,): the squared distance to the
    nearest class mean outside the top principal directions of the tied within-class covariance,
    min_c |f - means[c]|^2 - |(f - means[c]) @ basis|^2 (catdog.ood). A matmul and a min: the
    ONNX graph grows by the (d, k) basis and the class means only. `info` is what metadata.json
    says about it ("ood": method, threshold, ...)."""

    def __init__(self, components: int, classes: int, info: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.components, self.classes, self.info = int(components), int(classes), dict(info or {})

    def build(self, input_shape):
        self.means = self.add_weight(shape=(self.classes, input_shape[-1]), initializer="zeros",
                                     trainable=False, name="means")
        self.basis = self.add_weight(shape=(input_shape[-1], self.components), initializer="zeros",
                                     trainable=False, name="basis")

    def call(self, features):
        diff = features[:, None, :] - self.means[None]  # (n, classes, d)
        residual = keras.ops.sum(keras.ops.square(diff), axis=-1) - \
            keras.ops.sum(keras.ops.square(keras.ops.matmul(diff, self.basis)), axis=-1)
        return keras.ops.min(keras.ops.maximum(residual, 0.0), axis=1)

    def get_config(self) -> dict:
        return {**super().get_config(), "components": self.components, "classes": self.classes, "info": self.info}

    def embedding(self, dims: int = EMBEDDING_DIMS) -> "FeatureEmbedding":
        """A FeatureEmbedding on this fit's statistics (call after the OodScore is fitted)."""
        means, basis = (np.asarray(w) for w in self.get_weights())
        dims = min(dims, basis.shape[1])
        layer = FeatureEmbedding(dims, name=EMBEDDING_OUTPUT)
        layer.build((None, basis.shape[0]))
        layer.set_weights([means.mean(axis=0), basis[:, :dims]])
        return layer


@keras.saving.register_keras_serializable(package="catdog")
class FeatureEmbedding(keras.layers.Layer):
    """Pooled features (n, d) -> (n, dims): (f - center) @ basis, where center is the mean of the
    class means and basis the top `dims` principal directions of the tied within-class covariance
    (OodScore's fit: no fit of its own). Distances here approximate distances between photos in the
    directions where cat and dog photos vary most; the feedback app's diverse review order
    (feedback.labelling.review_order) picks photos far apart in it. One (d, dims) matmul."""

    def __init__(self, dims: int, **kwargs):
        super().__init__(**kwargs)
        self.dims = int(dims)

    def build(self, input_shape):
        self.center = self.add_weight(shape=(input_shape[-1],), initializer="zeros", trainable=False, name="center")
        self.basis = self.add_weight(shape=(input_shape[-1], self.dims), initializer="zeros", trainable=False,
                                     name="basis")

    def call(self, features):
        return keras.ops.matmul(features - self.center[None], self.basis)

    def get_config(self) -> dict:
        return {**super().get_config(), "dims": self.dims}


def _one_pass(classifier: keras.Model, pooled: bool) -> keras.Model:
    """image -> probabilities, Grad-CAM maps (and with `pooled` the pooled features), one backbone pass."""
    backbone = classifier.get_layer(BACKBONE_NAME)
    features = keras.Model(backbone.input, backbone.get_layer(FEATURE_LAYER).output, name="features")
    inputs = keras.Input(classifier.input_shape[1:], name="image")
    feature_map = features(classifier.get_layer("normalise")(inputs))
    probabilities, maps = GradCamHead(classifier.get_layer(HEAD_NAME), name="head")(feature_map)
    outputs = [keras.layers.Identity(name=PROBABILITIES_OUTPUT)(probabilities),
               keras.layers.Identity(name=GRADCAM_OUTPUT)(maps)]
    if pooled:
        outputs.append(keras.layers.GlobalAveragePooling2D(name=POOLED_FEATURES)(feature_map))
    return keras.Model(inputs, outputs, name=f"{classifier.name}_gradcam")


def _flip_averaged(classifier: keras.Model):
    """(inputs, probabilities, maps, pooled features) of the image and its mirror image, averaged."""
    one = _one_pass(classifier, pooled=True)
    inputs = keras.Input(classifier.input_shape[1:], name="image")
    probabilities, maps, pooled = one(inputs)
    mirror_probabilities, mirror_maps, mirror_pooled = one(HorizontalFlip(name="mirror")(inputs))
    probabilities = keras.layers.Average(name=PROBABILITIES_OUTPUT)([probabilities, mirror_probabilities])
    maps = keras.layers.Average(name="averaged_maps")([maps, HorizontalFlip(name="unmirror")(mirror_maps)])
    pooled = keras.layers.Average(name=POOLED_FEATURES)([pooled, mirror_pooled])
    return inputs, probabilities, NormaliseMaps(name=GRADCAM_OUTPUT)(maps), pooled


def pooled_features_model(classifier: keras.Model, flip: bool) -> keras.Model:
    """image -> the pooled features the serving model's OodScore sees (with_gradcam / with_flip_averaging)."""
    if flip:
        inputs, _, _, pooled = _flip_averaged(classifier)
        return keras.Model(inputs, pooled, name="pooled_features_flip_averaged")
    one = _one_pass(classifier, pooled=True)
    return keras.Model(one.inputs, one.outputs[2], name="pooled_features")


def with_gradcam(classifier: keras.Model, ood: OodScore | None = None) -> keras.Model:
    """The serving model of a build_model classifier, sharing its layers and weights: outputs
    `probabilities` (as the classifier's) and `gradcam` (GradCamHead), and with `ood` (a fitted
    OodScore, catdog.ood.fit_ood) `ood_score` from the same pass. A model that already has the
    gradcam output is returned as it is."""
    if ood is not None:
        _check_ood(classifier, ood)
    if GRADCAM_OUTPUT in classifier.output_names:
        return classifier
    one = _one_pass(classifier, pooled=ood is not None)
    if ood is None:
        return one
    return keras.Model(one.inputs, [*one.outputs[:2], ood(one.outputs[2]), ood.embedding()(one.outputs[2])],
                       name=one.name)


def _check_ood(model: keras.Model, ood: OodScore) -> None:
    if GRADCAM_OUTPUT in model.output_names:
        raise ValueError("an OOD score is added to a classifier (build_model), not to a serving model")
    if ood.name != OOD_OUTPUT:
        raise ValueError(f"the OodScore layer must be named {OOD_OUTPUT!r} (its output's name), not {ood.name!r}")


def with_flip_averaging(model: keras.Model, ood: OodScore | None = None) -> keras.Model:
    """Test-time augmentation inside the model: the mean of the probabilities for the image and its
    mirror image. Inside the graph, so Keras, the ONNX export, evaluation and serving all get it.
    Measured over 12 training runs: +0.3 points of test accuracy on average (docs/BENCHMARKS.md).
    The mirror image's Grad-CAM maps are mirrored back and averaged with the image's, then
    normalised again; with `ood` (a classifier only) its score is of the averaged pooled features.
    Takes a classifier (given the gradcam output first) or a serving model."""
    if ood is not None:
        _check_ood(model, ood)
        inputs, probabilities, maps, pooled = _flip_averaged(model)
        return keras.Model(inputs, [probabilities, maps, ood(pooled), ood.embedding()(pooled)],
                           name=f"{model.name}_gradcam_flip_averaged")
    model = with_gradcam(model)
    inputs = keras.Input(model.input_shape[1:], name="image")
    probabilities, maps = model(inputs)
    mirror_probabilities, mirror_maps = model(HorizontalFlip(name="mirror")(inputs))
    probabilities = keras.layers.Average(name=PROBABILITIES_OUTPUT)([probabilities, mirror_probabilities])
    maps = keras.layers.Average(name="averaged_maps")([maps, HorizontalFlip(name="unmirror")(mirror_maps)])
    outputs = [probabilities, NormaliseMaps(name=GRADCAM_OUTPUT)(maps)]
    return keras.Model(inputs, outputs, name=f"{model.name}_flip_averaged")


def onnx_parts(model: keras.Model) -> dict[str, tuple[keras.Model, list[str]]]:
    """The ONNX files of a serving model, each as (the Keras model to export, its output names): the
    model itself as ONNX_FILE; a catdog.test_time_views model as two, ONNX_FILE (the whole photo: its
    outputs with `probabilities` the whole photo's) and CENTRE_ONNX_FILE (`centre_probabilities`)."""
    if not isinstance(model.get_layer(PROBABILITIES_OUTPUT), CentreViewRule):
        return {ONNX_FILE: (model, list(model.output_names))}
    whole = keras.Model(model.inputs, [model.get_layer(WHOLE_OUTPUT).output, *model.outputs[1:]], name="whole_photo")
    centre = keras.Model(model.inputs, model.get_layer(CENTRE_OUTPUT).output, name="centre_view")
    return {ONNX_FILE: (whole, list(model.output_names)), CENTRE_ONNX_FILE: (centre, [CENTRE_OUTPUT])}


def test_time_views_metadata(model: keras.Model) -> dict:
    """metadata.json's "test_time_views" of a catdog.test_time_views model ({} for one without)."""
    rule = model.get_layer(PROBABILITIES_OUTPUT)
    if not isinstance(rule, CentreViewRule):
        return {}
    size, input_size = int(model.get_layer(WHOLE_VIEW).height), int(model.input_shape[1])
    return {"test_time_views": {
        "input_size": input_size, "view_size": size, "centre_share": round(size / input_size, 4),
        "mirrored": "whole_mirror" in [layer.name for layer in model.layers], "centre_view_below": rule.below,
        "centre_onnx": CENTRE_ONNX_FILE,
        "rule": f"{ONNX_FILE}'s probabilities (the whole photo); where their top value is below {rule.below}, their "
                f"mean with {CENTRE_ONNX_FILE}'s {CENTRE_OUTPUT} (the centre view)"}}


def load_keras_model(model_dir: Path) -> keras.Model:
    """model.keras from a model folder (this module registers its custom layers)."""
    return keras.models.load_model(Path(model_dir) / KERAS_FILE)


def unfreeze_top(model: keras.Model, n_layers: int) -> int:
    """Make the backbone's top n_layers trainable (BatchNorm layers stay frozen); returns the count."""
    backbone = model.get_layer(BACKBONE_NAME)
    backbone.trainable = True
    cutoff = max(0, len(backbone.layers) - n_layers)
    trainable = 0
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= cutoff and not isinstance(layer, keras.layers.BatchNormalization)
        trainable += layer.trainable
    return trainable


def export_onnx(model: keras.Model, path: Path, names: list[str] | None = None) -> Path:
    """ONNX export of the same model (Keras' exporter, tf2onnx underneath), its outputs named `names`
    (default: the Keras model's; tf2onnx would call them Identity:0, Identity_1:0, ...)."""
    size = model.input_shape[1]
    model(np.zeros((1, size, size, 3), np.float32))  # the exporter needs a built call graph
    model.export(str(path), format="onnx", verbose=False)
    _rename_onnx_outputs(Path(path), names or list(model.output_names))
    return Path(path)


def _rename_onnx_outputs(path: Path, names: list[str]) -> None:
    """Rename the ONNX graph's outputs, in order, to names (and every node that reads or writes them)."""
    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    if len(graph.output) != len(names):
        raise ValueError(f"{path} has {len(graph.output)} outputs for the names {names}")
    renames = {output.name: name for output, name in zip(graph.output, names)}
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for output in graph.output:
        output.name = renames[output.name]
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(path))


def output_metadata(model: keras.Model) -> dict:
    """What metadata.json says about a serving model's outputs."""
    grid = model.outputs[model.output_names.index(GRADCAM_OUTPUT)].shape[1:3]
    result = {"input_size": int(model.input_shape[1]),  # what preprocessing resizes photos to
              "outputs": list(model.output_names),
              "explanation": {"method": "grad-cam", "output": GRADCAM_OUTPUT, "feature_layer": FEATURE_LAYER,
                              "grid": [int(n) for n in grid]}}
    if OOD_OUTPUT in model.output_names:
        result["ood"] = model.get_layer(OOD_OUTPUT).info
    result |= test_time_views_metadata(model)
    if EMBEDDING_OUTPUT in model.output_names:
        result["embedding"] = {"output": EMBEDDING_OUTPUT, "dims": int(model.get_layer(EMBEDDING_OUTPUT).dims),
                               "of": "pooled features minus the class means' mean, on the top principal "
                                     "directions of the OOD fit's within-class covariance"}
    return result


def save_model_dir(model: keras.Model, output_dir: Path, metadata: dict) -> Path:
    """Write model.keras, the ONNX files (onnx_parts: model.onnx, and centre.onnx for a model with a
    centre view) and metadata.json (plus output_metadata) into output_dir.
    A classifier is saved as its serving model (with_gradcam)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = with_gradcam(model)
    model.save(output_dir / KERAS_FILE)
    for name, (part, names) in onnx_parts(model).items():
        export_onnx(part, output_dir / name, names)
    (output_dir / METADATA_FILE).write_text(json.dumps(metadata | output_metadata(model), indent=1))
    return output_dir
