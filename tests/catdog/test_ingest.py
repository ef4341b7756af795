"""Ingest: validation by content, duplicates and conflicts, layouts, report, archives and URLs."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from catdog import ingest
from catdog.ingest import IngestError, build_report, check_usable, find_class_folders, ingest_dataset, report_markdown
from catdog.preprocessing import InvalidImageError, decode_image, image_to_pixels, read_header
from tests.helpers import (
    IMAGES_PER_CLASS,
    image_bytes,
    make_class_folders,
    make_image,
    make_source_with_splits,
    png_header_only,
    tar_folder,
    zip_folder,
)


def run_ingest(source, tmp_path: Path, **kwargs) -> ingest.IngestResult:
    """ingest_dataset into tmp_path/out with a private cache (never ~/.cache)."""
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    return ingest_dataset(str(source), tmp_path / "out", **kwargs)


def skipped(result) -> dict[str, str]:
    return {s.source: s.reason for s in result.skipped}


def kept(result) -> dict[str, ingest.ImageRecord]:
    return {r.source: r for r in result.images}


def assert_good_files_kept(result, expected_per_class: int = IMAGES_PER_CLASS) -> None:
    good = [r for r in result.images if Path(r.source).name.split("_")[0] in ("cat", "dog")]
    assert {c: sum(r.label == c for r in good) for c in ("cat", "dog")} == {
        "cat": expected_per_class,
        "dog": expected_per_class,
    }


def assert_skipped_once(result, source: str, reason: str) -> None:
    reasons = skipped(result)
    assert source in reasons, f"{source} not skipped; skipped: {reasons}"
    assert reason in reasons[source], f"{source}: expected {reason!r} in {reasons[source]!r}"
    assert source not in kept(result)


# --- the plain folder ------------------------------------------------------------------------

def test_clean_folder_keeps_everything(image_folder, tmp_path):
    result = run_ingest(image_folder, tmp_path)
    assert result.layout == "class_folders"
    assert result.class_names == ["cat", "dog"]
    assert result.skipped == []
    assert ingest.class_counts(result) == {"cat": IMAGES_PER_CLASS, "dog": IMAGES_PER_CLASS}
    for rec in result.images:
        assert rec.source.startswith(f"{rec.label}/")
        assert rec.source_split is None
        assert (rec.format, rec.width, rec.height) == ("JPEG", 64, 48)
        copied = tmp_path / "out" / rec.file
        assert copied.read_bytes() == (image_folder / rec.source).read_bytes()
        assert rec.file.startswith(f"images/{rec.label}/") and rec.file.endswith(".jpg")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["images"]) == 2 * IMAGES_PER_CLASS
    assert manifest["fingerprint"] == result.fingerprint
    assert ingest.load_manifest(tmp_path / "out") == result
    check_usable(result)  # does not raise


def test_fingerprint_depends_on_content_not_names(image_folder, tmp_path):
    first = run_ingest(image_folder, tmp_path / "a")
    renamed = tmp_path / "renamed"
    shutil.copytree(image_folder, renamed)
    for path in sorted(renamed.rglob("*.jpg")):
        path.rename(path.with_name("x" + path.name))
    assert run_ingest(renamed, tmp_path / "b").fingerprint == first.fingerprint
    make_image(renamed / "cat" / "extra.jpg", seed=999)
    assert run_ingest(renamed, tmp_path / "c").fingerprint != first.fingerprint


def test_missing_folder_and_unknown_scheme_fail_clearly(tmp_path):
    with pytest.raises(IngestError, match="data folder not found"):
        run_ingest(tmp_path / "nope", tmp_path)
    with pytest.raises(IngestError, match="unsupported data URI"):
        run_ingest("s3://bucket/data", tmp_path)


# --- one test per validation case -------------------------------------------------------------

def test_corrupt_bytes_skipped(image_folder, tmp_path):
    (image_folder / "cat" / "corrupt.jpg").write_bytes(bytes(range(256)) * 8)
    result = run_ingest(image_folder, tmp_path)
    assert_skipped_once(result, "cat/corrupt.jpg", "not a decodable image")
    assert_good_files_kept(result)


def test_truncated_jpeg_skipped(image_folder, tmp_path):
    data = image_bytes("JPEG", size=(128, 96), seed=7)
    (image_folder / "dog" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    assert read_header(data[: len(data) // 2]).format == "JPEG"  # the header alone looks fine
    result = run_ingest(image_folder, tmp_path)
    assert_skipped_once(result, "dog/truncated.jpg", "truncated")
    assert_good_files_kept(result)


def test_truncated_png_skipped(image_folder, tmp_path):
    data = image_bytes("PNG", size=(128, 96), seed=8)
    (image_folder / "dog" / "truncated.png").write_bytes(data[: len(data) // 2])
    result = run_ingest(image_folder, tmp_path)
    assert_skipped_once(result, "dog/truncated.png", "corrupt or truncated")
    assert_good_files_kept(result)


def test_zero_byte_file_skipped(image_folder, tmp_path):
    (image_folder / "cat" / "empty.jpg").write_bytes(b"")
    result = run_ingest(image_folder, tmp_path)
    assert_skipped_once(result, "cat/empty.jpg", "empty file (0 bytes)")
    assert_good_files_kept(result)


def test_text_file_named_jpg_skipped(image_folder, tmp_path):
    (image_folder / "dog" / "notes.jpg").write_text("this is not a photo of a dog\n" * 20)
    result = run_ingest(image_folder, tmp_path)
    assert_skipped_once(result, "dog/notes.jpg", "not a decodable image")
    assert_good_files_kept(result)


def test_unsupported_real_format_skipped(image_folder, tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, format="TIFF")
    (image_folder / "cat" / "scan.jpg").write_bytes(buffer.getvalue())
    result = run_ingest(image_folder, tmp_path)
    assert_skipped_once(result, "cat/scan.jpg", "unsupported image format TIFF")
    assert_good_files_kept(result)


def test_webp_named_png_kept_as_webp(image_folder, tmp_path):
    make_image(image_folder / "cat" / "really_webp.png", "WEBP", seed=11)
    result = run_ingest(image_folder, tmp_path)
    rec = kept(result)["cat/really_webp.png"]
    assert rec.format == "WEBP"
    assert rec.file.endswith(".webp")  # the copy carries the real format's extension
    assert Image.open(tmp_path / "out" / rec.file).format == "WEBP"
    assert build_report(result, "x")["formats"] == {"JPEG": 2 * IMAGES_PER_CLASS, "WEBP": 1}
    assert result.skipped == []
    assert_good_files_kept(result)


def test_png_with_alpha_kept(image_folder, tmp_path):
    make_image(image_folder / "dog" / "alpha.png", "PNG", mode="RGBA", seed=12)
    result = run_ingest(image_folder, tmp_path)
    rec = kept(result)["dog/alpha.png"]
    assert (rec.format, rec.label) == ("PNG", "dog")
    assert result.skipped == []
    decoded = decode_image((tmp_path / "out" / rec.file).read_bytes())
    assert decoded.mode == "RGB"
    # column 0 is fully transparent, so it is composited onto white
    assert all(decoded.getpixel((0, y)) == (255, 255, 255) for y in range(decoded.height))


def test_grayscale_kept(image_folder, tmp_path):
    make_image(image_folder / "cat" / "gray.jpg", "JPEG", mode="L", seed=13)
    make_image(image_folder / "cat" / "gray.png", "PNG", mode="L", seed=14)
    result = run_ingest(image_folder, tmp_path)
    assert {kept(result)[f"cat/gray.{e}"].format for e in ("jpg", "png")} == {"JPEG", "PNG"}
    assert result.skipped == []
    pixels = image_to_pixels((image_folder / "cat" / "gray.png").read_bytes(), 32)
    assert pixels.shape == (32, 32, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_cmyk_jpeg_kept(image_folder, tmp_path):
    make_image(image_folder / "dog" / "cmyk.jpg", "JPEG", mode="CMYK", seed=15)
    assert Image.open(image_folder / "dog" / "cmyk.jpg").mode == "CMYK"
    result = run_ingest(image_folder, tmp_path)
    assert kept(result)["dog/cmyk.jpg"].format == "JPEG"
    assert result.skipped == []
    assert image_to_pixels((image_folder / "dog" / "cmyk.jpg").read_bytes(), 32).shape == (32, 32, 3)


@pytest.mark.parametrize("fmt", ["BMP", "GIF"])
def test_other_accepted_formats_kept(image_folder, tmp_path, fmt):
    make_image(image_folder / "cat" / f"other.{fmt.lower()}", fmt, seed=16)
    result = run_ingest(image_folder, tmp_path)
    assert kept(result)[f"cat/other.{fmt.lower()}"].format == fmt
    assert result.skipped == []


def test_animated_gif_first_frame_kept(image_folder, tmp_path):
    frames = [Image.new("RGB", (64, 64), color) for color in ((250, 0, 0), (0, 0, 250))]
    path = image_folder / "dog" / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    result = run_ingest(image_folder, tmp_path)
    assert kept(result)["dog/anim.gif"].format == "GIF"
    r, g, b = image_to_pixels(path.read_bytes(), 32)[16, 16]
    assert r > 200 and b < 50  # the first (red) frame


@pytest.mark.parametrize("size", [(20, 20), (200, 20)], ids=["both-sides", "one-side"])
def test_tiny_image_skipped(image_folder, tmp_path, size):
    make_image(image_folder / "cat" / "tiny.jpg", size=size, seed=17)
    result = run_ingest(image_folder, tmp_path, min_side=32)
    assert_skipped_once(result, "cat/tiny.jpg", f"too small: {size[0]}x{size[1]}, minimum side is 32px")
    assert_good_files_kept(result)


def test_image_at_min_side_kept(image_folder, tmp_path):
    make_image(image_folder / "cat" / "edge.jpg", size=(32, 40), seed=18)
    result = run_ingest(image_folder, tmp_path, min_side=32)
    assert "cat/edge.jpg" in kept(result)


def test_bomb_header_beyond_pillow_limit_skipped(image_folder, tmp_path):
    data = png_header_only(30_000, 30_000)  # 900 MP claimed in a ~100-byte file
    assert len(data) < 200
    (image_folder / "dog" / "bomb.png").write_bytes(data)
    result = run_ingest(image_folder, tmp_path)
    assert_skipped_once(result, "dog/bomb.png", "decompression bomb")
    assert_good_files_kept(result)


def test_bomb_header_beyond_our_ceiling_skipped(image_folder, tmp_path):
    (image_folder / "dog" / "big.png").write_bytes(png_header_only(8_000, 8_000))  # 64 MP > 40 MP default
    result = run_ingest(image_folder, tmp_path)
    assert_skipped_once(
        result, "dog/big.png", "decompression bomb: 8000x8000 = 64,000,000 pixels exceeds the ceiling of 40,000,000"
    )
    assert_good_files_kept(result)


def test_real_image_over_low_pixel_ceiling_skipped(image_folder, tmp_path):
    make_image(image_folder / "cat" / "large.jpg", size=(100, 80), seed=19)  # 8,000 px
    result = run_ingest(image_folder, tmp_path, max_pixels=5_000)  # the 64x48 = 3,072 px files pass
    assert_skipped_once(result, "cat/large.jpg", "decompression bomb: 100x80 = 8,000 pixels exceeds the ceiling of 5,000")
    assert_good_files_kept(result)


def test_exact_duplicate_within_class_kept_once(image_folder, tmp_path):
    shutil.copyfile(image_folder / "cat" / "cat_003.jpg", image_folder / "cat" / "zz_copy.jpg")
    result = run_ingest(image_folder, tmp_path)
    assert "cat/cat_003.jpg" in kept(result)
    assert_skipped_once(result, "cat/zz_copy.jpg", "exact duplicate of cat/cat_003.jpg")
    assert ingest.class_counts(result) == {"cat": IMAGES_PER_CLASS, "dog": IMAGES_PER_CLASS}
    assert len({r.sha256 for r in result.images}) == len(result.images)


def test_conflicting_labels_both_kept_out(image_folder, tmp_path):
    shutil.copyfile(image_folder / "cat" / "cat_004.jpg", image_folder / "dog" / "looks_like_a_cat.jpg")
    result = run_ingest(image_folder, tmp_path)
    assert_skipped_once(result, "cat/cat_004.jpg", "label conflict")
    assert_skipped_once(result, "dog/looks_like_a_cat.jpg", "label conflict")
    assert "['cat', 'dog']" in skipped(result)["cat/cat_004.jpg"]
    assert ingest.class_counts(result) == {"cat": IMAGES_PER_CLASS - 1, "dog": IMAGES_PER_CLASS}


def test_read_header_does_not_decode():
    with pytest.raises(InvalidImageError, match="empty file"):
        read_header(b"")
    header = read_header(image_bytes("PNG", size=(70, 50)))
    assert (header.format, header.width, header.height) == ("PNG", 70, 50)


# --- usability checks ------------------------------------------------------------------------

def test_empty_class_folder_fails_naming_it(image_folder, tmp_path):
    (image_folder / "bird").mkdir()
    result = run_ingest(image_folder, tmp_path)
    assert result.class_names == ["bird", "cat", "dog"]
    with pytest.raises(IngestError, match=r"\['bird'\]"):
        check_usable(result)


def test_class_with_only_bad_files_fails_naming_it(image_folder, tmp_path):
    (image_folder / "bird").mkdir()
    (image_folder / "bird" / "a.jpg").write_bytes(b"junk")
    (image_folder / "bird" / "b.jpg").write_bytes(b"")
    result = run_ingest(image_folder, tmp_path)
    with pytest.raises(IngestError, match=r"class folder\(s\) \['bird'\] have no valid image \(2 file\(s\) skipped"):
        check_usable(result)


def test_single_class_fails(tmp_path):
    source = make_class_folders(tmp_path / "data", {"cat": 5})
    result = run_ingest(source, tmp_path)
    assert ingest.class_counts(result) == {"cat": 5}
    with pytest.raises(IngestError, match=r"need at least 2 classes, found \['cat'\]"):
        check_usable(result)


def test_no_class_folders_fails(tmp_path):
    (tmp_path / "data").mkdir()
    result = run_ingest(tmp_path / "data", tmp_path)
    with pytest.raises(IngestError, match="need at least 2 classes"):
        check_usable(result)


# --- layouts ---------------------------------------------------------------------------------

def test_find_class_folders_descends_wrapper_and_ignores_hidden(tmp_path):
    root = tmp_path / "wrap" / "inner"
    make_class_folders(root, {"cat": 1, "dog": 1})
    (root / "__MACOSX").mkdir()
    (root / ".git").mkdir()
    layout, folders = find_class_folders(tmp_path / "wrap")
    assert layout == "class_folders"
    assert {split: sorted(classes) for split, classes in folders.items()} == {None: ["cat", "dog"]}


def test_find_class_folders_train_validation(tmp_path):
    base = make_source_with_splits(tmp_path / "src", train=1, validation=1)
    layout, folders = find_class_folders(base.parent)
    assert layout == "train_validation"
    assert {split: sorted(classes) for split, classes in folders.items()} == {
        "train": ["cats", "dogs"],
        "validation": ["cats", "dogs"],
    }


def test_split_folders_mixed_with_class_folders_rejected(tmp_path):
    base = make_source_with_splits(tmp_path / "src", train=1, validation=1)
    make_class_folders(base, {"birds": 1})
    with pytest.raises(IngestError, match="mixes split folders"):
        find_class_folders(base)


# --- report ----------------------------------------------------------------------------------

def test_report_counts_sizes_and_skipped(image_folder, tmp_path):
    make_image(image_folder / "cat" / "wide.png", "PNG", size=(300, 200), seed=20)
    (image_folder / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (image_folder / "dog" / "empty.jpg").write_bytes(b"")
    result = run_ingest(image_folder, tmp_path)
    report = build_report(result, str(image_folder))
    assert report["n_images"] == 2 * IMAGES_PER_CLASS + 1
    assert report["n_skipped"] == 2
    assert report["class_counts"] == {"cat": IMAGES_PER_CLASS + 1, "dog": IMAGES_PER_CLASS}
    assert report["class_counts_by_source_split"] == {"all": report["class_counts"]}
    assert report["formats"] == {"JPEG": 2 * IMAGES_PER_CLASS, "PNG": 1}
    assert report["width"] == {"min": 64, "median": 64, "max": 300}
    assert report["height"] == {"min": 48, "median": 48, "max": 200}
    assert report["shorter_side_histogram"]["0-127px"] == 2 * IMAGES_PER_CLASS
    assert report["shorter_side_histogram"]["128-255px"] == 1
    assert sum(report["shorter_side_histogram"].values()) == report["n_images"]
    assert [s["source"] for s in report["skipped"]] == ["dog/broken.jpg", "dog/empty.jpg"]
    json.dumps(report)  # the JSON form must serialise

    markdown = report_markdown(report)
    assert markdown.startswith("# Dataset report")
    assert f"**{2 * IMAGES_PER_CLASS + 1} images kept, 2 skipped.**" in markdown
    assert f"| cat | {IMAGES_PER_CLASS + 1} | {IMAGES_PER_CLASS + 1} |" in markdown
    assert f"| dog | {IMAGES_PER_CLASS} | {IMAGES_PER_CLASS} |" in markdown
    assert "## Skipped files (2)" in markdown
    assert "| `dog/empty.jpg` | empty file (0 bytes) |" in markdown
    broken_line = next(line for line in markdown.splitlines() if "`dog/broken.jpg`" in line)
    assert "not a decodable image" in broken_line or "corrupt or truncated" in broken_line
    assert "- width: min 64, median 64, max 300 px" in markdown
    assert "formats: JPEG 20, PNG 1" in markdown


def test_report_without_skipped_says_none(image_folder, tmp_path):
    markdown = report_markdown(build_report(run_ingest(image_folder, tmp_path), "data"))
    assert "## Skipped files (0)" in markdown
    assert "None." in markdown


def test_report_markdown_escapes_pipes_in_reasons():
    report = {
        "data_uri": "d", "feedback_uri": "", "notes": [], "layout": "class_folders", "fingerprint": "0" * 64,
        "n_images": 0, "n_skipped": 1,
        "class_counts": {}, "class_counts_by_source_split": {}, "formats": {}, "width": {}, "height": {},
        "shorter_side_histogram": {}, "skipped": [{"source": "a.jpg", "reason": "x | y"}],
    }
    assert "| `a.jpg` | x / y |" in report_markdown(report)


# --- archives --------------------------------------------------------------------------------

def assert_train_validation_counts(result, train=6, validation=3):
    assert result.layout == "train_validation"
    assert result.class_names == ["cats", "dogs"]
    report = build_report(result, "archive")
    assert report["class_counts_by_source_split"] == {
        "train": {"cats": train, "dogs": train},
        "validation": {"cats": validation, "dogs": validation},
    }
    assert result.skipped == []
    assert all(r.source.split("/")[-3] == r.source_split for r in result.images)  # .../<split>/<class>/<file>


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_ingest_and_extraction_cached(tmp_path, kind, monkeypatch):
    base = make_source_with_splits(tmp_path / "src")
    archive = (zip_folder if kind == "zip" else tar_folder)(base, tmp_path / f"cats_and_dogs_filtered.{kind}")
    result = run_ingest(archive, tmp_path / "first", cache_dir=tmp_path / "cache")
    assert_train_validation_counts(result)

    markers = list((tmp_path / "cache" / "extracted").glob("*.complete"))
    assert len(markers) == 1
    mtime = markers[0].stat().st_mtime_ns

    def no_extraction(*args, **kwargs):
        raise AssertionError("the archive was extracted again")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", no_extraction)
    monkeypatch.setattr(tarfile.TarFile, "extractall", no_extraction)
    again = run_ingest(archive, tmp_path / "second", cache_dir=tmp_path / "cache")
    assert again.fingerprint == result.fingerprint
    assert markers[0].stat().st_mtime_ns == mtime
    assert list((tmp_path / "cache" / "extracted").glob("*.complete")) == markers


def test_interrupted_extraction_is_redone(tmp_path):
    archive = zip_folder(make_source_with_splits(tmp_path / "src"), tmp_path / "data.zip")
    run_ingest(archive, tmp_path / "first", cache_dir=tmp_path / "cache")
    (marker,) = (tmp_path / "cache" / "extracted").glob("*.complete")
    marker.unlink()  # as if the first extraction had died half-way
    shutil.rmtree(next(marker.with_suffix("").rglob("validation")))
    assert_train_validation_counts(run_ingest(archive, tmp_path / "second", cache_dir=tmp_path / "cache"))
    assert marker.exists()


def test_archive_of_plain_class_folders(tmp_path):
    source = make_class_folders(tmp_path / "src" / "pets", {"cat": 4, "dog": 4})
    archive = tar_folder(source, tmp_path / "pets.tgz")
    result = run_ingest(archive, tmp_path)
    assert result.layout == "class_folders"
    assert ingest.class_counts(result) == {"cat": 4, "dog": 4}


@pytest.mark.parametrize("member", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt"])
def test_zip_with_unsafe_member_refused(tmp_path, member):
    archive = zip_folder(make_source_with_splits(tmp_path / "src", train=1, validation=1), tmp_path / "bad.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(member, b"pwned")
    with pytest.raises(IngestError, match="unsafe member path"):
        run_ingest(archive, tmp_path)
    assert list(tmp_path.rglob("evil.txt")) == []
    assert list((tmp_path / "cache" / "extracted").glob("*.complete")) == []


def test_tar_with_unsafe_member_refused(tmp_path):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        data = image_bytes()
        info = tarfile.TarInfo("pets/cat/a.jpg")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("../evil.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"pwned"))
    with pytest.raises(IngestError, match="cannot extract"):
        run_ingest(archive, tmp_path)
    assert list(tmp_path.rglob("evil.txt")) == []


def test_not_an_archive_refused(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_text("not an archive")
    with pytest.raises(IngestError, match="neither a zip nor a tar"):
        run_ingest(fake, tmp_path)
    with pytest.raises(IngestError, match="archive not found"):
        run_ingest(tmp_path / "missing.zip", tmp_path)


def test_url_archive_downloaded_once(tmp_path, http_server):
    zip_folder(make_source_with_splits(tmp_path / "src"), http_server.root / "cats_and_dogs_filtered.zip")
    url = http_server.url("cats_and_dogs_filtered.zip")
    first = run_ingest(url, tmp_path / "first", cache_dir=tmp_path / "cache")
    assert_train_validation_counts(first)
    assert http_server.requests == ["/cats_and_dogs_filtered.zip"]
    downloads = list((tmp_path / "cache" / "downloads").iterdir())
    assert [p.name.endswith("-cats_and_dogs_filtered.zip") for p in downloads] == [True]
    assert downloads[0].read_bytes() == (http_server.root / "cats_and_dogs_filtered.zip").read_bytes()

    second = run_ingest(url, tmp_path / "second", cache_dir=tmp_path / "cache")
    assert second.fingerprint == first.fingerprint
    assert http_server.requests == ["/cats_and_dogs_filtered.zip"]  # no new request


def test_url_not_found_fails_clearly(tmp_path, http_server):
    url = http_server.url("missing.zip")
    with pytest.raises(IngestError, match="missing.zip"):
        run_ingest(url, tmp_path)
    assert not list((tmp_path / "cache" / "downloads").glob("*missing.zip*"))


def test_cache_dir_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path / "envcache"))
    assert ingest.default_cache_dir() == tmp_path / "envcache"
    archive = zip_folder(make_source_with_splits(tmp_path / "src", train=1, validation=1), tmp_path / "d.zip")
    ingest_dataset(str(archive), tmp_path / "out")
    assert len(list((tmp_path / "envcache" / "extracted").glob("*.complete"))) == 1


# -- label_map: folder names -> served labels (cats_and_dogs_filtered has cats/ and dogs/) -------


def test_label_map_renames_class_folders(tmp_path):
    source = make_class_folders(tmp_path / "src", counts={"cats": 3, "dogs": 2})
    result = run_ingest(source, tmp_path, label_map=ingest.parse_label_map("cats=cat, dogs=dog"))
    assert result.class_names == ["cat", "dog"]
    assert ingest.class_counts(result) == {"cat": 3, "dog": 2}
    assert {Path(r.file).parent.name for r in result.images} == {"cat", "dog"}


def test_label_map_collision_is_an_error_not_a_silent_merge(tmp_path):
    source = make_class_folders(tmp_path / "src", counts={"cat": 2, "cats": 2, "dog": 2})
    with pytest.raises(IngestError, match="both map to label 'cat'"):
        run_ingest(source, tmp_path, label_map={"cats": "cat"})


@pytest.mark.parametrize("spec", ["cats", "=cat", "cats="])
def test_parse_label_map_rejects_malformed_entries(spec):
    with pytest.raises(ValueError, match="folder=label"):
        ingest.parse_label_map(spec)
