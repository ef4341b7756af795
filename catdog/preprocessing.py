"""Inference preprocessing, defined once: bytes -> RGB pixels resized to the model's input.

Training (via the preprocess step), evaluation, the ONNX export check and the server all call
these functions. They use Pillow and NumPy only, so the server does not import TensorFlow.
Normalisation to MobileNetV2's [-1, 1] range is a layer inside the model (see catdog.model), so
every consumer feeds float32 pixels in [0, 255].
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF"})
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif"}  # stored file names
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp", "GIF": "image/gif"}
DEFAULT_MAX_PIXELS = 40_000_000  # decompression-bomb ceiling (a 40 MP photo is already huge)
DEFAULT_MIN_SIDE = 32  # smaller photos carry too little to learn from (the pipeline's min_image_side)
RESIZE_FILTER = Image.Resampling.BILINEAR
PREPROCESSING_SPEC = {
    "decode": "Pillow; first frame; EXIF orientation applied; alpha composited on white; RGB",
    "resize": "square, bilinear (Pillow), JPEG DCT draft scaling to >= target size",
    "input_dtype": "float32",
    "input_range": [0, 255],
    "normalisation": "inside the model: x / 127.5 - 1",
}


class InvalidImageError(ValueError):
    """The bytes are not an image we accept; str(error) is the reason shown to users."""


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise InvalidImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"decompression bomb: {exc}") from None
    except Exception as exc:  # Pillow raises several types for unknown data
        raise InvalidImageError(f"not a decodable image ({type(exc).__name__})") from None
    if image.format not in ALLOWED_FORMATS:
        raise InvalidImageError(f"unsupported image format {image.format}")
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidImageError(
            f"decompression bomb: {width}x{height} = {width * height:,} pixels "
            f"exceeds the ceiling of {max_pixels:,}"
        )
    return image


def read_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """Format and size from the header only; nothing is decoded."""
    image = _open(data, max_pixels)
    return ImageHeader(image.format, *image.size)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None) -> Image.Image:
    """Decode fully into an RGB image (first frame of animations), or raise InvalidImageError.

    draft_size lets JPEG decode at a reduced DCT scale that is still >= draft_size on each side.
    """
    image = _open(data, max_pixels)
    try:
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        return image.convert("RGB")
    except InvalidImageError:
        raise
    except Exception as exc:
        raise InvalidImageError(f"corrupt or truncated image data ({type(exc).__name__}: {exc})") from None


def validate_image(data: bytes, min_side: int = DEFAULT_MIN_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """The acceptance rule for a photo anyone gives us (ingest, the feedback app): an allowed format
    by content, not a bomb, shorter side >= min_side, and fully decodable. Raises InvalidImageError.

    Cost is bounded by pixels, not bytes: the size comes from the header (Pillow opens lazily) and
    a photo over max_pixels is refused before anything is decoded; the check then decodes the
    first frame once, in its own mode (about width x height x bands bytes), without the copies
    decode_image makes for the model (orientation, alpha, RGB)."""
    image = _open(data, max_pixels)
    width, height = image.size
    if min(width, height) < min_side:
        raise InvalidImageError(f"too small: {width}x{height}, minimum side is {min_side}px")
    try:
        image.seek(0)
        image.load()  # catches truncated and corrupt data that headers hide
    except Exception as exc:
        raise InvalidImageError(f"corrupt or truncated image data ({type(exc).__name__}: {exc})") from None
    finally:
        image.close()
    return ImageHeader(image.format, width, height)


def resize_pixels(image: Image.Image, size: int) -> np.ndarray:
    """Square resize to (size, size, 3) uint8."""
    return np.asarray(image.resize((size, size), RESIZE_FILTER), dtype=np.uint8)


def image_to_pixels(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> (size, size, 3) uint8 pixels: the one preprocessing path."""
    return resize_pixels(decode_image(data, max_pixels, draft_size=size), size)


def batch_to_model_input(pixels: list[np.ndarray]) -> np.ndarray:
    """Stack uint8 pixel arrays into the model's float32 input batch."""
    return np.stack(pixels).astype(np.float32)
