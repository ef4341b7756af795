"""Ingest: materialise a labelled image source, validate every file by content, write a snapshot.

Sources: a local folder (one sub-folder per class, or train/ and validation/ folders that each
hold class folders), a .zip/.tar.gz/.tgz archive given as a path, http(s) URL or gs:// object
(downloaded once into a cache), or a gs:// prefix laid out like a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from catdog import storage
from catdog.preprocessing import DEFAULT_MAX_PIXELS, InvalidImageError, decode_image, read_header

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
SOURCE_SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation"}
IGNORED_DIRS = {"__MACOSX"}
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif"}
MANIFEST_NAME = "manifest.json"


class IngestError(RuntimeError):
    """The source cannot yield a usable dataset; the message says why."""


@dataclass(frozen=True)
class ImageRecord:
    file: str  # path inside the ingest output folder
    label: str
    source: str  # path relative to the source root
    source_split: str | None  # "train" / "validation" when the source had its own split
    sha256: str
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class SkippedFile:
    source: str
    reason: str


@dataclass
class IngestResult:
    class_names: list[str]
    layout: str  # "class_folders" or "train_validation"
    images: list[ImageRecord]
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """Content hash of the dataset: the sorted (sha256, label, source_split) triples."""
        digest = hashlib.sha256()
        for rec in sorted(self.images, key=lambda r: (r.sha256, r.label)):
            digest.update(f"{rec.sha256}:{rec.label}:{rec.source_split}\n".encode())
        return digest.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("CATDOG_CACHE", Path.home() / ".cache" / "catdog"))


def _is_archive(uri: str) -> bool:
    return uri.lower().endswith(ARCHIVE_SUFFIXES)


def _download_once(uri: str, cache_dir: Path) -> Path:
    """Fetch an http(s) or gs:// archive into the cache unless it is already there."""
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = cache_dir / "downloads" / f"{key}-{uri.rstrip('/').rsplit('/', 1)[-1]}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    try:
        if storage.is_gcs(uri):
            tmp.write_bytes(storage.read_bytes(uri))
        else:
            with urllib.request.urlopen(uri, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
    except Exception as exc:  # HTTP errors, unreachable hosts, missing gs:// objects
        tmp.unlink(missing_ok=True)
        raise IngestError(f"cannot download {uri}: {exc}") from None
    os.replace(tmp, target)
    return target


def _extract_once(archive: Path, cache_dir: Path) -> Path:
    """Extract into the cache (keyed by the archive's content hash), refusing unsafe paths."""
    digest = hashlib.sha256()
    with open(archive, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    target = cache_dir / "extracted" / digest.hexdigest()[:16]
    if (target / ".complete").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                root = target.resolve()
                for name in zf.namelist():
                    if not (target / name).resolve().is_relative_to(root):
                        raise IngestError(f"archive {archive} has an unsafe member path: {name}")
                zf.extractall(target)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(target, filter="data")  # refuses absolute paths, '..' and devices
        else:
            raise IngestError(f"{archive} is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise IngestError(f"cannot extract {archive}: {exc}") from None
    (target / ".complete").touch()
    return target


def materialize_source(uri: str, cache_dir: Path, scratch: Path) -> Path:
    """Return a local folder with the source's files (archives cached, gs:// prefixes in scratch)."""
    if _is_archive(uri):
        archive = _download_once(uri, cache_dir) if "://" in uri else Path(uri)
        if not archive.is_file():
            raise IngestError(f"archive not found: {uri}")
        return _extract_once(archive, cache_dir)
    if storage.is_gcs(uri):
        local = storage.download_tree(uri, scratch / "gcs")
        if not any(local.rglob("*")):
            raise IngestError(f"no objects under {uri}")
        return local
    if "://" in uri:
        raise IngestError(f"unsupported data URI {uri!r}: use a folder, an archive or gs://")
    path = Path(uri)
    if not path.is_dir():
        raise IngestError(f"data folder not found: {uri}")
    return path


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and p.name not in IGNORED_DIRS and not p.name.startswith("."))


def find_class_folders(root: Path) -> tuple[str, dict[str | None, dict[str, Path]]]:
    """Detect the layout: {source_split: {class: folder}}; source_split is None without a split."""
    while True:  # descend through a single wrapping folder (one that holds folders), as archives often have
        dirs = _subdirs(root)
        files = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
        if len(dirs) == 1 and not files and _subdirs(dirs[0]):
            root = dirs[0]
        else:
            break
    names = {d.name.lower(): d for d in dirs}
    split_dirs = {SOURCE_SPLIT_NAMES[n]: d for n, d in names.items() if n in SOURCE_SPLIT_NAMES}
    if "train" in split_dirs:
        if set(names) - set(SOURCE_SPLIT_NAMES) - {"test"}:
            raise IngestError(f"{root} mixes split folders (train/validation) with other folders: {sorted(names)}")
        return "train_validation", {s: {c.name: c for c in _subdirs(d)} for s, d in split_dirs.items()}
    return "class_folders", {None: {d.name: d for d in dirs}}


def relabel(classes: dict[str, Path], label_map: dict[str, str]) -> dict[str, Path]:
    relabelled: dict[str, Path] = {}
    for name, folder in classes.items():
        label = label_map.get(name, name)
        if label in relabelled:
            raise IngestError(f"folders {relabelled[label].name!r} and {name!r} both map to label {label!r}")
        relabelled[label] = folder
    return relabelled


DEFAULT_LABEL_MAP = "cats=cat,dogs=dog"  # the folders of cats_and_dogs_filtered -> served labels


def parse_label_map(spec: str) -> dict[str, str]:
    """'cats=cat,dogs=dog' -> {'cats': 'cat', 'dogs': 'dog'}; raises ValueError on a malformed entry."""
    mapping = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        folder, sep, label = (part.strip() for part in entry.partition("="))
        if not sep or not folder or not label:
            raise ValueError(f"label_map entry {entry!r} is not folder=label")
        mapping[folder] = label
    return mapping


def validate_image_bytes(data: bytes, min_side: int, max_pixels: int) -> tuple[str, int, int]:
    """Full decode plus size checks; returns (format, width, height) or raises InvalidImageError."""
    header = read_header(data, max_pixels)
    if min(header.width, header.height) < min_side:
        raise InvalidImageError(f"too small: {header.width}x{header.height}, minimum side is {min_side}px")
    decode_image(data, max_pixels)  # catches truncated and corrupt data that headers hide
    return header.format, header.width, header.height


def ingest_dataset(
    data_uri: str,
    output_dir: Path,
    min_side: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache_dir: Path | None = None,
    label_map: dict[str, str] | None = None,
) -> IngestResult:
    """Validate every file of the source and copy the good ones to output_dir/images/<label>/.

    label_map renames class folders to labels (e.g. {"cats": "cat"}); other folders keep their name.

    Writes output_dir/manifest.json. Bad files are skipped and listed, never fatal here: call
    check_usable() after writing the report to fail on an empty class or a single class.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)  # the manifest is written even when nothing is kept
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    with tempfile.TemporaryDirectory(prefix="catdog-ingest-") as scratch:
        root = materialize_source(data_uri, cache_dir, Path(scratch))
        layout, folders = find_class_folders(root)
        candidates: list[tuple[str, str | None, Path]] = []  # (label, source_split, path)
        folders = {split: relabel(classes, label_map or {}) for split, classes in folders.items()}
        for source_split, classes in folders.items():
            for label, folder in classes.items():
                candidates += [
                    (label, source_split, p)
                    for p in sorted(folder.rglob("*"))
                    if p.is_file() and not any(part in IGNORED_DIRS for part in p.parts)
                ]
        class_names = sorted({label for classes in folders.values() for label in classes})
        result = _validate_and_copy(candidates, root, output_dir, class_names, layout, min_side, max_pixels)
    (output_dir / MANIFEST_NAME).write_text(json.dumps(manifest_dict(result), indent=1))
    return result


def _validate_and_copy(candidates, root, output_dir, class_names, layout, min_side, max_pixels) -> IngestResult:
    result = IngestResult(class_names=class_names, layout=layout, images=[])
    by_hash: dict[str, list[tuple[str, str | None, str, tuple[str, int, int]]]] = {}
    for label, source_split, path in candidates:
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()
        try:
            info = validate_image_bytes(data, min_side, max_pixels)
        except InvalidImageError as exc:
            result.skipped.append(SkippedFile(rel, str(exc)))
            continue
        by_hash.setdefault(hashlib.sha256(data).hexdigest(), []).append((label, source_split, rel, info))
    for sha, copies in sorted(by_hash.items()):
        labels = sorted({label for label, *_ in copies})
        if len(labels) > 1:
            others = ", ".join(rel for _, _, rel, _ in copies)
            for _, _, rel, _ in copies:
                result.skipped.append(SkippedFile(rel, f"label conflict: identical bytes under {labels} ({others})"))
            continue
        label, source_split, rel, (fmt, width, height) = copies[0]
        for _, _, dup_rel, _ in copies[1:]:
            result.skipped.append(SkippedFile(dup_rel, f"exact duplicate of {rel}"))
        file = f"images/{label}/{sha[:24]}{EXTENSIONS[fmt]}"
        (output_dir / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, output_dir / file)
        result.images.append(ImageRecord(file, label, rel, source_split, sha, width, height, fmt))
    result.images.sort(key=lambda r: r.source)
    result.skipped.sort(key=lambda s: s.source)
    return result


def check_usable(result: IngestResult) -> None:
    counts = class_counts(result)
    empty = [c for c in result.class_names if counts.get(c, 0) == 0]
    if empty:
        raise IngestError(
            f"class folder(s) {empty} have no valid image ({len(result.skipped)} file(s) skipped in total; "
            "see the dataset report)"
        )
    if len(result.class_names) < 2:
        raise IngestError(f"need at least 2 classes, found {result.class_names or 'none'}")


def class_counts(result: IngestResult) -> dict[str, int]:
    counts = {c: 0 for c in result.class_names}
    for rec in result.images:
        counts[rec.label] += 1
    return counts


def manifest_dict(result: IngestResult) -> dict:
    return {
        "class_names": result.class_names,
        "layout": result.layout,
        "fingerprint": result.fingerprint,
        "images": [asdict(r) for r in result.images],
        "skipped": [asdict(s) for s in result.skipped],
    }


def load_manifest(dataset_dir: Path) -> IngestResult:
    data = json.loads((Path(dataset_dir) / MANIFEST_NAME).read_text())
    return IngestResult(
        class_names=data["class_names"],
        layout=data["layout"],
        images=[ImageRecord(**r) for r in data["images"]],
        skipped=[SkippedFile(**s) for s in data["skipped"]],
    )


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


SIZE_BUCKETS = ((0, 128), (128, 256), (256, 512), (512, 1024), (1024, 10**9))


def build_report(result: IngestResult, data_uri: str) -> dict:
    """The dataset report: class counts, image sizes, formats, skipped files with reasons."""
    by_split: dict[str, dict[str, int]] = {}
    formats: dict[str, int] = {}
    shorter_sides = []
    for rec in result.images:
        split_counts = by_split.setdefault(rec.source_split or "all", {c: 0 for c in result.class_names})
        split_counts[rec.label] += 1
        formats[rec.format] = formats.get(rec.format, 0) + 1
        shorter_sides.append(min(rec.width, rec.height))
    histogram = {
        (f"{lo}-{hi - 1}px" if hi < 10**9 else f">={lo}px"): sum(lo <= s < hi for s in shorter_sides)
        for lo, hi in SIZE_BUCKETS
    }
    return {
        "data_uri": data_uri,
        "layout": result.layout,
        "fingerprint": result.fingerprint,
        "n_images": len(result.images),
        "n_skipped": len(result.skipped),
        "class_counts": class_counts(result),
        "class_counts_by_source_split": by_split,
        "formats": dict(sorted(formats.items())),
        "width": _summary([r.width for r in result.images]),
        "height": _summary([r.height for r in result.images]),
        "shorter_side_histogram": histogram,
        "skipped": [asdict(s) for s in result.skipped],
    }


def report_markdown(report: dict) -> str:
    lines = [
        "# Dataset report",
        "",
        f"Source: `{report['data_uri']}` (layout: {report['layout']}); fingerprint `{report['fingerprint'][:16]}`",
        "",
        f"**{report['n_images']} images kept, {report['n_skipped']} skipped.**",
        "",
        "| class | images | " + " | ".join(report["class_counts_by_source_split"]) + " |",
        "| --- | --- | " + " | ".join("---" for _ in report["class_counts_by_source_split"]) + " |",
    ]
    for name, count in report["class_counts"].items():
        per_split = [str(c.get(name, 0)) for c in report["class_counts_by_source_split"].values()]
        lines.append(f"| {name} | {count} | " + " | ".join(per_split) + " |")
    lines += ["", "## Image sizes", ""]
    for axis in ("width", "height"):
        s = report[axis]
        if s:
            lines.append(f"- {axis}: min {s['min']}, median {s['median']:g}, max {s['max']} px")
    lines.append("- formats: " + ", ".join(f"{k} {v}" for k, v in report["formats"].items()))
    lines += ["", "| shorter side | images |", "| --- | --- |"]
    lines += [f"| {bucket} | {n} |" for bucket, n in report["shorter_side_histogram"].items()]
    lines += ["", f"## Skipped files ({report['n_skipped']})", ""]
    if report["skipped"]:
        lines += ["| file | reason |", "| --- | --- |"]
        lines += [f"| `{s['source']}` | {s['reason'].replace('|', '/')} |" for s in report["skipped"]]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"
