"""End to end: the whole pipeline on kfp.local's SubprocessRunner, on synthetic images.

The configuration is as small as the pipeline allows (32 px, random init, one epoch per phase) so
the run stays short. Assertions look task folders up by name under the run folder and check only
the data steps' outputs (the data plus a few feedback-app photos) and evaluate's feedback metrics,
so the test stays valid as steps are added after them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from catdog.dataset import SplitRatios, feedback_split
from catdog.progress import ProgressWriter, read_events, read_progress
from pipelines.config import PipelineConfig, build_config
from pipelines.local import describe_outputs, run_local
from tests.helpers import CLASS_COLORS, image_bytes, make_class_folders

PER_CLASS = {"cat": 12, "dog": 12}
FEEDBACK = {"cat": 3, "dog": 3}  # as the feedback app publishes them: <feedback_uri>/dataset/<label>/<sha256>.jpg
pytestmark = [
    # kfp.local says these when it runs container settings in a subprocess; expected here
    pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Task .* have no effect in the current local runner:UserWarning"),
]


def task_dir(run_dir: Path, name: str) -> Path:
    """The output folder of the task called `name` (kfp.local: <run>/<task name>/<output>)."""
    matches = [p for p in run_dir.iterdir() if p.is_dir() and p.name == name]
    assert matches, f"no task folder {name!r} in {sorted(p.name for p in run_dir.iterdir())}"
    return matches[0]


def publish_feedback(feedback_uri: Path) -> None:
    """FEEDBACK photos as the feedback app publishes them, the first cat one of those the split
    puts in test (default seed and ratios), so that evaluate has a feedback photo to score."""
    defaults = PipelineConfig()
    ratios = SplitRatios(defaults.train_split, defaults.val_split, defaults.test_split)
    for label, n in FEEDBACK.items():
        photos = [image_bytes(seed=900 + i, color=CLASS_COLORS[label]) for i in range(40)]
        if label == "cat":
            photos.sort(key=lambda p: feedback_split(hashlib.sha256(p).hexdigest(), ratios, defaults.seed) != "test")
        (feedback_uri / "dataset" / label).mkdir(parents=True)
        for photo in photos[:n]:
            (feedback_uri / "dataset" / label / f"{hashlib.sha256(photo).hexdigest()}.jpg").write_bytes(photo)
    (feedback_uri / "dataset" / "manifest.json").write_text("{}")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("local_run")
    data = make_class_folders(root / "data", PER_CLASS)
    (data / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (data / "cat" / "empty.png").write_bytes(b"")
    publish_feedback(root / "feedback")
    config = build_config(
        {
            "data_uri": str(data),
            "feedback_uri": str(root / "feedback"),
            "image_size": "32",
            "weights": "none",
            "frozen_epochs": "1",
            "finetune_epochs": "1",
            "batch_size": "8",
            "registry_uri": str(root / "registry"),
        }
    )
    run_dir = run_local(config, root / "outputs", ProgressWriter(root / "progress.jsonl"))
    return run_dir, root


@pytest.mark.slow
def test_local_run_ingest_outputs(local_run):
    run_dir, root = local_run
    assert run_dir.parent == root / "outputs"
    ingest_dir = task_dir(run_dir, "ingest")
    report = json.loads((ingest_dir / "report_json").read_text())
    assert report["class_counts_by_origin"] == {"data": PER_CLASS, "feedback": FEEDBACK}
    assert report["feedback_uri"] == str(root / "feedback")
    assert report["n_skipped"] == 2
    assert {s["source"] for s in report["skipped"]} == {"dog/broken.jpg", "cat/empty.png"}
    markdown = (ingest_dir / "report").read_text()
    assert "| `cat/empty.png` | empty file (0 bytes) |" in markdown
    assert "30 images kept, 2 skipped" in markdown
    assert f"Feedback: `{root / 'feedback'}`: 6 photos kept, 0 skipped" in markdown
    manifest = json.loads((ingest_dir / "dataset" / "manifest.json").read_text())
    assert len(manifest["images"]) == 30
    for image in manifest["images"]:
        assert (ingest_dir / "dataset" / image["file"]).is_file()


@pytest.mark.slow
def test_local_run_preprocess_outputs(local_run):
    run_dir, _ = local_run
    dataset_dir = task_dir(run_dir, "preprocess") / "dataset"
    metadata = json.loads((dataset_dir / "dataset.json").read_text())
    assert metadata["image_size"] == 32
    assert metadata["class_names"] == ["cat", "dog"]
    data_counts = {split: info["count"] - info["feedback_count"] for split, info in metadata["splits"].items()}
    assert data_counts == {"train": 18, "validation": 4, "test": 2}  # 12 per class -> 9/2/1 each
    assert sum(info["feedback_count"] for info in metadata["splits"].values()) == 6
    ingest_report = json.loads((task_dir(run_dir, "ingest") / "report_json").read_text())
    assert metadata["fingerprint"] == ingest_report["fingerprint"]
    for info in metadata["splits"].values():
        assert all((dataset_dir / shard).stat().st_size > 0 for shard in info["shards"])


@pytest.mark.slow
def test_local_run_evaluates_the_feedback_photos_of_the_test_split(local_run):
    run_dir, _ = local_run
    metadata = json.loads((task_dir(run_dir, "preprocess") / "dataset" / "dataset.json").read_text())
    evaluation = json.loads((task_dir(run_dir, "evaluate") / "evaluation").read_text())
    assert evaluation["n"] == metadata["splits"]["test"]["count"]
    assert evaluation["feedback_n"] == metadata["splits"]["test"]["feedback_count"] >= 1
    executor_output = json.loads((task_dir(run_dir, "evaluate") / "executor_output.json").read_text())
    (logged,) = executor_output["artifacts"]["metrics"]["artifacts"]
    assert logged["metadata"]["feedback_n"] == evaluation["feedback_n"]
    assert logged["metadata"]["feedback_accuracy"] == evaluation["feedback_accuracy"]


@pytest.mark.slow
def test_local_run_evaluate_writes_the_gallery(local_run):
    """Every test photo is on the page: all the wrong ones and a sample of up to 12 right ones."""
    run_dir, _ = local_run
    evaluation = json.loads((task_dir(run_dir, "evaluate") / "evaluation").read_text())
    page = (task_dir(run_dir, "evaluate") / "gallery").read_text()
    assert "<title>Where the model looks</title>" in page
    assert page.count('src="data:image/jpeg;base64,') == evaluation["n"] <= 12


@pytest.mark.slow
def test_local_run_lists_label_issues_from_the_train_steps_features(local_run):
    """train writes the frozen phase's features of every train and validation photo; label-issues
    reads them (no backbone of its own) and writes the JSON list and the page."""
    from catdog.dataset import load_split_features

    run_dir, _ = local_run
    metadata = json.loads((task_dir(run_dir, "preprocess") / "dataset" / "dataset.json").read_text())
    features = load_split_features(task_dir(run_dir, "train") / "features")
    for split in ("train", "validation"):
        assert features[f"{split}_sha256"].tolist() == metadata["splits"][split]["sha256"]
        assert features[f"{split}_features"].shape == (metadata["splits"][split]["count"], 1280)
    entries = json.loads((task_dir(run_dir, "label-issues") / "suspects").read_text())
    assert entries, "at least the outliers are listed"
    splits = {sha: split for split in ("train", "validation") for sha in metadata["splits"][split]["sha256"]}
    for entry in entries:
        assert splits[entry["sha256"]] == entry["split"] and entry["reasons"]
        assert set(entry["probabilities"]) == {"cat", "dog"}
    page = (task_dir(run_dir, "label-issues") / "report").read_text()
    assert "<title>Training photos to check</title>" in page and "data:image/jpeg;base64," in page


@pytest.mark.slow
def test_local_run_without_a_run_id_records_the_services_id_of_the_run(local_run):
    """run_id '' (as a schedule passes it): select-champion records the id kfp.local gives the run
    ({{$.pipeline_job_uuid}}), and the decision is found by it, as a scheduled run's on KFP/Vertex."""
    from catdog.registry import decision_of_run

    run_dir, root = local_run
    decision = json.loads((task_dir(run_dir, "select-champion") / "decision_json").read_text())
    assert decision["run_id"] == decision["pipeline_job"]["id"] and decision["run_id"].isdigit()
    assert decision["pipeline_job"]["name"] == run_dir.name  # kfp.local's name of the run: its folder
    assert decision_of_run(str(root / "registry"), decision["run_id"]) == decision
    assert decision["history_record"].endswith(f".run-{decision['run_id']}.json")


@pytest.mark.slow
def test_local_run_describe_outputs(local_run):
    run_dir, _ = local_run
    text = describe_outputs(run_dir)
    assert text.splitlines()[0] == f"run outputs: {run_dir}"
    assert f"preprocess.dataset: {run_dir / 'preprocess' / 'dataset'}" in text
    # HTML and Markdown outputs through a link with their extension, so a browser renders them
    for task, output, suffix in [("ingest", "report", ".md"), ("evaluate", "gallery", ".html"),
                                 ("train", "curves", ".html"), ("select-champion", "decision", ".md"),
                                 ("label-issues", "report", ".html")]:
        link = run_dir / task / f"{output}{suffix}"
        assert f"{task}.{output}: {link}\n" in text + "\n"
        assert link.is_symlink() and link.resolve() == (run_dir / task / output).resolve()
    evaluation = json.loads((task_dir(run_dir, "evaluate") / "evaluation").read_text())
    assert f"test ({evaluation['n']} photos): accuracy {evaluation['accuracy']:.3f}, " in text


@pytest.mark.slow
def test_local_run_progress_moves_forward_step_by_step(local_run):
    """The progress file of the run: every step started and succeeded in order (the first run is promoted,
    so deploy ran too), the train step's features and epochs inside it; what the app and make run show."""
    from pipelines.training_pipeline import STEPS

    _, root = local_run
    events = read_events(root / "progress.jsonl")
    assert events[0]["event"] == "run" and events[0]["steps"] == list(STEPS)
    pairs = [(e["step"], e["status"]) for e in events if e["event"] == "step"]
    order = [step for step, status in pairs if status == "started"]
    # one step at a time, each started then succeeded; evaluate and label-issues both follow train
    # and precede select-champion, in either order (kfp.local picks one)
    assert pairs == [(step, status) for step in order for status in ("started", "succeeded")]
    assert sorted(order) == sorted(STEPS) and order[:3] == list(STEPS[:3]) and order[-2:] == list(STEPS[-2:])
    assert set(order[3:5]) == {"evaluate", "label-issues"}
    train = events[events.index(next(e for e in events if e.get("step") == "train")):]
    inner = [e for e in train if e["event"] in ("phase", "epoch")]
    kinds = [(e["event"], e["phase"]) for e in inner]
    assert [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]] == [  # a features event every few seconds
        ("phase", "features"), ("epoch", "frozen"), ("epoch", "fine-tuning"), ("phase", "export")]
    features = [e for e in inner if e["phase"] == "features"]
    assert features[0]["done"] == 0 and features[-1]["done"] == features[-1]["total"] == features[0]["total"] > 0
    assert [e["done"] for e in features] == sorted(e["done"] for e in features)
    assert all(e["step"] == "train" and e["epochs"] == 1 and "eta_s" in e for e in inner if e["event"] == "epoch")
    done = []
    for n in range(1, len(events) + 1):  # replayed line by line: never fewer steps done than before
        (root / "replay.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events[:n]))
        done.append(read_progress(root / "replay.jsonl").steps_done)
    assert done == sorted(done) and done[-1] == len(STEPS)
