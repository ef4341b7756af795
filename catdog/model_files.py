"""What a saved model folder holds. Kept free of TensorFlow so the server stays light."""

from __future__ import annotations

import json
from pathlib import Path

KERAS_FILE = "model.keras"
ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
EVALUATION_FILE = "evaluation.json"  # written beside a registered version by select-champion


def load_metadata(model_dir: Path) -> dict:
    """metadata.json: class_names, image_size, preprocessing, training parameters, data fingerprint."""
    return json.loads((Path(model_dir) / METADATA_FILE).read_text())
