"""Champion selection: the decision rule, and re-scoring the champion on the challenger's test photos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import catdog.champion as champion_module
from catdog.champion import COMPARED_METRICS, decide, decision_markdown, select_champion
from catdog.evaluation import evaluate_files
from catdog.onnx_predictor import OnnxPredictor
from catdog.registry import ModelRegistry
from tests.model_fixtures import make_dataset
from tests.serving_fixtures import tiny_model_dir, variant_of

# catdog.champion.test_split_files is used through the module: imported by name, pytest would
# collect it as a test.
split_files = champion_module.test_split_files


def scores(accuracy: float, **others) -> dict:
    return {"accuracy": accuracy, "precision": 0.5, "recall": 0.5, "f1": 0.5, "auc": 0.5, **others}


# -- decide -----------------------------------------------------------------------------------------
def test_first_model_becomes_champion():
    promoted, reason = decide(scores(0.1), None, "accuracy", 0.05)
    assert promoted is True
    assert "no champion yet" in reason


@pytest.mark.parametrize(
    "challenger, champion, margin, expected",
    [
        (0.90, 0.80, 0.0, True),     # strictly better, no margin
        (0.80, 0.80, 0.0, False),    # a tie keeps the champion
        (0.80001, 0.80, 0.0, True),  # any strict improvement with margin 0
        (0.84, 0.80, 0.05, False),   # better, but within the margin
        (0.85, 0.80, 0.05, False),   # exactly the margin is not "more than"
        (0.86, 0.80, 0.05, True),    # beyond the margin
        (0.70, 0.80, 0.0, False),    # worse
    ],
)
def test_decide_needs_a_strict_win_by_more_than_the_margin(challenger, champion, margin, expected):
    promoted, reason = decide(scores(challenger), scores(champion), "accuracy", margin)
    assert promoted is expected
    assert f"{challenger:.4f}" in reason and f"{champion:.4f}" in reason and str(margin) in reason
    assert ("champion kept" in reason) is (not expected)


def test_decide_uses_the_configured_metric():
    challenger = scores(0.60, f1=0.90)
    champion = scores(0.90, f1=0.80)
    assert decide(challenger, champion, "f1", 0.05)[0] is True
    assert decide(challenger, champion, "accuracy", 0.05)[0] is False


# -- select_champion ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A real ingest + dataset (32 px), the tiny model as champion-to-be, and a distinguishable challenger."""
    root = tmp_path_factory.mktemp("champion")
    built = make_dataset(root, {"cat": 6, "dog": 6}, seed=1)
    champion_dir = tiny_model_dir()
    challenger_dir = variant_of(champion_dir, root / "challenger", architecture="challenger")
    files = split_files(built.ingest_dir, built.dataset_dir)
    champion_metrics = evaluate_files(OnnxPredictor(champion_dir),
                                      [(p, ["cat", "dog"].index(label)) for p, label in files])
    return built, champion_dir, challenger_dir, files, champion_metrics


@pytest.fixture
def spy(monkeypatch):
    """Records every (predictor's model dir, files) evaluate_files is called with in catdog.champion."""
    calls = []

    def recording(predictor, files):
        calls.append((Path(predictor.model_dir), list(files)))
        return evaluate_files(predictor, files)

    monkeypatch.setattr(champion_module, "evaluate_files", recording)
    return calls


def challenger_scores(base: dict, **changes) -> dict:
    return {**{k: base[k] for k in (*COMPARED_METRICS, "n", "class_names")}, **changes}


def test_test_split_files_are_the_test_split(setup):
    import hashlib

    built, *_ = setup
    files = split_files(built.ingest_dir, built.dataset_dir)
    assert len(files) == built.metadata["splits"]["test"]["count"] == 4
    shas = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p, _ in files]
    assert shas == built.metadata["splits"]["test"]["sha256"]  # same photos, same order
    labels = {r.sha256: r.label for r in built.result.images}
    assert [label for _, label in files] == [labels[s] for s in shas]
    assert sorted(label for _, label in files) == ["cat", "cat", "dog", "dog"]


def test_scoring_files_a_batch_at_a_time_gives_the_same_metrics(setup):
    """The evaluate step and champion selection both score the ingest files (score_files), a
    batch at a time: the batch size changes nothing."""
    from catdog.evaluation import classification_metrics, score_files

    built, champion_dir, _, files, champion_metrics = setup
    predictor = OnnxPredictor(champion_dir)
    labelled = [(path, predictor.class_names.index(label)) for path, label in files]
    labels, outputs, skipped = score_files(predictor, labelled, batch_size=1)
    one_by_one = classification_metrics(labels, outputs.probabilities, predictor.class_names)
    for key in COMPARED_METRICS:
        assert one_by_one[key] == pytest.approx(champion_metrics[key], abs=1e-6), key
    assert one_by_one["confusion_matrix"] == champion_metrics["confusion_matrix"]
    assert champion_metrics["n"] == 4 and champion_metrics["skipped"] == 0 and skipped == []


def test_first_challenger_is_promoted_without_scoring(setup, spy, tmp_path):
    _, _, challenger_dir, files, champion_metrics = setup
    registry = ModelRegistry(tmp_path / "registry")
    metrics = challenger_scores(champion_metrics)
    decision = select_champion(registry, challenger_dir, metrics, files, "accuracy", 0.0)
    assert spy == []  # nothing to re-score
    assert decision["promoted"] is True
    assert (decision["challenger_version"], decision["champion_version"]) == (1, 1)
    assert decision["previous_champion_version"] is None and decision["champion"] is None
    assert decision["model_uri"] == registry.version_uri(1)
    assert registry.champion()["version"] == 1 and registry.champion()["score"] == metrics["accuracy"]
    [record] = registry.history()
    assert record == {k: v for k, v in decision.items() if k != "history_record"}
    markdown = decision_markdown(decision)
    assert markdown.startswith("# Champion selection: challenger v1 PROMOTED")
    assert f"| accuracy | {metrics['accuracy']:.4f} | - |" in markdown
    assert "(before: none)" in markdown


def _registry_with_champion(tmp_path, champion_dir) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "registry")
    registry.set_champion(registry.register(champion_dir))
    return registry


def test_champion_is_rescored_on_the_same_test_files(setup, spy, tmp_path):
    _, champion_dir, challenger_dir, files, champion_metrics = setup
    registry = _registry_with_champion(tmp_path, champion_dir)
    metrics = challenger_scores(champion_metrics)  # a tie on every metric
    decision = select_champion(registry, challenger_dir, metrics, files, "accuracy", 0.0)
    # the champion (v1, fetched from the registry) was scored exactly once, on the challenger's photos
    assert len(spy) == 1
    model_dir, scored = spy[0]
    assert model_dir == Path(registry.version_uri(1))
    assert scored == [(path, ["cat", "dog"].index(label)) for path, label in files]
    # both scores are in the decision, the history and the markdown
    expected = {k: champion_metrics[k] for k in COMPARED_METRICS}
    assert decision["champion"] == pytest.approx(expected)
    assert decision["challenger"] == {k: metrics[k] for k in COMPARED_METRICS}
    assert decision["promoted"] is False and "champion kept" in decision["reason"]
    versions = (decision["challenger_version"], decision["champion_version"], decision["previous_champion_version"])
    assert versions == (2, 1, 1)
    assert decision["n_test"] == 4
    [record] = registry.history()
    assert record["champion"] == pytest.approx(expected) and record["challenger"] == decision["challenger"]
    assert json.loads(Path(decision["history_record"]).read_text()) == record
    assert registry.champion_version() == 1 and registry.versions() == [1, 2]  # registered, not promoted
    markdown = decision_markdown(decision)
    assert markdown.startswith("# Champion selection: challenger v2 NOT PROMOTED")
    for key in COMPARED_METRICS:
        assert f"| {key} | {metrics[key]:.4f} | {champion_metrics[key]:.4f} |" in markdown
    assert "Champion now: v1 (before: v1)" in markdown


def test_promotion_needs_more_than_the_margin(setup, tmp_path):
    _, champion_dir, challenger_dir, files, champion_metrics = setup
    registry = _registry_with_champion(tmp_path, champion_dir)
    base = champion_metrics["accuracy"]
    within = select_champion(registry, challenger_dir, challenger_scores(champion_metrics, accuracy=base + 0.04),
                             files, "accuracy", 0.05)
    assert within["promoted"] is False and registry.champion_version() == 1
    beyond = select_champion(registry, challenger_dir, challenger_scores(champion_metrics, accuracy=base + 0.06),
                             files, "accuracy", 0.05)
    assert beyond["promoted"] is True
    assert (beyond["challenger_version"], beyond["champion_version"], beyond["previous_champion_version"]) == (3, 3, 1)
    alias = registry.champion()
    assert alias["version"] == 3 and alias["previous_version"] == 1 and alias["metric"] == "accuracy"
    assert alias["score"] == pytest.approx(base + 0.06)
    assert beyond["champion"]["accuracy"] == pytest.approx(base)  # the old champion's re-scored value
    assert [h["promoted"] for h in sorted(registry.history(), key=lambda h: h["challenger_version"])] == [False, True]


def test_champion_with_other_classes_cannot_be_scored(setup, spy, tmp_path):
    _, champion_dir, challenger_dir, files, champion_metrics = setup
    registry = ModelRegistry(tmp_path / "registry")
    other = variant_of(champion_dir, tmp_path / "birds", class_names=["bird", "fish"])
    registry.set_champion(registry.register(other))
    decision = select_champion(registry, challenger_dir, challenger_scores(champion_metrics), files, "accuracy", 0.0)
    assert spy == []
    assert decision["champion"] is None
    assert "champion v1 predicts ['bird', 'fish']" in decision["reason"]
    assert "cannot be scored" in decision["reason"]


def test_the_runs_suspects_are_recorded_in_the_registry_and_named_by_the_alias(setup, tmp_path):
    """select_champion copies the label-issues list and its photos beside the version; the decision and
    the champion alias carry the URI (catdog.suspects), so the app finds the champion's suspects."""
    from catdog.suspects import photo_uri, read_suspects, suspects_of_champion

    built, _, challenger_dir, files, champion_metrics = setup
    records = built.result.images[:2]
    entries = [{"rank": i + 1, "sha256": r.sha256, "split": "train", "origin": r.origin, "source": r.source,
                "file": r.file, "given_label": r.label, "probabilities": {"cat": 0.1, "dog": 0.9},
                "label_quality": 0.1, "outlier_score": 0.5, "reasons": ["label"], "duplicates": []}
               for i, r in enumerate(records)]
    registry = ModelRegistry(tmp_path / "registry")
    decision = select_champion(registry, challenger_dir, challenger_scores(champion_metrics), files, "accuracy", 0.0,
                               run_id="run-7", suspects=entries, ingest_dir=built.ingest_dir)
    champion, uri = suspects_of_champion(registry.uri)
    assert uri == decision["suspects_uri"] == str(Path(registry.uri, "suspects", "v1", "suspects.json"))
    assert champion["run_id"] == "run-7"
    document = read_suspects(uri)
    assert (document["run_id"], document["version"], document["class_names"]) == ("run-7", 1, ["cat", "dog"])
    for entry, record in zip(document["suspects"], records):
        assert Path(photo_uri(uri, entry)).read_bytes() == (built.ingest_dir / record.file).read_bytes()
    assert not (Path(registry.version_uri(1)) / "suspects").exists()  # fetching the model downloads no photos
    # a challenger that loses keeps the alias (and its suspects) where they were
    loser = select_champion(registry, challenger_dir, challenger_scores(champion_metrics), files, "accuracy", 0.5,
                            run_id="run-8", suspects=[], ingest_dir=built.ingest_dir)
    assert not loser["promoted"] and suspects_of_champion(registry.uri)[1] == uri
    assert read_suspects(loser["suspects_uri"])["suspects"] == []
