"""What a saved model folder holds. Kept free of TensorFlow so the server stays light."""

from __future__ import annotations

import json
from pathlib import Path

KERAS_FILE = "model.keras"
ONNX_FILE = "model.onnx"
CENTRE_ONNX_FILE = "centre.onnx"  # a model with a centre view (catdog.test_time_views) has it too
METADATA_FILE = "metadata.json"
EVALUATION_FILE = "evaluation.json"  # written beside a registered version by select-champion


def load_metadata(model_dir: Path) -> dict:
    """metadata.json: class_names, image_size, preprocessing, training parameters, data fingerprint."""
    return json.loads((Path(model_dir) / METADATA_FILE).read_text())


def input_size(metadata: dict) -> int:
    """The side in pixels that a model's input photos are resized to: "input_size" when its test-time
    views need more than the image_size it was trained at (catdog.test_time_views), else
    "image_size" (models saved before input_size existed have only that)."""
    return int(metadata.get("input_size") or metadata["image_size"])


def centre_onnx_file(metadata: dict) -> str | None:
    """The centre view's ONNX file named by metadata.json's "test_time_views" (None for a model
    without one); ValueError for a name that is not a plain .onnx file name in the model folder."""
    views = metadata.get("test_time_views")
    if not views:
        return None
    name = views.get("centre_onnx")
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".onnx"):
        raise ValueError(f"metadata.json's test_time_views.centre_onnx must name an .onnx file in the model folder, "
                         f"not {name!r}")
    return name


def serving_files(metadata: dict) -> list[str]:
    """The files a server reads from a model folder with this metadata: model.onnx, metadata.json,
    and the centre view's ONNX file when the model has one (centre_onnx_file)."""
    centre = centre_onnx_file(metadata)
    return [ONNX_FILE, METADATA_FILE] + ([centre] if centre else [])
