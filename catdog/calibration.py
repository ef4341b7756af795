"""Calibration: how far the predicted class's probability is from how often it is right.

calibration(labels, probabilities) bins the photos by the predicted class's probability (10 equal
-width bins over [0, 1]; with two classes only the upper five can hold photos) and returns the
expected calibration error (ECE: the photo-weighted mean of |accuracy - mean confidence| over the
bins, Guo et al. 2017), the log loss, and the bins; reliability_html draws them as the evaluate
step's reliability diagram (one self-contained HTML page, the plot embedded as a PNG).
"""

from __future__ import annotations

from html import escape

import numpy as np
from sklearn.metrics import log_loss

from catdog.figures import png_base64

BINS = 10
TITLE = "Reliability diagram"


def calibration(labels: np.ndarray, probabilities: np.ndarray, bins: int = BINS) -> dict:
    """{"ece", "log_loss", "bins": [{"low", "high", "n", "confidence", "accuracy"}]} (confidence and
    accuracy None in an empty bin). A probability of exactly 1 falls in the last bin."""
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)  # float32 softmax: off by ~1e-7
    confidence = probabilities.max(axis=1)
    right = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        row = {"low": float(edges[b]), "high": float(edges[b + 1]), "n": n, "confidence": None, "accuracy": None}
        if n:
            row["confidence"], row["accuracy"] = float(confidence[members].mean()), float(right[members].mean())
            ece += n / len(labels) * abs(row["accuracy"] - row["confidence"])
        table.append(row)
    loss = float(log_loss(labels, probabilities, labels=range(probabilities.shape[1])))
    return {"ece": float(ece), "log_loss": loss, "bins": table}


def reliability_html(result: dict, title: str = TITLE) -> str:
    """The reliability diagram of calibration()'s result: accuracy against confidence per bin (the
    diagonal is perfect calibration), the photo count per bin, and the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    filled = [b for b in result["bins"] if b["n"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    width = result["bins"][0]["high"] - result["bins"][0]["low"]
    top.bar([b["low"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
            edgecolor="black", alpha=0.7, label="accuracy in the bin")
    top.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color="black",
             label="(mean confidence, accuracy)")
    top.set(ylabel="accuracy", ylim=(0, 1), title=f"ECE {result['ece']:.4f}, log loss {result['log_loss']:.4f}")
    top.legend(loc="upper left")
    bottom.bar([b["low"] for b in result["bins"]], [b["n"] for b in result["bins"]], width=width, align="edge",
               edgecolor="black")
    bottom.set(xlabel="predicted class's probability", ylabel="photos", xlim=(0, 1))
    image = png_base64(fig)
    rows = "".join(
        f"<tr><td>{b['low']:.1f}-{b['high']:.1f}</td><td>{b['n']}</td>"
        f"<td>{'' if b['confidence'] is None else format(b['confidence'], '.4f')}</td>"
        f"<td>{'' if b['accuracy'] is None else format(b['accuracy'], '.4f')}</td></tr>"
        for b in result["bins"])
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"/><title>{escape(title)}</title></head>'
            f"<body><h1>{escape(title)}</h1><p>Test photos binned by the predicted class's probability: "
            "a calibrated model is right as often as it is confident (the bars reach the diagonal). "
            f"Expected calibration error (ECE, {len(result['bins'])} bins): {result['ece']:.4f}; "
            f"log loss: {result['log_loss']:.4f}.</p>"
            f'<img alt="reliability diagram" src="data:image/png;base64,{image}"/>'
            "<table border=1><tr><th>bin</th><th>photos</th><th>mean confidence</th><th>accuracy</th></tr>"
            f"{rows}</table></body></html>")
