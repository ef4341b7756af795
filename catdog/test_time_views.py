"""Test-time views: the serving model also looks at the centre of an unsure photo.

with_test_time_views builds it from a trained classifier (catdog.model.build_model); catdog.model's
save_model_dir exports it as two ONNX files (onnx_parts) and catdog.onnx_predictor applies the
rule that combines them. Chosen and measured in docs/BENCHMARKS.md, "Test-time views".
"""

from __future__ import annotations

import keras

from catdog.model import (CENTRE_OUTPUT, POOLED_FEATURES, WHOLE_OUTPUT, WHOLE_VIEW, CentreViewRule, HorizontalFlip,
                          NormaliseMaps, OodScore, StackViews, UnstackViews, _check_ood, _one_pass, with_flip_averaging,
                          with_gradcam)
from catdog.onnx_predictor import GRADCAM_OUTPUT, PROBABILITIES_OUTPUT

# A photo whose whole-photo top probability is below this also gets the centre view. Chosen on the
# validation photos of three seeds' models: accuracy was the same as with the centre view for every
# photo at any value from 0.8 to 0.995, and log loss lowest near 0.98, where about 15 % of the photos
# take the second pass.
CENTRE_VIEW_BELOW = 0.98


def test_time_input_size(view_size: int, crop: float) -> int:
    """The input size of a serving model that also sees the centre `crop` share of each side at
    view_size (with_test_time_views): about view_size / crop, with the same margin on both sides, so
    that the centre crop stays symmetric (and the mirror image of a photo gets the same answer)."""
    if not 0 < crop <= 1:
        raise ValueError(f"test_time_crop must be in (0, 1], not {crop}")
    return view_size + 2 * int(round(view_size * (1 / crop - 1) / 2))


def with_test_time_views(classifier: keras.Model, flip: bool, crop: float, ood: OodScore | None = None) -> keras.Model:
    """The serving model of a build_model classifier, with a second, centre view for unsure photos.
    Its input is test_time_input_size(size, crop) px, `size` the classifier's. Two passes of the
    classifier, each over its views stacked along the batch axis:
    - the whole photo (the input downscaled to `size`, bilinear) and with `flip` its mirror image:
      `whole_probabilities`, and `gradcam`, and with `ood` `ood_score` and `embedding`, as
      with_flip_averaging / with_gradcam give them (the maps cover the whole photo; the OOD
      statistics, fitted on whole photos, see what they were fitted on);
    - its centre, `crop` of each side cut from the input (so seen with 1 / crop more detail), with
      `flip` also mirrored: `centre_probabilities`.
    `probabilities` (CentreViewRule): the whole photo's where their top value is at least
    CENTRE_VIEW_BELOW, else the mean of both. This Keras model computes both passes for every photo;
    save_model_dir exports them as two ONNX files, so that catdog.onnx_predictor runs the centre one
    for the unsure photos alone (ONNX Runtime runs every node of a graph, whatever output is asked).
    crop == 1 is with_flip_averaging / with_gradcam."""
    size = int(classifier.input_shape[1])
    input_size = test_time_input_size(size, crop)
    if input_size == size:
        return (with_flip_averaging if flip else with_gradcam)(classifier, ood)
    if ood is not None:
        _check_ood(classifier, ood)
    one = _one_pass(classifier, pooled=True)
    count = 2 if flip else 1

    def views(view, name: str):  # the view, and with flip its mirror image, stacked along the batch axis
        return StackViews(name=f"{name}_views")([view, HorizontalFlip(name=f"{name}_mirror")(view)] if flip else [view])

    def mean(tensors: list, name: str):
        return keras.layers.Average(name=name)(tensors) if flip else keras.layers.Identity(name=name)(tensors[0])

    inputs = keras.Input((input_size, input_size, 3), name="image")
    whole = keras.layers.Resizing(size, size, interpolation="bilinear", name=WHOLE_VIEW)(inputs)
    probabilities, maps, pooled = (UnstackViews(count)(tensor) for tensor in one(views(whole, "whole")))
    centre = keras.layers.CenterCrop(size, size, name="centre_view")(inputs)
    centre_probabilities = mean(UnstackViews(count)(one(views(centre, "centre"))[0]), CENTRE_OUTPUT)
    probabilities = mean(probabilities, WHOLE_OUTPUT)
    if flip:
        maps = [keras.layers.Average(name="averaged_maps")([maps[0], HorizontalFlip(name="unmirror")(maps[1])])]
    pooled = mean(pooled, POOLED_FEATURES)
    probabilities = CentreViewRule(CENTRE_VIEW_BELOW, name=PROBABILITIES_OUTPUT)([probabilities, centre_probabilities])
    outputs = [probabilities, NormaliseMaps(name=GRADCAM_OUTPUT)(maps[0])]
    if ood is not None:
        outputs += [ood(pooled), ood.embedding()(pooled)]
    return keras.Model(inputs, outputs, name=f"{classifier.name}_test_time_views")
