"""The evaluate step's "Where the model looks" page: Grad-CAM overlays of test photos.

Every wrongly classified photo (up to a cap, most confident first) and a seeded sample of right
ones, each drawn with the map of the class the model predicted. One self-contained HTML page: the
images are embedded as JPEG data URIs (about 20 KB each at 256 px), every text is escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from html import escape

import numpy as np

from catdog.gradcam import overlay_jpeg

TITLE = "Where the model looks"
MAX_WRONG = 48
N_RIGHT = 12
_STYLE = ("body{font-family:sans-serif;margin:1.5em}.cards{display:flex;flex-wrap:wrap;gap:12px}"
          "figure{margin:0;width:200px}img{width:200px;height:200px}"
          "figcaption{font-size:13px}.wrong{color:#b00020}")


def choose(labels: np.ndarray, probabilities: np.ndarray, n_right: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of every wrongly classified photo (most confident mistake first) and of a seeded
    sample of n_right rightly classified ones (in split order)."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong].max(axis=1), kind="stable")]
    right = np.flatnonzero(predicted == labels)
    sample = np.random.default_rng(seed).choice(right, min(n_right, len(right)), replace=False)
    return wrong, np.sort(sample)


def _card(pixels: np.ndarray, maps: np.ndarray, probabilities: np.ndarray, label: int, class_names: list[str]) -> str:
    """One photo with the map of its predicted class; true and predicted label, its probability."""
    predicted = int(probabilities.argmax())
    jpeg = base64.b64encode(overlay_jpeg(pixels.astype(np.uint8), maps[..., predicted])).decode()
    true_name, predicted_name = escape(class_names[label]), escape(class_names[predicted])
    css = "" if predicted == label else ' class="wrong"'
    return (f'<figure><img alt="true {true_name}, predicted {predicted_name}" src="data:image/jpeg;base64,{jpeg}"/>'
            f"<figcaption{css}>true: {true_name}<br/>predicted: {predicted_name} "
            f"({probabilities[predicted]:.1%})</figcaption></figure>")


def _page(body: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"/><title>{TITLE}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{TITLE}</h1>{body}</body></html>")


# indices -> (their pixels, their Grad-CAM maps): the page needs only the photos it shows
Explainer = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def gallery_html(labels: np.ndarray, probabilities: np.ndarray, explain: Explainer | None, class_names: list[str],
                 max_wrong: int = MAX_WRONG, n_right: int = N_RIGHT, seed: int = 0) -> str:
    """The page for the test split's labels and the model's probabilities; `explain` gives the
    pixels and Grad-CAM maps (OnnxPredictor.explain_pixels) of the photos chosen to be shown.
    explain None (a model exported before Grad-CAM): a page that says so."""
    if explain is None:
        return _page("<p>This model has no Grad-CAM output: it was exported before Grad-CAM was part of "
                     "the model; retrain it to see where it looks.</p>")
    labels = np.asarray(labels)
    wrong, right = choose(labels, probabilities, n_right, seed)
    shown = wrong[:max_wrong]
    names = class_names

    def cards(indices: np.ndarray) -> str:
        if not len(indices):
            return ""
        pixels, maps = explain(indices)
        return "".join(_card(pixels[k], maps[k], probabilities[i], int(labels[i]), names) for k, i in enumerate(indices))

    capped = f"the {len(shown)} most confident shown" if len(wrong) > len(shown) else "all shown"
    return _page(
        "<p>Each test photo with the Grad-CAM map of the class the model predicted, computed inside "
        "the model: red where the evidence for that class is, blue where there is none.</p>"
        f"<h2>Wrong: {len(wrong)} of {len(labels)} test photos ({capped})</h2>"
        f'<div class="cards">{cards(shown)}</div>'
        f"<h2>Right: a sample of {len(right)} of {len(labels) - len(wrong)}</h2>"
        f'<div class="cards">{cards(right)}</div>'
    )
