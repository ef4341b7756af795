"""Ingest: materialise a labelled image source, validate every file by content, write a snapshot.

Sources: a local folder (one sub-folder per class, or train/ and validation/ folders that each
hold class folders), a .zip/.tar.gz/.tgz archive given as a path, http(s) URL or gs:// object
(downloaded once into a cache), or a gs:// prefix laid out like a folder.

Feedback (optional): the photos people validated in the feedback app, published under
<feedback_uri>/dataset/<label>/<sha256>.<ext> (a local folder or gs:// prefix; files at that root,
such as its manifest.json, are not read). They join the data's photos with origin "feedback":
same validation, the data's classes only, and the data's copy wins over identical bytes.
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
from typing import Literal

from catdog import storage
from catdog.preprocessing import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    EXTENSIONS,
    ImageHeader,
    InvalidImageError,
    validate_image,
)

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
SOURCE_SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation"}
IGNORED_DIRS = {"__MACOSX"}
MANIFEST_NAME = "manifest.json"
FEEDBACK_DATASET = "dataset"  # the feedback app publishes its validated photos under <feedback_uri>/dataset
FEEDBACK_PREFIX = "feedback:"  # the source of a feedback photo (kept or skipped): feedback:<label>/<file>
Origin = Literal["data", "feedback"]
ORIGINS: tuple[Origin, ...] = ("data", "feedback")


class IngestError(RuntimeError):
    """The source cannot yield a usable dataset; the message says why."""


@dataclass(frozen=True)
class ImageRecord:
    file: str  # path inside the ingest output folder
    label: str
    source: str  # path relative to the source root; feedback photos: feedback:<label>/<file>
    source_split: str | None  # "train" / "validation" when the source had its own split
    sha256: str
    width: int
    height: int
    format: str
    origin: Origin = "data"  # "feedback": validated in the feedback app (manifests before it: all data)


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
    notes: list[str] = field(default_factory=list)  # what the report must say besides counts

    @property
    def fingerprint(self) -> str:
        """Content hash of the dataset: the sorted (sha256, label, source_split[, origin]) entries.

        The origin is appended for feedback photos only, so a dataset without feedback keeps the
        fingerprint it had before feedback existed.
        """
        digest = hashlib.sha256()
        for rec in sorted(self.images, key=lambda r: (r.sha256, r.label)):
            origin = "" if rec.origin == "data" else f":{rec.origin}"
            digest.update(f"{rec.sha256}:{rec.label}:{rec.source_split}{origin}\n".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class _Candidate:
    """A file to validate: its label, source split, local path, reported source and origin."""

    label: str
    source_split: str | None
    path: Path
    source: str
    origin: Origin


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


def _files(folder: Path) -> list[Path]:
    """Every file below a class folder, sorted (archive litter such as __MACOSX left out)."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and not any(part in IGNORED_DIRS for part in p.parts)]


def _feedback_root(feedback_uri: str, scratch: Path) -> Path | None:
    """A local folder with <feedback_uri>/dataset's files, or None when there is none (yet)."""
    uri = storage.join(feedback_uri, FEEDBACK_DATASET)
    if storage.is_gcs(uri):
        local = storage.download_tree(uri, scratch / "feedback")
        return local if local.is_dir() else None  # no object under the prefix: nothing downloaded
    if "://" in feedback_uri:
        raise IngestError(f"unsupported feedback URI {feedback_uri!r}: use a folder or a gs:// prefix")
    if Path(feedback_uri).exists() and not Path(feedback_uri).is_dir():
        raise IngestError(f"feedback_uri {feedback_uri} is a file, not a folder")
    return Path(uri) if Path(uri).is_dir() else None


def _feedback_candidates(feedback_uri: str, label_map: dict[str, str], class_names: list[str], scratch: Path,
                         result: IngestResult) -> list[_Candidate]:
    """The files of the feedback class folders. A folder whose label is not one of the data's
    classes is not added: its files go to result.skipped. No photo there yet: a note, no error.
    Hidden files are the app's writes in progress (storage.write_bytes' .<name>.tmp-*): not photos yet."""
    root = _feedback_root(feedback_uri, scratch)
    folders = relabel({d.name: d for d in _subdirs(root)}, label_map) if root else {}
    candidates, unknown = [], []
    for label, folder in folders.items():
        for path in (p for p in _files(folder) if not p.name.startswith(".")):
            source = FEEDBACK_PREFIX + path.relative_to(root).as_posix()
            if label in class_names:
                candidates.append(_Candidate(label, None, path, source, "feedback"))
            else:
                unknown.append(SkippedFile(source, f"feedback label {label!r} is not a class of the data "
                                                   f"{class_names}"))
    if not candidates and not unknown:  # scheduled runs may start before anyone validated a photo
        result.notes.append(f"feedback: no photos under {storage.join(feedback_uri, FEEDBACK_DATASET)} yet")
    result.skipped.extend(unknown)
    return candidates


def ingest_dataset(
    data_uri: str,
    output_dir: Path,
    min_side: int = DEFAULT_MIN_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache_dir: Path | None = None,
    label_map: dict[str, str] | None = None,
    feedback_uri: str = "",
) -> IngestResult:
    """Validate every file of the source and copy the good ones to output_dir/images/<label>/.

    label_map renames class folders to labels (e.g. {"cats": "cat"}); other folders keep their name.
    feedback_uri (optional): also the validated photos under <feedback_uri>/dataset (module docstring).

    Writes output_dir/manifest.json. Bad files are skipped and listed, never fatal here: call
    check_usable() after writing the report to fail on an empty class or a single class.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)  # the manifest is written even when nothing is kept
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    with tempfile.TemporaryDirectory(prefix="catdog-ingest-") as scratch:
        root = materialize_source(data_uri, cache_dir, Path(scratch))
        layout, folders = find_class_folders(root)
        folders = {split: relabel(classes, label_map or {}) for split, classes in folders.items()}
        candidates = [
            _Candidate(label, source_split, p, p.relative_to(root).as_posix(), "data")
            for source_split, classes in folders.items()
            for label, folder in classes.items()
            for p in _files(folder)
        ]
        class_names = sorted({label for classes in folders.values() for label in classes})
        result = IngestResult(class_names=class_names, layout=layout, images=[])
        if feedback_uri:
            candidates += _feedback_candidates(feedback_uri, label_map or {}, class_names, Path(scratch), result)
        _validate_and_copy(candidates, output_dir, result, min_side, max_pixels)
    (output_dir / MANIFEST_NAME).write_text(json.dumps(manifest_dict(result), indent=1))
    return result


_Copy = tuple[_Candidate, ImageHeader]  # a valid file: where it came from, what it is


def _keep_one(copies: list[_Copy], skipped: list[SkippedFile]) -> _Copy | None:
    """The rule for identical bytes: one label -> the first copy is kept, the others are duplicates;
    several labels -> a conflict: every copy is reported and kept out (None)."""
    labels = sorted({c.label for c, _ in copies})
    if len(labels) > 1:
        others = ", ".join(c.source for c, _ in copies)
        skipped.extend(SkippedFile(c.source, f"label conflict: identical bytes under {labels} ({others})")
                       for c, _ in copies)
        return None
    skipped.extend(SkippedFile(c.source, f"exact duplicate of {copies[0][0].source}") for c, _ in copies[1:])
    return copies[0]


def _skip_feedback_copies(feedback: list[_Copy], data: list[_Copy], kept: _Copy | None,
                          skipped: list[SkippedFile]) -> None:
    """Feedback copies of bytes the data has are never kept, so the data (hence its split) is what
    it would be without feedback: same label -> a duplicate, another label -> a conflict."""
    data_labels = sorted({c.label for c, _ in data})
    data_sources = ", ".join(c.source for c, _ in data)
    for candidate, _ in feedback:
        if kept is not None and candidate.label == kept[0].label:
            skipped.append(SkippedFile(candidate.source, f"exact duplicate of {kept[0].source}"))
        else:
            skipped.append(SkippedFile(candidate.source, f"label conflict: identical bytes are {data_labels} in the "
                                                         f"data ({data_sources}); the feedback copy is kept out"))


def _validate_and_copy(candidates: list[_Candidate], output_dir: Path, result: IngestResult, min_side: int,
                       max_pixels: int) -> None:
    """Validate each candidate, resolve identical bytes, copy the kept files; fills result in place."""
    by_hash: dict[str, list[_Copy]] = {}
    for candidate in candidates:
        data = candidate.path.read_bytes()
        try:
            header = validate_image(data, min_side, max_pixels)
        except InvalidImageError as exc:
            result.skipped.append(SkippedFile(candidate.source, str(exc)))
            continue
        by_hash.setdefault(hashlib.sha256(data).hexdigest(), []).append((candidate, header))
    for sha, copies in sorted(by_hash.items()):
        data_copies = [c for c in copies if c[0].origin == "data"]
        feedback_copies = [c for c in copies if c[0].origin == "feedback"]
        if data_copies:
            kept = _keep_one(data_copies, result.skipped)
            _skip_feedback_copies(feedback_copies, data_copies, kept, result.skipped)
        else:
            kept = _keep_one(feedback_copies, result.skipped)
        if kept is None:
            continue
        candidate, header = kept
        file = f"images/{candidate.label}/{sha[:24]}{EXTENSIONS[header.format]}"
        (output_dir / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(candidate.path, output_dir / file)
        result.images.append(ImageRecord(file, candidate.label, candidate.source, candidate.source_split, sha,
                                         header.width, header.height, header.format, candidate.origin))
    result.images.sort(key=lambda r: r.source)
    result.skipped.sort(key=lambda s: s.source)


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
        "notes": result.notes,
    }


def load_manifest(dataset_dir: Path) -> IngestResult:
    """The ingest result from manifest.json (manifests written before feedback existed included)."""
    data = json.loads((Path(dataset_dir) / MANIFEST_NAME).read_text())
    return IngestResult(
        class_names=data["class_names"],
        layout=data["layout"],
        images=[ImageRecord(**r) for r in data["images"]],
        skipped=[SkippedFile(**s) for s in data["skipped"]],
        notes=data.get("notes", []),
    )


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


SIZE_BUCKETS = ((0, 128), (128, 256), (256, 512), (512, 1024), (1024, 10**9))


def skipped_origin(skipped: SkippedFile) -> Origin:
    return "feedback" if skipped.source.startswith(FEEDBACK_PREFIX) else "data"


def build_report(result: IngestResult, data_uri: str, feedback_uri: str = "") -> dict:
    """The dataset report: class counts (per source split of the data, per origin), image sizes,
    formats, skipped files with reasons, and the notes (e.g. no feedback photo yet)."""
    by_split: dict[str, dict[str, int]] = {}
    by_origin: dict[str, dict[str, int]] = {o: {c: 0 for c in result.class_names} for o in ORIGINS}
    formats: dict[str, int] = {}
    shorter_sides = []
    for rec in result.images:
        if rec.origin == "data":  # feedback photos have no source split: their own column in the markdown
            split_counts = by_split.setdefault(rec.source_split or "all", {c: 0 for c in result.class_names})
            split_counts[rec.label] += 1
        by_origin[rec.origin][rec.label] += 1
        formats[rec.format] = formats.get(rec.format, 0) + 1
        shorter_sides.append(min(rec.width, rec.height))
    histogram = {
        (f"{lo}-{hi - 1}px" if hi < 10**9 else f">={lo}px"): sum(lo <= s < hi for s in shorter_sides)
        for lo, hi in SIZE_BUCKETS
    }
    return {
        "data_uri": data_uri,
        "feedback_uri": feedback_uri,
        "layout": result.layout,
        "fingerprint": result.fingerprint,
        "n_images": len(result.images),
        "n_skipped": len(result.skipped),
        "n_images_by_origin": {o: sum(by_origin[o].values()) for o in ORIGINS},
        "n_skipped_by_origin": {o: sum(skipped_origin(s) == o for s in result.skipped) for o in ORIGINS},
        "class_counts": class_counts(result),
        "class_counts_by_source_split": by_split,
        "class_counts_by_origin": by_origin,
        "formats": dict(sorted(formats.items())),
        "width": _summary([r.width for r in result.images]),
        "height": _summary([r.height for r in result.images]),
        "shorter_side_histogram": histogram,
        "notes": result.notes,
        "skipped": [asdict(s) for s in result.skipped],
    }


def _count_columns(report: dict) -> dict[str, dict[str, int]]:
    """The class table's columns: the data's source splits, then the feedback photos when used."""
    if not report["feedback_uri"]:
        return report["class_counts_by_source_split"]
    data = {("data" if split == "all" else split): counts
            for split, counts in report["class_counts_by_source_split"].items()}
    return {**data, "feedback": report["class_counts_by_origin"]["feedback"]}


def report_markdown(report: dict) -> str:
    columns = _count_columns(report)
    lines = [
        "# Dataset report",
        "",
        f"Source: `{report['data_uri']}` (layout: {report['layout']}); fingerprint `{report['fingerprint'][:16]}`",
        "",
    ]
    if report["feedback_uri"]:
        lines += [f"Feedback: `{report['feedback_uri']}`: {report['n_images_by_origin']['feedback']} photos kept, "
                  f"{report['n_skipped_by_origin']['feedback']} skipped (their sources start with `{FEEDBACK_PREFIX}`)",
                  ""]
    lines += [f"- {note}" for note in report["notes"]] + ([""] if report["notes"] else [])
    lines += [
        f"**{report['n_images']} images kept, {report['n_skipped']} skipped.**",
        "",
        "| class | images | " + " | ".join(columns) + " |",
        "| --- | --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for name, count in report["class_counts"].items():
        per_column = [str(c.get(name, 0)) for c in columns.values()]
        lines.append(f"| {name} | {count} | " + " | ".join(per_column) + " |")
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
