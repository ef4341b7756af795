"""Grad-CAM maps drawn over photos (NumPy and Pillow only: the server imports this).

The maps come from the model itself: its `gradcam` output (catdog.model.GradCamHead,
catdog.onnx_predictor.OnnxPredictor.explain_pixels), one coarse grid per class in [0, 1].
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# A jet-like ramp: dark blue (0, cold) -> blue -> cyan -> yellow -> red -> dark red (1, hot)
_RAMP_AT = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
_RAMP_RGB = np.array([[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]], float)


def colourise(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB of the ramp, shape + (3,)."""
    values = np.clip(values, 0, 1)
    return np.stack([np.interp(values, _RAMP_AT, _RAMP_RGB[:, c]) for c in range(3)], axis=-1).round().astype(np.uint8)


def upsample(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    """An (h, w) grid resized bilinearly (Pillow) to (height, width), float32."""
    image = Image.fromarray(np.asarray(grid, np.float32))  # mode F
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), np.float32)


def overlay(pixels: np.ndarray, grid: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The photo (H, W, 3) uint8 with the coloured map (h, w) in [0, 1] laid over it: uint8 (H, W, 3)."""
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or np.asarray(grid).ndim != 2:
        raise ValueError(f"need (H, W, 3) pixels and an (h, w) grid, got {pixels.shape} and {np.shape(grid)}")
    height, width = pixels.shape[:2]
    heat = colourise(upsample(grid, width, height)).astype(np.float32)
    return ((1 - alpha) * pixels.astype(np.float32) + alpha * heat).round().astype(np.uint8)


def overlay_png(pixels: np.ndarray, grid: np.ndarray, alpha: float = 0.45) -> bytes:
    """overlay() encoded as PNG bytes (what the server's :explain returns)."""
    return _encode(overlay(pixels, grid, alpha), "PNG")


def overlay_jpeg(pixels: np.ndarray, grid: np.ndarray, alpha: float = 0.45, quality: int = 85) -> bytes:
    """overlay() encoded as JPEG bytes: a tenth of the PNG's size for a photo (the evaluate gallery)."""
    return _encode(overlay(pixels, grid, alpha), "JPEG", quality=quality)


def _encode(image: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()
