"""Classification metrics against hand-computed values, and the `make evaluate` command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from catdog.evaluation import MAX_ROC_POINTS, classification_metrics, evaluate_files, labelled_files, main
from catdog.onnx_predictor import OnnxPredictor
from catdog.registry import ModelRegistry
from tests.helpers import REPO_ROOT, make_class_folders
from tests.model_fixtures import labelled_folder
from tests.serving_fixtures import tiny_model_dir, variant_of

KEYS = ("accuracy", "precision", "recall", "f1", "auc", "n", "skipped")

# 4 cats (0), 6 dogs (1); P(dog) chosen so that: TN 3, FP 1, FN 2, TP 4
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
P_DOG = np.array([0.1, 0.4, 0.6, 0.3, 0.9, 0.8, 0.35, 0.7, 0.2, 0.65])


def probs(p_dog: np.ndarray) -> np.ndarray:
    return np.stack([1 - p_dog, p_dog], axis=1)


# -- classification_metrics -------------------------------------------------------------------------
def test_binary_metrics_by_hand():
    result = classification_metrics(Y_TRUE, probs(P_DOG), ["cat", "dog"])
    assert result["n"] == 10
    assert result["confusion_matrix"] == [[3, 1], [2, 4]]
    assert result["accuracy"] == pytest.approx(7 / 10)
    assert result["precision"] == pytest.approx(4 / 5)  # TP / (TP + FP), of the second class (dog)
    assert result["recall"] == pytest.approx(4 / 6)  # TP / (TP + FN)
    assert result["f1"] == pytest.approx(8 / 11)  # 2TP / (2TP + FP + FN)
    # AUC = share of (dog, cat) pairs ranked correctly: 4 + 4 + 2 + 4 + 1 + 4 = 19 of 24
    assert result["auc"] == pytest.approx(19 / 24)
    assert result["class_names"] == ["cat", "dog"]
    roc = result["roc"]
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"])
    assert max(roc["thresholds"]) <= 1.0  # sklearn's infinite first threshold is clipped
    json.dumps(result, allow_nan=False)  # the KFP artifacts must be plain JSON


def test_metrics_swap_with_the_positive_class():
    """Precision/recall are of the second class: swapping labels and columns swaps them."""
    swapped = classification_metrics(1 - Y_TRUE, probs(1 - P_DOG), ["dog", "cat"])
    assert swapped["confusion_matrix"] == [[4, 2], [1, 3]]
    assert swapped["precision"] == pytest.approx(3 / 5)  # TN 3 / (TN 3 + FN 2) seen from the cats
    assert swapped["recall"] == pytest.approx(3 / 4)
    assert swapped["auc"] == pytest.approx(19 / 24)


def test_multiclass_macro_averages_by_hand():
    y = np.array([0, 1, 2, 0, 1, 2])
    predicted = [0, 1, 1, 0, 2, 2]
    p = np.full((6, 3), 0.1)
    p[np.arange(6), predicted] = 0.8
    result = classification_metrics(y, p, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["confusion_matrix"] == [[2, 0, 0], [0, 1, 1], [0, 1, 1]]
    assert result["precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert result["recall"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert result["f1"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert "roc" not in result
    # one-vs-rest AUC per class: a 1.0, b 0.625, c 0.625 (the 0.8 scores rank 1 of 2 positives first)
    assert result["auc"] == pytest.approx((1.0 + 0.625 + 0.625) / 3)


def test_single_class_has_no_auc():
    result = classification_metrics(np.array([1, 1, 1]), probs(np.array([0.9, 0.2, 0.7])), ["cat", "dog"])
    assert math.isnan(result["auc"]) and "roc" not in result
    assert result["accuracy"] == pytest.approx(2 / 3) and result["recall"] == pytest.approx(2 / 3)
    assert result["confusion_matrix"] == [[0, 0], [1, 2]]


def test_roc_points_are_capped():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    result = classification_metrics(y, probs(rng.random(2000)), ["cat", "dog"])
    assert 100 < len(result["roc"]["fpr"]) <= MAX_ROC_POINTS
    assert result["roc"]["fpr"][0] == 0.0 and result["roc"]["fpr"][-1] == 1.0
    assert result["roc"]["fpr"] == sorted(result["roc"]["fpr"])


# -- evaluate_files / labelled_files ----------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir() -> Path:
    return tiny_model_dir()


@pytest.fixture
def data(tmp_path) -> Path:
    """cat/ and dog/ with 4 JPEGs each, plus a zero-byte dog/empty.jpg and a text cat/notes.jpg."""
    return labelled_folder(tmp_path / "photos", bad=True)


def expected_metrics(model_dir: Path, folder: Path) -> dict:
    """Independent reference: predict every readable file, then the plain metric function."""
    predictor = OnnxPredictor(model_dir)
    good = [(p, label) for p, label in labelled_files(folder, predictor.class_names) if p.stat().st_size > 100]
    probabilities = predictor.predict_bytes([p.read_bytes() for p, _ in good])
    return classification_metrics(np.array([label for _, label in good]), probabilities, predictor.class_names)


def test_labelled_files(data):
    files = labelled_files(data, ["cat", "dog"])
    assert len(files) == 10
    assert sorted(p.name for p, label in files if label == 0) == ["cat_000.jpg", "cat_001.jpg", "cat_002.jpg",
                                                                   "cat_003.jpg", "notes.jpg"]
    assert sum(label == 1 for _, label in files) == 5
    with pytest.raises(ValueError, match=r"class folder\(s\) \['dog'\] the model does not know"):
        labelled_files(data, ["cat", "bird"])


def test_unreadable_files_are_skipped_and_counted(model_dir, data):
    predictor = OnnxPredictor(model_dir)
    result = evaluate_files(predictor, labelled_files(data, predictor.class_names))
    assert (result["n"], result["skipped"]) == (8, 2)
    reasons = {Path(s["file"]).name: s["reason"] for s in result["skipped_files"]}
    assert reasons == {"empty.jpg": "empty file (0 bytes)",
                       "notes.jpg": "not a decodable image (UnidentifiedImageError)"}
    expected = expected_metrics(model_dir, data)
    for key in ("accuracy", "precision", "recall", "f1", "auc"):
        assert result[key] == pytest.approx(expected[key]), key
    assert result["confusion_matrix"] == expected["confusion_matrix"]
    assert sum(map(sum, result["confusion_matrix"])) == 8


def test_only_unreadable_files_is_an_error(model_dir, tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no readable image among 1 file\(s\)"):
        evaluate_files(OnnxPredictor(model_dir), [(tmp_path / "a.jpg", 0)])


# -- the command line ------------------------------------------------------------------------------
def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_json(out: str) -> dict:
    def reject(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(out.strip().splitlines()[-1], parse_constant=reject)


def test_cli_with_a_model_folder(model_dir, data, capsys):
    code, out, err = run_main(capsys, "--model", str(model_dir), "--data", str(data), "--registry", "/nonexistent")
    assert code == 0, err
    summary = last_json(out)
    assert set(KEYS) <= set(summary)
    assert (summary["n"], summary["skipped"]) == (8, 2)
    expected = expected_metrics(model_dir, data)
    for key in ("accuracy", "precision", "recall", "f1", "auc"):
        assert summary[key] == pytest.approx(expected[key]), key
    assert summary["model"] == str(model_dir) and summary["data"] == str(data)


@pytest.fixture
def registry(tmp_path, model_dir) -> ModelRegistry:
    """v1 = the tiny model (champion), v2 = the same weights labelled differently."""
    reg = ModelRegistry(tmp_path / "registry")
    reg.set_champion(reg.register(model_dir))
    reg.register(variant_of(model_dir, tmp_path / "v2", architecture="v2"))
    return reg


@pytest.mark.parametrize("ref, desc", [("champion", "v1 (champion)"), ("1", "v1"), ("2", "v2")])
def test_cli_with_a_registry_reference(model_dir, data, registry, capsys, ref, desc):
    code, out, err = run_main(capsys, "--model", ref, "--data", str(data), "--registry", registry.uri)
    assert code == 0, err
    summary = last_json(out)
    assert summary["model"] == f"{registry.uri} {desc}"
    assert (summary["n"], summary["skipped"]) == (8, 2)
    assert summary["accuracy"] == pytest.approx(expected_metrics(model_dir, data)["accuracy"])


@pytest.mark.parametrize(
    "model, data_name, message",
    [
        ("no-such-model", "photos", "no-such-model"),
        ("champion", "photos", "no champion in"),
        ("7", "photos", "version 7 not found"),
        ("DIR", "no-such-folder", "No such file or directory"),
        ("DIR", "empty", "no files under"),
        ("DIR", "birds", r"class folder(s) ['bird'] the model does not know"),
    ],
)
def test_cli_errors_exit_2_with_a_message(model_dir, tmp_path, capsys, model, data_name, message):
    labelled_folder(tmp_path / "photos")
    (tmp_path / "empty").mkdir()
    make_class_folders(tmp_path / "birds", {"bird": 2, "cat": 2})
    model = str(model_dir) if model == "DIR" else str(tmp_path / model) if model == "no-such-model" else model
    code, out, err = run_main(capsys, "--model", model, "--data", str(tmp_path / data_name),
                              "--registry", str(tmp_path / "empty-registry"))
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_python_m_catdog_evaluation(model_dir, data, tmp_path):
    """The real entry point `make evaluate` calls: a human summary, then one JSON line; exit codes."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "catdog.evaluation", "--registry", str(tmp_path / "registry")]
    ok = subprocess.run([*command, "--model", str(model_dir), "--data", str(data)],
                        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    summary = last_json(ok.stdout)
    assert (summary["n"], summary["skipped"]) == (8, 2) and set(KEYS) <= set(summary)
    expected = expected_metrics(model_dir, data)
    human = ok.stdout.strip().splitlines()[:-1]
    assert human[0] == f"model: {model_dir}"
    assert human[1] == f"data:  {data}  (8 images, 2 skipped)"
    for key in ("accuracy", "precision", "recall", "f1", "auc"):
        assert summary[key] == pytest.approx(expected[key]), key
        assert f"  {key:<9} {expected[key]:.4f}" in human
    assert "  confusion matrix (rows = true, columns = predicted): cat, dog" in human
    assert f"    cat      {expected['confusion_matrix'][0]}" in human
    assert any(line.endswith("empty.jpg: empty file (0 bytes)") for line in human)
    assert any("notes.jpg: not a decodable image" in line for line in human)

    missing = subprocess.run([*command, "--model", str(model_dir), "--data", str(tmp_path / "nope")],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and str(tmp_path / "nope") in missing.stderr
    assert missing.stdout == ""


def test_summary_follows_redirected_stdout(model_dir, data):
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["--model", str(model_dir), "--data", str(data), "--registry", "r"]) == 0
    lines = buffer.getvalue().strip().splitlines()
    assert lines[0] == f"model: {model_dir}" and last_json(buffer.getvalue())["n"] == 8


def test_cli_last_line_is_strict_json_for_a_single_class_folder(model_dir, tmp_path, capsys):
    data = make_class_folders(tmp_path / "dogs-only", {"dog": 3})
    code, out, err = run_main(capsys, "--model", str(model_dir), "--data", str(data), "--registry", "r")
    assert code == 0, err
    summary = last_json(out)
    assert summary["n"] == 3 and summary["auc"] is None


def test_cli_on_a_cats_and_dogs_filtered_layout(model_dir, tmp_path, capsys):
    data = make_class_folders(tmp_path / "validation", {"cats": 3, "dogs": 3})
    code, out, err = run_main(capsys, "--model", str(model_dir), "--data", str(data), "--registry", "r")
    assert code == 0, err
    assert last_json(out)["n"] == 6
