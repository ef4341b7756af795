"""feedback_uri: photos validated in the feedback app join the data (ingest, report, split, evaluate).

The feedback app publishes <feedback_uri>/dataset/<label>/<sha256>.<ext> plus dataset/manifest.json;
publish_feedback() below writes that layout from synthetic images (tests.helpers), nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from catdog import storage
from catdog.dataset import (
    SPLITS,
    SplitRatios,
    feedback_split,
    load_metadata,
    split_dataset,
    split_origins,
    write_dataset,
)
from catdog.evaluation import classification_metrics, metrics_by_origin, subset_metrics
from catdog.ingest import (
    ImageRecord,
    IngestError,
    IngestResult,
    build_report,
    class_counts,
    ingest_dataset,
    load_manifest,
    report_markdown,
)
from catdog.onnx_predictor import OnnxPredictor
from catdog.preprocessing import EXTENSIONS
from tests.helpers import CLASS_COLORS, IMAGES_PER_CLASS, image_bytes, make_class_folders
from tests.model_fixtures import load_split_arrays
from tests.serving_fixtures import tiny_model_dir

DEFAULT = SplitRatios(0.7, 0.2, 0.1)
BASE = {"cat": IMAGES_PER_CLASS, "dog": IMAGES_PER_CLASS}


def add_feedback_photo(feedback_uri: Path, label: str, data: bytes, fmt: str = "JPEG") -> str:
    """Publish one photo as the feedback app does; returns its source in the ingest result."""
    name = f"{hashlib.sha256(data).hexdigest()}{EXTENSIONS[fmt]}"
    path = Path(feedback_uri) / "dataset" / label / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"feedback:{label}/{name}"


def publish_feedback(feedback_uri: Path, counts: dict[str, int], seed: int = 7) -> Path:
    """<feedback_uri>/dataset/<label>/<sha256>.jpg (distinct from make_class_folders' images) and the
    app's dataset/manifest.json."""
    photos = []
    for c, (label, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            data = image_bytes("JPEG", seed=seed * 100_000 + 50_000 + c * 1000 + i, color=CLASS_COLORS.get(label))
            photos.append({"source": add_feedback_photo(feedback_uri, label, data), "from": "upload"})
    manifest = Path(feedback_uri) / "dataset" / "manifest.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"photos": photos}))
    return Path(feedback_uri)


def run_ingest(source, tmp_path: Path, name: str = "out", **kwargs) -> IngestResult:
    return ingest_dataset(str(source), tmp_path / name, cache_dir=tmp_path / "cache", **kwargs)


def skipped(result: IngestResult) -> dict[str, str]:
    return {s.source: s.reason for s in result.skipped}


def by_origin(result: IngestResult, origin: str) -> list[ImageRecord]:
    return [r for r in result.images if r.origin == origin]


# --- ingest --------------------------------------------------------------------------------------

def test_feedback_photos_added_and_counted_per_origin(image_folder, tmp_path):
    feedback = publish_feedback(tmp_path / "feedback", {"cat": 3, "dog": 2})
    result = run_ingest(image_folder, tmp_path, feedback_uri=str(feedback))
    assert result.skipped == [] and result.notes == []
    assert class_counts(result) == {"cat": IMAGES_PER_CLASS + 3, "dog": IMAGES_PER_CLASS + 2}
    assert Counter(r.label for r in by_origin(result, "feedback")) == {"cat": 3, "dog": 2}
    for rec in by_origin(result, "feedback"):
        assert rec.source == f"feedback:{rec.label}/{rec.sha256}.jpg"
        assert rec.source_split is None
        assert (tmp_path / "out" / rec.file).read_bytes() == (feedback / "dataset" / rec.source[9:]).read_bytes()
    assert all(r.source.startswith(f"{r.label}/") for r in by_origin(result, "data"))
    assert load_manifest(tmp_path / "out") == result  # origins survive the manifest

    report = build_report(result, str(image_folder), str(feedback))
    assert report["feedback_uri"] == str(feedback)
    assert report["class_counts_by_origin"] == {"data": BASE, "feedback": {"cat": 3, "dog": 2}}
    assert report["class_counts_by_source_split"] == {"all": BASE}  # the data's own splits
    assert report["n_images_by_origin"] == {"data": 2 * IMAGES_PER_CLASS, "feedback": 5}
    json.dumps(report)
    markdown = report_markdown(report)
    assert f"Feedback: `{feedback}`: 5 photos kept, 0 skipped" in markdown
    assert "| class | images | data | feedback |" in markdown
    assert f"| cat | {IMAGES_PER_CLASS + 3} | {IMAGES_PER_CLASS} | 3 |" in markdown
    assert f"| dog | {IMAGES_PER_CLASS + 2} | {IMAGES_PER_CLASS} | 2 |" in markdown


def test_fingerprint_changes_with_feedback_and_with_origin(image_folder, tmp_path):
    without = run_ingest(image_folder, tmp_path, "a")
    with_feedback = run_ingest(image_folder, tmp_path, "b",
                               feedback_uri=str(publish_feedback(tmp_path / "feedback", {"cat": 1})))
    assert with_feedback.fingerprint != without.fingerprint
    # the same photos, one of them from feedback instead of the data: another dataset
    first = without.images[0]
    relabelled = IngestResult(without.class_names, without.layout,
                              [dataclasses.replace(first, origin="feedback"), *without.images[1:]])
    assert relabelled.fingerprint != without.fingerprint
    assert IngestResult(without.class_names, without.layout, list(without.images)).fingerprint == without.fingerprint


def test_manifest_at_the_feedback_root_and_writes_in_progress_ignored(image_folder, tmp_path):
    feedback = publish_feedback(tmp_path / "feedback", {"dog": 2})
    (feedback / "dataset" / "README.txt").write_text("published by the feedback app")
    (feedback / "dataset" / "dog" / ".abc.jpg.tmp-x1y2").write_bytes(b"\xff\xd8 half")  # the app writing a photo
    assert (feedback / "dataset" / "manifest.json").is_file()
    result = run_ingest(image_folder, tmp_path, feedback_uri=str(feedback))
    assert result.skipped == []
    assert len(by_origin(result, "feedback")) == 2
    assert not any("manifest" in r.source or "README" in r.source for r in result.images)


def test_duplicate_of_a_data_photo_kept_once_the_data_copy_wins(image_folder, tmp_path):
    feedback = publish_feedback(tmp_path / "feedback", {"cat": 1})
    source = add_feedback_photo(feedback, "cat", (image_folder / "cat" / "cat_003.jpg").read_bytes())
    result = run_ingest(image_folder, tmp_path, feedback_uri=str(feedback))
    assert skipped(result) == {source: "exact duplicate of cat/cat_003.jpg"}
    kept = {r.source: r for r in result.images}
    assert kept["cat/cat_003.jpg"].origin == "data"
    assert class_counts(result) == {"cat": IMAGES_PER_CLASS + 1, "dog": IMAGES_PER_CLASS}
    assert len({r.sha256 for r in result.images}) == len(result.images)
    report = build_report(result, "data", str(feedback))
    assert report["n_skipped_by_origin"] == {"data": 0, "feedback": 1}
    assert f"| `{source}` | exact duplicate of cat/cat_003.jpg |" in report_markdown(report)


def test_feedback_label_conflicting_with_the_data_kept_out_and_reported(image_folder, tmp_path):
    feedback = publish_feedback(tmp_path / "feedback", {"cat": 1})
    source = add_feedback_photo(feedback, "dog", (image_folder / "cat" / "cat_004.jpg").read_bytes())
    result = run_ingest(image_folder, tmp_path, feedback_uri=str(feedback))
    reason = skipped(result)[source]
    assert reason.startswith("label conflict") and "['cat']" in reason and "cat/cat_004.jpg" in reason
    assert source not in {r.source for r in result.images}
    # the data's copy stays, so the data and its split are what they are without feedback
    assert {r.source: r.label for r in result.images}["cat/cat_004.jpg"] == "cat"
    assert class_counts(result) == {"cat": IMAGES_PER_CLASS + 1, "dog": IMAGES_PER_CLASS}


def test_conflict_within_feedback_keeps_every_copy_out(image_folder, tmp_path):
    data = image_bytes(seed=4242, color=CLASS_COLORS["cat"])
    sources = [add_feedback_photo(tmp_path / "feedback", label, data) for label in ("cat", "dog")]
    result = run_ingest(image_folder, tmp_path, feedback_uri=str(tmp_path / "feedback"))
    assert set(skipped(result)) == set(sources)
    assert all(reason.startswith("label conflict: identical bytes under ['cat', 'dog']")
               for reason in skipped(result).values())
    assert by_origin(result, "feedback") == []


def test_feedback_folder_with_an_unknown_label_skipped_with_reason(image_folder, tmp_path):
    feedback = publish_feedback(tmp_path / "feedback", {"bird": 2, "cat": 1})
    (feedback / "dataset" / "bird" / "junk.jpg").write_bytes(b"not an image")
    result = run_ingest(image_folder, tmp_path, feedback_uri=str(feedback))
    assert result.class_names == ["cat", "dog"]
    bird = {s: r for s, r in skipped(result).items() if s.startswith("feedback:bird/")}
    assert len(bird) == 3
    assert set(bird.values()) == {"feedback label 'bird' is not a class of the data ['cat', 'dog']"}
    assert Counter(r.label for r in by_origin(result, "feedback")) == {"cat": 1}
    assert len(result.skipped) == 3


def test_invalid_feedback_photo_skipped_like_a_data_photo(image_folder, tmp_path):
    feedback = publish_feedback(tmp_path / "feedback", {"cat": 1})
    tiny = add_feedback_photo(feedback, "dog", image_bytes(size=(20, 20), seed=31))
    (feedback / "dataset" / "dog" / "empty.png").write_bytes(b"")
    result = run_ingest(image_folder, tmp_path, feedback_uri=str(feedback), min_side=32)
    assert skipped(result) == {tiny: "too small: 20x20, minimum side is 32px",
                               "feedback:dog/empty.png": "empty file (0 bytes)"}


def test_label_map_applies_to_feedback_folders(tmp_path):
    source = make_class_folders(tmp_path / "src", {"cats": 3, "dogs": 3})
    feedback = publish_feedback(tmp_path / "feedback", {"cat": 1, "dogs": 2})
    result = run_ingest(source, tmp_path, feedback_uri=str(feedback), label_map={"cats": "cat", "dogs": "dog"})
    assert result.skipped == []
    assert Counter(r.label for r in by_origin(result, "feedback")) == {"cat": 1, "dog": 2}
    assert all(Path(r.file).parent.name == r.label for r in result.images)


@pytest.mark.parametrize("state", ["missing", "only-manifest", "empty-class-folder"])
def test_no_feedback_photo_yet_is_reported_not_fatal(image_folder, tmp_path, state):
    feedback = tmp_path / "feedback"
    if state == "only-manifest":
        (feedback / "dataset").mkdir(parents=True)
        (feedback / "dataset" / "manifest.json").write_text("{}")
    elif state == "empty-class-folder":
        (feedback / "dataset" / "cat").mkdir(parents=True)
    result = run_ingest(image_folder, tmp_path, feedback_uri=str(feedback))
    note = f"feedback: no photos under {feedback / 'dataset'} yet"
    assert result.notes == [note]
    assert result.images == run_ingest(image_folder, tmp_path, "plain").images
    assert load_manifest(tmp_path / "out").notes == [note]
    report = build_report(result, str(image_folder), str(feedback))
    assert report["notes"] == [note] and report["class_counts_by_origin"]["feedback"] == {"cat": 0, "dog": 0}
    assert f"- {note}" in report_markdown(report)


def test_bad_feedback_uris_fail_clearly(image_folder, tmp_path):
    with pytest.raises(IngestError, match="unsupported feedback URI 's3://b/f'"):
        run_ingest(image_folder, tmp_path, feedback_uri="s3://b/f")
    (tmp_path / "file").write_text("x")
    with pytest.raises(IngestError, match="is a file, not a folder"):
        run_ingest(image_folder, tmp_path, feedback_uri=str(tmp_path / "file"))


def test_feedback_from_gcs(image_folder, tmp_path, gcs):
    local = publish_feedback(tmp_path / "feedback", {"cat": 2, "dog": 3})
    storage.upload_tree(local, gcs.uri("feedback"))
    from_gcs = run_ingest(image_folder, tmp_path, "gcs", feedback_uri=gcs.uri("feedback"))
    from_folder = run_ingest(image_folder, tmp_path, "local", feedback_uri=str(local))
    assert from_gcs.skipped == [] and from_gcs.notes == []
    assert from_gcs.images == from_folder.images
    assert Counter(r.label for r in by_origin(from_gcs, "feedback")) == {"cat": 2, "dog": 3}
    assert all((tmp_path / "gcs" / r.file).is_file() for r in from_gcs.images)

    empty = run_ingest(image_folder, tmp_path, "empty", feedback_uri=gcs.uri("nobody-yet"))
    assert empty.notes == [f"feedback: no photos under {gcs.uri('nobody-yet', 'dataset')} yet"]


def test_gcs_data_and_gcs_feedback_together(tmp_path, gcs):
    """Both sources download into the same scratch folder: they must not mix."""
    storage.upload_tree(make_class_folders(tmp_path / "data", {"cat": 3, "dog": 3}), gcs.uri("data"))
    storage.upload_tree(publish_feedback(tmp_path / "feedback", {"dog": 2}), gcs.uri("feedback"))
    result = run_ingest(gcs.uri("data"), tmp_path, feedback_uri=gcs.uri("feedback"))
    assert result.class_names == ["cat", "dog"] and result.skipped == []
    assert {o: Counter(r.label for r in by_origin(result, o)) for o in ("data", "feedback")} == {
        "data": {"cat": 3, "dog": 3}, "feedback": {"dog": 2}}


# --- split ---------------------------------------------------------------------------------------

def data_shas(parts: dict[str, list[ImageRecord]]) -> dict[str, list[str]]:
    """The data's photos of each split, in order."""
    return {split: [r.sha256 for r in records if r.origin == "data"] for split, records in parts.items()}


def test_data_split_unchanged_when_feedback_is_added(tmp_path):
    source = make_class_folders(tmp_path / "data", {"cat": 12, "dog": 12})
    feedback = publish_feedback(tmp_path / "feedback", {"cat": 8, "dog": 8})
    add_feedback_photo(feedback, "cat", (source / "cat" / "cat_001.jpg").read_bytes())  # a duplicate
    add_feedback_photo(feedback, "cat", (source / "dog" / "dog_002.jpg").read_bytes())  # a conflict
    ratios = SplitRatios(0.5, 0.25, 0.25)
    without, _ = split_dataset(run_ingest(source, tmp_path, "a"), ratios, seed=3)
    with_feedback, policy = split_dataset(run_ingest(source, tmp_path, "b", feedback_uri=str(feedback)), ratios, seed=3)
    assert data_shas(with_feedback) == data_shas(without)
    assert sum(r.origin == "feedback" for s in SPLITS for r in with_feedback[s]) == 16
    assert "hash of (seed, sha256)" in policy and "split never changes" in policy


def feedback_records(n: int, start: int = 0, labels=("cat", "dog")) -> list[ImageRecord]:
    records = []
    for i in range(start, start + n):
        sha = hashlib.sha256(f"feedback-{i}".encode()).hexdigest()
        label = labels[i % len(labels)]
        records.append(ImageRecord(f"images/{label}/{sha[:24]}.jpg", label, f"feedback:{label}/{sha}.jpg", None,
                                   sha, 64, 48, "JPEG", "feedback"))
    return records


def data_records(labels=("cat", "dog"), n: int = 30, source_split: str | None = None) -> list[ImageRecord]:
    records = []
    for label in labels:
        for i in range(n):
            sha = hashlib.sha256(f"data-{label}-{source_split}-{i}".encode()).hexdigest()
            records.append(ImageRecord(f"images/{label}/{sha[:24]}.jpg", label, f"{label}/{i}.jpg", source_split,
                                       sha, 64, 48, "JPEG"))
    return records


def split_of(parts: dict[str, list[ImageRecord]]) -> dict[str, str]:
    return {r.sha256: split for split, records in parts.items() for r in records}


def test_feedback_split_is_stable_as_more_feedback_arrives():
    data = data_records()
    first, _ = split_dataset(IngestResult(["cat", "dog"], "class_folders", data + feedback_records(40)), DEFAULT, 5)
    later, _ = split_dataset(
        IngestResult(["cat", "dog"], "class_folders", data + feedback_records(40) + feedback_records(60, start=40)),
        DEFAULT, 5)
    before, after = split_of(first), split_of(later)
    assert {sha: after[sha] for sha in before} == before  # no photo moved: none from test into train
    assert data_shas(later) == data_shas(first)
    moved = split_of(split_dataset(IngestResult(["cat", "dog"], "class_folders", data + feedback_records(40)),
                                   DEFAULT, 6)[0])
    assert moved != before  # the seed is part of the hash


def test_feedback_split_follows_the_ratios():
    records = feedback_records(3000)
    shares = Counter(feedback_split(r.sha256, DEFAULT, 42) for r in records)
    for split, ratio in zip(SPLITS, (DEFAULT.train, DEFAULT.validation, DEFAULT.test)):
        assert abs(shares[split] / len(records) - ratio) < 0.03, shares


def test_feedback_in_a_train_validation_source_uses_all_three_ratios():
    data = data_records(("cats", "dogs"), 20, "train") + data_records(("cats", "dogs"), 5, "validation")
    feedback = feedback_records(200, labels=("cats", "dogs"))
    plain, _ = split_dataset(IngestResult(["cats", "dogs"], "train_validation", data), DEFAULT, 1)
    parts, policy = split_dataset(IngestResult(["cats", "dogs"], "train_validation", data + feedback), DEFAULT, 1)
    assert data_shas(parts) == data_shas(plain)
    assert all(r.source_split == "validation" for r in parts["test"] if r.origin == "data")
    per_split = Counter(split_of(parts)[r.sha256] for r in feedback)
    assert set(per_split) == set(SPLITS) and per_split["test"] >= 10  # ~10% of 200
    assert "validation/ folder is the held-out test split" in policy and "0.7/0.2/0.1" in policy


def test_empty_split_check_counts_feedback_too():
    data = data_records(n=3)  # 3 per class at 0.8/0.1/0.1: no cat or dog left for validation and test
    with pytest.raises(ValueError, match="split leaves no image in"):
        split_dataset(IngestResult(["cat", "dog"], "class_folders", data), SplitRatios(0.8, 0.1, 0.1), 0)
    parts, _ = split_dataset(IngestResult(["cat", "dog"], "class_folders", data + feedback_records(400)),
                             SplitRatios(0.8, 0.1, 0.1), 0)
    assert all(any(r.label == c for r in parts[s]) for s in SPLITS for c in ("cat", "dog"))


# --- written dataset and evaluation --------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Data (8 per class) plus 30 feedback photos, ingested and written at 32 px: (ingest dir,
    dataset dir, ingest result, metadata)."""
    root = tmp_path_factory.mktemp("feedback-dataset")
    source = make_class_folders(root / "data", {"cat": 8, "dog": 8})
    feedback = publish_feedback(root / "feedback", {"cat": 15, "dog": 15})
    result = ingest_dataset(str(source), root / "ingested", cache_dir=root / "cache", feedback_uri=str(feedback))
    metadata = write_dataset(result, root / "ingested", root / "dataset", SplitRatios(0.5, 0.25, 0.25), 32, 0, 10**6)
    return root / "ingested", root / "dataset", result, metadata


def test_metadata_records_origins_per_split(built):
    _, dataset_dir, result, metadata = built
    origin_of = {r.sha256: r.origin for r in result.images}
    assert load_metadata(dataset_dir) == metadata
    for split in SPLITS:
        info = metadata["splits"][split]
        assert info["origins"] == [origin_of[sha] for sha in info["sha256"]]
        assert info["feedback_count"] == info["origins"].count("feedback")
        assert split_origins(metadata, split) == info["origins"]
    assert sum(metadata["splits"][s]["feedback_count"] for s in SPLITS) == 30
    assert metadata["splits"]["test"]["feedback_count"] > 0
    assert "feedback photo" in metadata["split_policy"]


def test_split_origins_of_a_dataset_written_before_feedback():
    old = {"splits": {"test": {"count": 3, "sha256": ["a", "b", "c"]}}}
    assert split_origins(old, "test") == ["data"] * 3


def test_subset_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 1])
    p_dog = np.array([0.2, 0.7, 0.9, 0.4, 0.8])  # predicted 0, 1, 1, 0, 1
    probabilities = np.stack([1 - p_dog, p_dog], axis=1)
    mask = np.array([False, True, True, True, False])  # labels 0, 1, 1 predicted 1, 1, 0
    assert subset_metrics(labels, probabilities, mask, "feedback") == {
        "feedback_n": 3, "feedback_accuracy": pytest.approx(1 / 3)}
    assert subset_metrics(labels, probabilities, np.zeros(5, bool), "feedback") == {"feedback_n": 0}
    with pytest.raises(ValueError, match="mask of shape"):
        subset_metrics(labels, probabilities, mask[:4], "feedback")


def test_metrics_by_origin_on_a_real_model(built):
    _, dataset_dir, _, metadata = built
    predictor = OnnxPredictor(tiny_model_dir())
    pixels, labels = load_split_arrays(dataset_dir, "test")
    origins = split_origins(metadata, "test")
    result = metrics_by_origin(labels, predictor.predict_pixels(pixels), predictor.class_names, origins)
    whole = classification_metrics(labels, predictor.predict_pixels(pixels), predictor.class_names)
    for key in ("n", "accuracy", "precision", "recall", "f1", "confusion_matrix"):
        assert result[key] == whole[key], key
    mask = np.array(origins) == "feedback"
    expected = float(np.mean(predictor.predict_pixels(pixels[mask]).argmax(axis=1) == labels[mask]))
    assert result["feedback_n"] == metadata["splits"]["test"]["feedback_count"] == int(mask.sum())
    assert result["feedback_accuracy"] == pytest.approx(expected)


def run_evaluate_component(model_dir: Path, ingest_dir: Path, dataset_dir: Path, out: Path):
    from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model

    from components.evaluate import evaluate

    out.mkdir(parents=True, exist_ok=True)
    metrics = Metrics(uri=str(out / "metrics"))
    evaluation = Artifact(uri=str(out / "evaluation"))
    gallery, reliability = HTML(uri=str(out / "gallery")), HTML(uri=str(out / "reliability"))
    evaluate.python_func(model=Model(uri=str(model_dir)), ingested=Dataset(uri=str(ingest_dir)),
                         dataset=Dataset(uri=str(dataset_dir)), metrics=metrics,
                         classification=ClassificationMetrics(uri=str(out / "classification")), evaluation=evaluation,
                         gallery=gallery, reliability=reliability)
    assert "Where the model looks" in Path(gallery.path).read_text()
    assert "<title>Reliability diagram</title>" in Path(reliability.path).read_text()
    return metrics.metadata, json.loads(Path(evaluation.path).read_text())


def test_evaluate_component_logs_feedback_metrics(built, tmp_path):
    ingest_dir, dataset_dir, _, metadata = built
    logged, evaluation = run_evaluate_component(tiny_model_dir(), ingest_dir, dataset_dir, tmp_path)
    assert logged["feedback_n"] == evaluation["feedback_n"] == metadata["splits"]["test"]["feedback_count"]
    assert 0.0 <= logged["feedback_accuracy"] <= 1.0
    assert logged["feedback_accuracy"] == evaluation["feedback_accuracy"]
    assert logged["n"] == metadata["splits"]["test"]["count"]
    # the same photos, the same preprocessing as select-champion's scoring of the champion
    from catdog.champion import test_split_files
    from catdog.evaluation import evaluate_files

    predictor = OnnxPredictor(tiny_model_dir())
    files = [(path, predictor.class_names.index(label)) for path, label in test_split_files(ingest_dir, dataset_dir)]
    assert evaluate_files(predictor, files)["confusion_matrix"] == evaluation["confusion_matrix"]
    assert len(evaluation["test_confidences"]) == evaluation["n"]


def test_evaluate_component_without_feedback_logs_feedback_n_0(tmp_path):
    from tests.model_fixtures import make_dataset

    dataset = make_dataset(tmp_path / "plain")
    logged, evaluation = run_evaluate_component(tiny_model_dir(), dataset.ingest_dir, dataset.dataset_dir, tmp_path / "eval")
    assert logged["feedback_n"] == evaluation["feedback_n"] == 0
    assert "feedback_accuracy" not in logged and "feedback_accuracy" not in evaluation
    assert logged["n"] == dataset.metadata["splits"]["test"]["count"]


def test_ingest_component_before_any_feedback(image_folder, tmp_path, monkeypatch, capsys):
    """A scheduled run before anyone validated a photo: ingest succeeds and says so."""
    from kfp.dsl import Artifact, Dataset, Markdown

    from components.ingest import ingest

    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path / "cache"))
    dataset, report = Dataset(uri=str(tmp_path / "dataset")), Markdown(uri=str(tmp_path / "report"))
    ingest.python_func(data_uri=str(image_folder), feedback_uri=str(tmp_path / "feedback"), label_from="folder",
                       label_map="", min_image_side=32, max_image_pixels=10**6, dataset=dataset, report=report,
                       report_json=Artifact(uri=str(tmp_path / "report.json")))
    note = f"feedback: no photos under {tmp_path / 'feedback' / 'dataset'} yet"
    assert note in capsys.readouterr().out
    assert f"- {note}" in Path(report.path).read_text()
    assert dataset.metadata["n_feedback"] == 0 and dataset.metadata["n_images"] == 2 * IMAGES_PER_CLASS

    publish_feedback(tmp_path / "feedback", {"cat": 2})
    shutil.rmtree(tmp_path / "dataset")
    dataset = Dataset(uri=str(tmp_path / "dataset"))
    ingest.python_func(data_uri=str(image_folder), feedback_uri=str(tmp_path / "feedback"), label_from="folder",
                       label_map="", min_image_side=32, max_image_pixels=10**6, dataset=dataset, report=report,
                       report_json=Artifact(uri=str(tmp_path / "report.json")))
    assert dataset.metadata["n_feedback"] == 2
    assert json.loads((tmp_path / "report.json").read_text())["class_counts_by_origin"]["feedback"] == {
        "cat": 2, "dog": 0}
