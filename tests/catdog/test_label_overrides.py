"""Label overrides (catdog/label_overrides.py): the next ingest relabels or leaves out training photos
people judged, in the snapshot only, and reports each; the user's data files stay as they were."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from catdog.ingest import build_report, ingest_dataset, report_markdown
from catdog.label_overrides import OverridesError, parse_overrides, read_overrides, write_overrides
from tests.helpers import make_class_folders


def tree(root: Path) -> dict[str, str]:
    """Every file under root -> its sha256: what 'never modified or moved' is checked against."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def data(tmp_path) -> Path:
    return make_class_folders(tmp_path / "data", {"cat": 4, "dog": 4})


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def override(sha: str, label: str, source: str = "", given: str = "") -> dict:
    return {"sha256": sha, "source": source, "given_label": given, "label": label,
            "reviewers": [{"by": "ana", "label": label, "at": "2026-12-04T20:00:00+00:00"}],
            "flagged_by_run": "run-1", "updated_at": "2026-12-04T20:00:00+00:00"}


def test_overrides_relabel_leave_out_and_report_each_photo(data, tmp_path):
    feedback = tmp_path / "feedback"
    cats = sorted((data / "cat").iterdir())
    before = tree(data)
    write_overrides(str(feedback), [
        override(sha_of(cats[0]), "dog", "cat/" + cats[0].name, "cat"),
        override(sha_of(cats[1]), "neither", "cat/" + cats[1].name, "cat"),
        override(sha_of(cats[2]), "cat", "cat/" + cats[2].name, "cat"),
        override("f" * 64, "dog", "cat/gone.jpg", "cat"),
        override(sha_of(cats[3]), "horse", "cat/" + cats[3].name, "cat"),
    ])
    out = tmp_path / "out"
    result = ingest_dataset(str(data), out, cache_dir=tmp_path / "cache", feedback_uri=str(feedback), workers=1)
    by_sha = {r.sha256: r for r in result.images}
    relabelled = by_sha[sha_of(cats[0])]
    assert relabelled.label == "dog" and relabelled.file.startswith("images/dog/")
    assert (out / relabelled.file).read_bytes() == cats[0].read_bytes()
    assert sha_of(cats[1]) not in by_sha  # neither: left out, its snapshot copy removed
    assert not any(out.rglob(sha_of(cats[1])[:24] + "*"))
    assert by_sha[sha_of(cats[2])].label == "cat" and by_sha[sha_of(cats[3])].label == "cat"
    assert len(result.images) == 7
    assert tree(data) == before  # the user's data files: not modified, not moved

    report = build_report(result, str(data), str(feedback))
    overrides = report["overrides"]
    assert (overrides["n_overrides"], overrides["relabelled"], overrides["left_out"], overrides["confirmed"],
            overrides["not_applied"]) == (5, 1, 1, 1, 1)
    assert [u["sha256"] for u in overrides["unmatched"]] == ["f" * 64]
    outcomes = {p["source"]: p["outcome"] for p in overrides["photos"]}
    assert outcomes == {"cat/" + cats[0].name: "relabelled", "cat/" + cats[1].name: "left out",
                        "cat/" + cats[2].name: "confirmed",
                        "cat/" + cats[3].name: "not applied: 'horse' is not a class of the data"}
    assert report["class_counts"] == {"cat": 2, "dog": 5}
    markdown = report_markdown(report)
    assert "## Label overrides (5)" in markdown
    assert f"| `cat/{cats[0].name}` | cat | dog |" in markdown
    assert f"| `cat/{cats[1].name}` | cat | left out |" in markdown
    assert "| `cat/gone.jpg` | `ffffffffffffffff` | dog |" in markdown
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["overrides"]["relabelled"] == 1


def test_without_feedback_uri_the_file_is_not_read(data, tmp_path):
    result = ingest_dataset(str(data), tmp_path / "out", cache_dir=tmp_path / "cache", workers=1)
    assert result.overrides is None and "Label overrides" not in report_markdown(build_report(result, str(data)))


def test_no_file_yet_applies_nothing(data, tmp_path):
    result = ingest_dataset(str(data), tmp_path / "out", cache_dir=tmp_path / "cache",
                            feedback_uri=str(tmp_path / "feedback"), workers=1)
    assert result.overrides["n_overrides"] == 0 and len(result.images) == 8


def test_the_file_is_written_whole_and_read_back(tmp_path):
    uri = write_overrides(str(tmp_path), [override("a" * 64, "dog")])
    assert Path(uri).name == "label-overrides.json" and not list(tmp_path.glob(".*tmp*"))
    _, found = read_overrides(str(tmp_path))
    assert found["a" * 64].label == "dog" and found["a" * 64].flagged_by_run == "run-1"


@pytest.mark.parametrize("text, message", [
    ("not json", "is not JSON"),
    ('{"overrides": {}}', "expected"),
    ('{"overrides": [{"sha256": "abc", "label": "dog"}]}', "64-character sha256"),
])
def test_a_malformed_file_fails_clearly(text, message):
    with pytest.raises(OverridesError, match=message):
        parse_overrides(text)
