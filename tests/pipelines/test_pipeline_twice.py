"""Run the pipeline again on the same data: the champion moves only on a strictly better score, and the
run says which happened.

Issue: "Run the pipeline twice: the second run either promotes with a better score or leaves the
champion unchanged, and says which". Three runs of ``python -m pipelines.run`` (its ``main``, so the
text checked is what ``make run`` prints) share one local registry and the same synthetic photos,
three cats for every dog:

1. labels swapped (``label_map=cat=dog,dog=cat``): v1 is PROMOTED only because there is no champion;
2. the right labels: v2 beats v1, re-scored on v2's test photos, and is PROMOTED;
3. the same configuration as run 2 again, with ``champion_margin=0.99``: v3 cannot beat a champion
   that scores above 0.01 (v2 does: it beat v1) by more than 0.99, so it is not promoted, v2 stays.

Why run 2 wins every time: with ``weights=none`` at 32 px the randomly initialised backbone's pooled
features are ~1e-11, so a model this small learns only the class prior and predicts its training
majority for every photo. v1's majority is "dog" (the cats, relabelled), v2's is "cat", and the test
split is mostly cats, so v2's accuracy is the cats' share of it and v1's the dogs' share: a fixed,
strictly ordered pair that does not depend on floating-point luck.

Each outcome is also checked against the rule itself (promoted exactly when the challenger's score
beats the re-scored champion's by more than the margin), against champion.json and against the
history records, so a failure says which rule broke.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from catdog.registry import decision_of_run
from pipelines.run import main
from tests.helpers import make_class_folders

PER_CLASS = {"cat": 24, "dog": 8}  # imbalanced on purpose: see the module docstring
METRIC = "accuracy"
TRAINING = ["image_size=32", "weights=none", "frozen_epochs=1", "finetune_epochs=0", "batch_size=8",
            "augmentations=flip", f"champion_metric={METRIC}"]
pytestmark = [
    pytest.mark.slow,
    # kfp.local says these when it runs container settings in a subprocess; expected here
    pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Task .* have no effect in the current local runner:UserWarning"),
]


def run_pipeline(root: Path, registry: Path, data: Path, *overrides: str) -> dict:
    """One `make run`: its printed description, the decision artifact and the registry afterwards."""
    outputs = root / "outputs"
    before = set(outputs.iterdir()) if outputs.is_dir() else set()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["TARGET=local", f"OUTPUT_ROOT={outputs}", f"DATA={data}", f"REGISTRY={registry}",
                   *TRAINING, *overrides])
    assert rc == 0, stdout.getvalue()
    printed = stdout.getvalue()
    assert "run outputs: " in printed, printed
    assert printed.startswith("run id: "), printed  # given as run_id=..., else made by make run
    run_id = printed.splitlines()[0].removeprefix("run id: ")
    description = printed[printed.rindex("run outputs: "):]
    (run_dir,) = set(outputs.iterdir()) - before - {outputs / "logs"}  # logs: the full log and progress file
    history = sorted((registry / "history").glob("*.json"))
    return {
        "text": description,
        "run_id": run_id,
        "registry": registry,
        "run_dir": run_dir,
        "decision": json.loads((run_dir / "select-champion" / "decision_json").read_text()),
        "champion_json": json.loads((registry / "champion.json").read_text()),
        "history": [(p.name, json.loads(p.read_text())) for p in history],
        "versions": sorted(int(p.name) for p in (registry / "versions").iterdir()
                           if p.name.isdigit() and (p / "_COMPLETE").is_file()),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("twice")
    data = make_class_folders(root / "data", PER_CLASS)
    registry = root / "registry"
    return [
        run_pipeline(root, registry, data, "label_map=cat=dog,dog=cat", "champion_margin=0", "run_id=twice-1"),
        run_pipeline(root, registry, data, "champion_margin=0"),
        run_pipeline(root, registry, data, "champion_margin=0.99"),
    ]


def verdict_line(run: dict) -> str:
    (line,) = [text for text in run["text"].splitlines() if text.startswith("challenger v")]
    return line


def check_consistent(run: dict, version: int, previous_champion: int | None, margin: float) -> None:
    """Whatever the outcome: the decision follows the rule and the text, alias and history agree."""
    decision, text = run["decision"], run["text"]
    assert decision["challenger_version"] == version
    assert version in run["versions"]
    assert decision["previous_champion_version"] == previous_champion
    assert decision["metric"] == METRIC and decision["margin"] == margin
    challenger_score = decision["challenger"][METRIC]
    if previous_champion is None:
        assert decision["champion"] is None
        assert decision["promoted"] is True
    else:  # the champion was re-scored on this run's test photos, and the reason names both scores
        champion_score = decision["champion"][METRIC]
        assert decision["promoted"] is (challenger_score > champion_score + margin)
        assert f"{challenger_score:.4f}" in verdict_line(run)
        assert f"{champion_score:.4f}" in verdict_line(run)
    expected_champion = version if decision["promoted"] else previous_champion
    verdict = "PROMOTED" if decision["promoted"] else "not promoted"
    assert verdict_line(run).startswith(f"challenger v{version} {verdict}: ")
    assert f"champion: v{expected_champion} in " in text
    assert decision["champion_version"] == expected_champion
    assert run["champion_json"]["version"] == expected_champion
    # one history record per run, the newest for this challenger, holding this very decision, named by
    # the run's id; make run read it back by that id (the decision it printed is the registry's)
    assert len(run["history"]) == version
    name, record = run["history"][-1]
    assert name.endswith(f"-v{version}.run-{run['run_id']}.json")
    assert record["run_id"] == decision["run_id"] == run["run_id"]
    assert decision_of_run(str(run["registry"]), run["run_id"]) == decision
    assert record["promoted"] is decision["promoted"]
    assert record["champion_version"] == expected_champion
    assert record["challenger"] == decision["challenger"] and record["champion"] == decision["champion"]


def test_first_run_promotes_v1(runs):
    first = runs[0]
    check_consistent(first, version=1, previous_champion=None, margin=0.0)
    assert first["run_id"] == "twice-1"
    assert verdict_line(first).startswith("challenger v1 PROMOTED: no champion yet")
    assert "champion: v1 in " in first["text"]
    assert first["champion_json"]["version"] == 1
    assert first["champion_json"]["score"] == first["decision"]["challenger"][METRIC]


def test_better_second_run_is_promoted_and_says_by_how_much(runs):
    first, second = runs[0], runs[1]
    check_consistent(second, version=2, previous_champion=1, margin=0.0)
    assert re.fullmatch(r"[0-9a-f]{32}", second["run_id"])  # made by make run (a uuid4 hex)
    decision = second["decision"]
    assert decision["promoted"] is True, (
        f"v2 (right labels) should beat v1 (swapped labels): {second['text']}")
    assert decision["challenger"][METRIC] > decision["champion"][METRIC]
    assert " beats champion " in verdict_line(second)
    assert "champion: v2 in " in second["text"]
    assert second["champion_json"]["version"] == 2
    assert second["champion_json"]["previous_version"] == 1
    assert second["champion_json"]["score"] == decision["challenger"][METRIC]
    assert second["champion_json"]["promoted_at"] >= first["champion_json"]["promoted_at"]
    assert "challenger v2 PROMOTED" in (second["run_dir"] / "select-champion" / "decision").read_text()
    assert (second["run_dir"] / "deploy").is_dir()  # promotion triggers the deploy step


def test_run_that_does_not_beat_the_champion_leaves_it_unchanged(runs):
    second, third = runs[1], runs[2]
    check_consistent(third, version=3, previous_champion=2, margin=0.99)
    decision = third["decision"]
    assert decision["champion"][METRIC] > 0.01  # v2 beat v1, so no score can beat it by 0.99
    assert decision["promoted"] is False
    assert " does not beat champion " in verdict_line(third)
    assert verdict_line(third).endswith("champion kept")
    assert "champion: v2 in " in third["text"]
    assert third["champion_json"] == second["champion_json"]  # the alias was not rewritten
    assert third["versions"] == [1, 2, 3]  # the challenger is still registered
    assert "challenger v3 NOT PROMOTED" in (third["run_dir"] / "select-champion" / "decision").read_text()
    assert not (third["run_dir"] / "deploy").exists()  # deploy runs only on promotion
