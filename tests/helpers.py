"""Plain helpers for tests: synthetic images and class folders (conftest.py wraps them as fixtures).

Import them as ``from tests.helpers import make_image`` (conftest.py puts the repository root on
sys.path, so this works under ``pytest`` and ``python -m pytest`` alike).
"""

from __future__ import annotations

import io
import socket
from contextlib import contextmanager
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

IMAGES_PER_CLASS = 10
CLASS_COLORS = {"cat": (200, 60, 40), "dog": (40, 90, 200)}
LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent  # tests/ sits at the repository root
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif"}


def _pixels(size: tuple[int, int], bands: int, seed: int, color) -> np.ndarray:
    """Seeded noise around `color` (or around mid-grey), shape (height, width, bands)."""
    width, height = size
    rng = np.random.default_rng(seed)
    base = np.array(color if color is not None else (128,) * 3, dtype=np.int16)
    base = np.resize(base, bands)
    noise = rng.integers(-60, 61, size=(height, width, bands), dtype=np.int16)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_pil_image(size=(64, 48), mode="RGB", seed=0, color=None) -> Image.Image:
    """A distinct synthetic image in the given Pillow mode (RGB, RGBA, L, LA, CMYK, P)."""
    if mode == "L":
        return Image.fromarray(_pixels(size, 1, seed, color)[..., 0], "L")
    if mode == "RGBA":
        rgba = _pixels(size, 4, seed, color)
        rgba[..., 3] = np.linspace(0, 255, size[0], dtype=np.uint8)[None, :]  # a real alpha ramp
        return Image.fromarray(rgba, "RGBA")
    rgb = Image.fromarray(_pixels(size, 3, seed, color), "RGB")
    if mode == "RGB":
        return rgb
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    return rgb.convert(mode)


def image_bytes(fmt: str = "JPEG", size=(64, 48), mode: str = "RGB", seed: int = 0, color=None) -> bytes:
    """Encoded bytes of a synthetic image (fmt is a Pillow format name: JPEG, PNG, WEBP, BMP, GIF)."""
    buffer = io.BytesIO()
    kwargs = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
    make_pil_image(size, mode, seed, color).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def make_image(path, fmt: str = "JPEG", size=(64, 48), mode: str = "RGB", seed: int = 0, color=None) -> Path:
    """Write a synthetic image to `path` (parents created); the extension is not checked against fmt."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(fmt, size, mode, seed, color))
    return path


def make_class_folders(root, counts: dict[str, int] | None = None, fmt: str = "JPEG", size=(64, 48), seed: int = 0) -> Path:
    """root/<class>/<class>_NNN.jpg for each class; distinct content across classes and seeds."""
    root = Path(root)
    counts = counts or {name: IMAGES_PER_CLASS for name in CLASS_COLORS}
    ext = EXTENSIONS[fmt]
    for c, (name, n) in enumerate(sorted(counts.items())):
        color = CLASS_COLORS.get(name, (60 * c % 256, 120, 180))
        for i in range(n):
            make_image(root / name / f"{name}_{i:03d}{ext}", fmt, size, seed=seed * 100_000 + c * 1000 + i, color=color)
    return root


@contextmanager
def uvicorn_in_thread(app, **config):
    """Serve an ASGI app with uvicorn on 127.0.0.1:<free port> in a daemon thread; yields its base
    URL and stops the server on exit. `config`: more uvicorn.Config options (e.g. lifespan="off")."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=0, log_level="warning", **config))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://{LOOPBACK}:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims width x height RGB pixels but holds almost no data.

    Opening it reads only the header, so it exercises pixel-count ceilings without any memory use.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def make_source_with_splits(root, wrapper: str = "cats_and_dogs_filtered", train: int = 6, validation: int = 3) -> Path:
    """root/<wrapper>/{train,validation}/{cats,dogs}/..., like cats_and_dogs_filtered.zip's inside."""
    base = Path(root) / wrapper
    make_class_folders(base / "train", {"cats": train, "dogs": train}, seed=1)
    make_class_folders(base / "validation", {"cats": validation, "dogs": validation}, seed=2)
    return base


def zip_folder(folder, archive, arcroot: str | None = None) -> Path:
    """Zip `folder` (its files, not directory entries) under arcroot (default: the folder's name)."""
    folder, archive = Path(folder), Path(archive)
    arcroot = folder.name if arcroot is None else arcroot
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, "/".join(filter(None, [arcroot, path.relative_to(folder).as_posix()])))
    return archive


def tar_folder(folder, archive, arcroot: str | None = None) -> Path:
    """tar.gz `folder` under arcroot (default: the folder's name)."""
    folder, archive = Path(folder), Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=folder.name if arcroot is None else arcroot)
    return archive
