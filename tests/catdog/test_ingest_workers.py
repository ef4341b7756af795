"""Ingest validates and hashes in worker processes; the manifest is byte-identical to one core's."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from unittest import mock

import pytest

from catdog import ingest
from tests.helpers import image_bytes, make_class_folders, make_image, png_header_only


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """Class folders with everything whose handling depends on the order of the files: duplicates
    (the first copy is kept), a label conflict, and files that fail validation."""
    root = make_class_folders(tmp_path / "data", {"cat": 12, "dog": 12})
    duplicate = (root / "cat" / "cat_003.jpg").read_bytes()
    (root / "cat" / "a_copy.jpg").write_bytes(duplicate)
    (root / "cat" / "z_copy.jpg").write_bytes(duplicate)
    (root / "dog" / "conflict.jpg").write_bytes((root / "cat" / "cat_007.jpg").read_bytes())
    (root / "dog" / "junk.jpg").write_bytes(b"not an image")
    (root / "dog" / "bomb.png").write_bytes(png_header_only(20_000, 20_000))
    (root / "cat" / "tiny.png").write_bytes(image_bytes("PNG", size=(8, 8)))
    make_image(root / "cat" / "deep" / "nested.webp", "WEBP", seed=77)
    return root


def test_two_workers_write_the_same_manifest_as_one(messy_folder, tmp_path):
    one = ingest.ingest_dataset(str(messy_folder), tmp_path / "one", cache_dir=tmp_path / "c", workers=1)
    with mock.patch.object(ingest, "ProcessPoolExecutor", wraps=ProcessPoolExecutor) as pool:
        two = ingest.ingest_dataset(str(messy_folder), tmp_path / "two", cache_dir=tmp_path / "c", workers=2)
    pool.assert_called_once_with(max_workers=2)
    assert (tmp_path / "two" / "manifest.json").read_bytes() == (tmp_path / "one" / "manifest.json").read_bytes()
    assert two == one
    assert len(one.skipped) == 7  # 2 duplicates of cat_003, the conflict's 2 copies, junk, bomb, tiny
    assert len(one.images) == 24  # 12 + 12 + nested.webp - cat_007 (a conflict)
    assert sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two" / "images").rglob("*")) == sorted(
        p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "images").rglob("*"))


def test_check_files_keeps_the_order_of_the_paths(messy_folder):
    paths = sorted(p for p in messy_folder.rglob("*") if p.is_file())
    serial = ingest.check_files(paths, 32, 10**7, workers=1)
    assert ingest.check_files(paths, 32, 10**7, workers=2) == serial
    assert ingest.check_files(paths[::-1], 32, 10**7, workers=2) == serial[::-1]
    assert sum(isinstance(outcome, str) for outcome in serial) == 3  # junk, bomb, tiny: their reasons


def test_one_worker_per_cpu_by_default(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    with mock.patch.object(ingest, "ProcessPoolExecutor", wraps=ProcessPoolExecutor) as pool:
        ingest.ingest_dataset(str(image_folder), tmp_path / "out", cache_dir=tmp_path / "c")
    pool.assert_called_once_with(max_workers=3)


def test_one_worker_uses_no_pool(image_folder, tmp_path):
    with mock.patch.object(ingest, "ProcessPoolExecutor") as pool:
        result = ingest.ingest_dataset(str(image_folder), tmp_path / "out", cache_dir=tmp_path / "c", workers=1)
    pool.assert_not_called()
    assert len(result.images) == 20
