"""Explanations for :explain: the model's own Grad-CAM maps, or occlusion saliency for models
exported before Grad-CAM (see serving/kserve_model.py's docstring for the wire format).

Grad-CAM comes from the same ONNX run as the probabilities and the neither score
(OnnxPredictor.run_pixels); occlusion (models exported before Grad-CAM, which have no neither
score either) costs OCCLUSION_GRID**2 + 1 inferences per image, hence MAX_OCCLUSION_INSTANCES.
Both return the run's catdog.onnx_predictor.Outputs (without maps) and one explanation per image.
"""

from __future__ import annotations

import base64

import numpy as np

from catdog.gradcam import overlay_png
from catdog.onnx_predictor import OnnxPredictor, Outputs

OCCLUSION_GRID = 8  # occlusion saliency: the image is split into OCCLUSION_GRID x OCCLUSION_GRID patches
MAX_OCCLUSION_INSTANCES = 4  # each image explained by occlusion costs OCCLUSION_GRID**2 + 1 inferences
OCCLUSION_NOTE = ("this model version was exported without Grad-CAM, so this is occlusion saliency; "
                  "a model trained since (retraining) gives Grad-CAM")


def predicted_maps(probabilities: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """(n, h, w, classes) maps -> (n, h, w): each image's map of its predicted class."""
    targets = probabilities.argmax(axis=1)
    return np.take_along_axis(maps, targets[:, None, None, None], axis=3)[..., 0]


def explanation(method: str, label: str, values: np.ndarray, image: np.ndarray, overlay: bool) -> dict:
    """One image's explanation (see the module docstring); `values` is its (h, w) map."""
    answer = {"method": method, "class": label, "grid": list(values.shape),
              "values": np.round(values.astype(np.float64), 4).tolist()}
    heat = values
    if method == "occlusion":
        answer |= {"measure": "log-odds drop", "note": OCCLUSION_NOTE}
        heat = np.clip(values, 0, None) / max(float(values.max()), 1e-9)
    if overlay:
        answer["overlay_png"] = base64.b64encode(overlay_png(image, heat)).decode()
    return answer


def log_odds(p):
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def gradcam_explanations(predictor: OnnxPredictor, pixels: np.ndarray, overlay: bool,
                         embedding: bool = False) -> tuple[Outputs, list[dict]]:
    """Outputs (with the embedding when asked) and each image's Grad-CAM explanation (its predicted
    class), from one run."""
    outputs = predictor.run_pixels(pixels, gradcam=True, embedding=embedding)
    probabilities, maps = outputs.probabilities, outputs.gradcam
    outputs.gradcam = None
    targets = probabilities.argmax(axis=1)
    return outputs, [
        explanation("grad-cam", predictor.class_names[target], values, image, overlay)
        for image, values, target in zip(pixels, predicted_maps(probabilities, maps), targets)
    ]


def occlusion_explanations(predictor: OnnxPredictor, pixels: np.ndarray, overlay: bool,
                           embedding: bool = False) -> tuple[Outputs, list[dict]]:
    """Occlusion saliency: how much the predicted class's log-odds drop when each patch is greyed
    out (positive = the patch supports the prediction; log-odds stay informative when p ~ 1)."""
    outputs = predictor.run_pixels(pixels, embedding=embedding)
    probabilities = outputs.probabilities
    size, grid = predictor.image_size, OCCLUSION_GRID
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    explanations = []
    for image, row in zip(pixels, probabilities):
        target = int(row.argmax())
        occluded = np.repeat(image[None], grid * grid, axis=0)
        for k in range(grid * grid):
            i, j = divmod(k, grid)
            occluded[k, edges[i]:edges[i + 1], edges[j]:edges[j + 1]] = 127
        occluded_p = predictor.predict_pixels(occluded)[:, target]
        drops = (log_odds(row[target]) - log_odds(occluded_p)).reshape(grid, grid)
        explanations.append(explanation("occlusion", predictor.class_names[target], drops, image, overlay))
    return outputs, explanations
