"""Ingest: materialise a labelled image source, validate every file by content, write a snapshot.

Sources (catdog/sources.py): a local folder, a .zip/.tar.gz/.tgz archive given as a path, http(s)
URL or gs:// object (downloaded once into a cache), or a gs:// prefix laid out like a folder.
Labels (catdog/labels.py): class folders (one sub-folder per class, or train/ and validation/
folders that each hold class folders), or file names (label_from=kaggle or oxford_pet).

Validation and hashing run in a pool of worker processes (one per CPU by default); the results
keep the files' order, so the manifest is byte-identical whatever the number of workers.

Feedback (optional): the photos people validated in the feedback app, published under
<feedback_uri>/dataset/<label>/<sha256>.<ext> (a local folder or gs:// prefix; files at that root,
such as its manifest.json, are not read). They join the data's photos with origin "feedback":
same validation, the data's classes only, and the data's copy wins over identical bytes.
With feedback, the label overrides people gave training photos (<feedback_uri>/label-overrides.json,
catdog/label_overrides.py) are applied to the kept photos by sha256 (relabel or leave out, in the
snapshot only) and reported.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from catdog import storage
from catdog.label_overrides import apply_overrides, overrides_markdown, read_overrides

# other modules import DEFAULT_LABEL_MAP, IGNORED_DIRS, parse_label_map and load_manifest from here
from catdog.ingest_manifest import (  # noqa: F401
    MANIFEST_NAME,
    ORIGINS,
    ImageRecord,
    IngestResult,
    Origin,
    SkippedFile,
    class_counts,
    load_manifest,
    manifest_dict,
)
from catdog.labels import (  # noqa: F401
    DEFAULT_LABEL_MAP,
    IGNORED_DIRS,
    LABEL_FROM,
    NAME_PATTERNS,
    LabelFrom,
    NameMismatch,
    files_below,
    find_class_folders,
    label_from_name,
    parse_label_map,
    relabel,
    subdirs,
)
from catdog.preprocessing import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    EXTENSIONS,
    ImageHeader,
    InvalidImageError,
    validate_image,
)
from catdog.sources import IngestError, default_cache_dir, materialize_source

FEEDBACK_DATASET = "dataset"  # the feedback app publishes its validated photos under <feedback_uri>/dataset
FEEDBACK_PREFIX = "feedback:"  # the source of a feedback photo (kept or skipped): feedback:<label>/<file>
CHUNKS_PER_WORKER = 4  # files go to the workers in chunks: few round trips, still balanced


@dataclass(frozen=True)
class _Candidate:
    """A file to validate: its label, source split, local path, reported source and origin."""

    label: str
    source_split: str | None
    path: Path
    source: str
    origin: Origin


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
    folders = relabel({d.name: d for d in subdirs(root)}, label_map) if root else {}
    candidates, unknown = [], []
    for label, folder in folders.items():
        for path in (p for p in files_below(folder) if not p.name.startswith(".")):
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


def _folder_candidates(root: Path, label_map: dict[str, str]) -> tuple[str, list[str], list[_Candidate]]:
    """label_from=folder: (layout, class names, the class folders' files)."""
    layout, folders = find_class_folders(root)
    folders = {split: relabel(classes, label_map) for split, classes in folders.items()}
    candidates = [
        _Candidate(label, source_split, p, p.relative_to(root).as_posix(), "data")
        for source_split, classes in folders.items()
        for label, folder in classes.items()
        for p in files_below(folder)
    ]
    return layout, sorted({label for classes in folders.values() for label in classes}), candidates


def _file_name_candidates(root: Path, label_from: LabelFrom, label_map: dict[str, str],
                          skipped: list[SkippedFile]) -> list[_Candidate]:
    """label_from=kaggle|oxford_pet: every file below root, labelled by its name; a name that does
    not match the pattern goes to `skipped`."""
    candidates = []
    for path in files_below(root):
        source = path.relative_to(root).as_posix()
        try:
            label = label_from_name(path.name, label_from)
        except NameMismatch as exc:
            skipped.append(SkippedFile(source, str(exc)))
            continue
        candidates.append(_Candidate(label_map.get(label, label), None, path, source, "data"))
    return candidates


def ingest_dataset(
    data_uri: str,
    output_dir: Path,
    min_side: int = DEFAULT_MIN_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache_dir: Path | None = None,
    label_map: dict[str, str] | None = None,
    feedback_uri: str = "",
    label_from: LabelFrom = "folder",
    workers: int | None = None,
) -> IngestResult:
    """Validate every file of the source and copy the good ones to output_dir/images/<label>/.

    label_from: where labels come from (catdog/labels.py). label_map renames labels (class folders,
    or the labels file names give, e.g. {"cats": "cat"}); other labels stay as they are.
    feedback_uri (optional): also the validated photos under <feedback_uri>/dataset (module docstring).
    workers: processes that validate and hash the files (default os.cpu_count(); 1 = this process).

    Writes output_dir/manifest.json. Bad files are skipped and listed, never fatal here: call
    check_usable() after writing the report to fail on an empty class or a single class.
    """
    if label_from not in LABEL_FROM:  # a run started from the KFP or Vertex UI skips PipelineConfig
        raise IngestError(f"label_from={label_from!r}: choose one of {', '.join(LABEL_FROM)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)  # the manifest is written even when nothing is kept
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    label_map = label_map or {}
    with tempfile.TemporaryDirectory(prefix="catdog-ingest-") as scratch:
        root = materialize_source(data_uri, cache_dir, Path(scratch))
        if label_from == "folder":
            layout, class_names, candidates = _folder_candidates(root, label_map)
            result = IngestResult(class_names=class_names, layout=layout, images=[])
        else:
            result = IngestResult(class_names=[], layout="file_names", images=[], notes=[
                f"labels from file names: label_from={label_from} ({NAME_PATTERNS[label_from]})"])
            candidates = _file_name_candidates(root, label_from, label_map, result.skipped)
            result.class_names = sorted({c.label for c in candidates})
        if feedback_uri:
            candidates += _feedback_candidates(feedback_uri, label_map, result.class_names, Path(scratch), result)
        _validate_and_copy(candidates, output_dir, result, min_side, max_pixels, workers or os.cpu_count() or 1)
        if feedback_uri:
            uri, overrides = read_overrides(feedback_uri)
            result.images, result.overrides = apply_overrides(result.images, output_dir, overrides,
                                                              result.class_names, uri)
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


def _check_file(path: Path, min_side: int, max_pixels: int) -> tuple[str, ImageHeader] | str:
    """(sha256, header) of a valid image, or the reason it is not one (runs in a worker process)."""
    data = path.read_bytes()
    try:
        header = validate_image(data, min_side, max_pixels)
    except InvalidImageError as exc:
        return str(exc)
    return hashlib.sha256(data).hexdigest(), header


def check_files(paths: list[Path], min_side: int, max_pixels: int, workers: int) -> list[tuple[str, ImageHeader] | str]:
    """_check_file of every path, in the paths' order: in `workers` processes, or here for one."""
    check = functools.partial(_check_file, min_side=min_side, max_pixels=max_pixels)
    if workers <= 1 or len(paths) <= 1:
        return [check(path) for path in paths]
    chunksize = math.ceil(len(paths) / (workers * CHUNKS_PER_WORKER))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check, paths, chunksize=chunksize))


def _validate_and_copy(candidates: list[_Candidate], output_dir: Path, result: IngestResult, min_side: int,
                       max_pixels: int, workers: int) -> None:
    """Validate each candidate, resolve identical bytes, copy the kept files; fills result in place."""
    by_hash: dict[str, list[_Copy]] = {}
    checked = check_files([c.path for c in candidates], min_side, max_pixels, workers)
    for candidate, outcome in zip(candidates, checked):
        if isinstance(outcome, str):
            result.skipped.append(SkippedFile(candidate.source, outcome))
        else:
            sha, header = outcome
            by_hash.setdefault(sha, []).append((candidate, header))
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
    by_folder = result.layout != "file_names"
    if empty:
        raise IngestError(
            f"{'class folder(s)' if by_folder else 'class(es)'} {empty} have no valid image "
            f"({len(result.skipped)} file(s) skipped in total; see the dataset report)"
        )
    if len(result.class_names) < 2:
        hint = ("; label_from=folder reads labels from sub-folder names: for labels in file names (cat.0.jpg, "
                "Abyssinian_1.jpg) pass label_from=kaggle or label_from=oxford_pet") if by_folder else ""
        raise IngestError(f"need at least 2 classes, found {result.class_names or 'none'}{hint}")


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
        "overrides": result.overrides,
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
    if report.get("overrides"):
        lines += overrides_markdown(report["overrides"])
    return "\n".join(lines) + "\n"
