"""Champion selection: score the current champion on the challenger's test split, promote on a win.

The decision (a dict, recorded in the registry's history and written as select-champion's
decision_json) names the run that made it: "run_id" (catdog/registry.py: the decision of run X is
found by that id) and, from the pipeline, "pipeline_job" (the service's id and name of the run).
With the run's suspects (the label-issues step's list), the decision and, on a promotion, the
champion alias also carry "suspects_uri": where catdog.suspects copied them in the registry, so the
feedback app finds the champion's run's suspects from the alias alone.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from catdog.dataset import load_metadata as load_dataset_metadata
from catdog.evaluation import evaluate_files
from catdog.ingest import load_manifest
from catdog.model_files import EVALUATION_FILE
from catdog.onnx_predictor import OnnxPredictor
from catdog.registry import ModelRegistry, check_run_id
from catdog.suspects import record_suspects

COMPARED_METRICS = ("accuracy", "precision", "recall", "f1", "auc")


def test_split_files(ingest_dir: Path, dataset_dir: Path) -> list[tuple[Path, str]]:
    """The test split as (image file, label) pairs from the ingest snapshot, so that a champion with
    another input size is scored on the very same photos, through the same preprocessing."""
    by_sha = {r.sha256: r for r in load_manifest(ingest_dir).images}
    test_shas = load_dataset_metadata(dataset_dir)["splits"]["test"]["sha256"]
    return [(Path(ingest_dir) / by_sha[s].file, by_sha[s].label) for s in test_shas]


def decide(challenger: dict, champion: dict | None, metric: str, margin: float) -> tuple[bool, str]:
    """Promote when there is no champion, or the challenger beats it by more than the margin."""
    if champion is None:
        return True, "no champion yet: the challenger becomes the first champion"
    if challenger[metric] > champion[metric] + margin:
        return True, (f"challenger {metric} {challenger[metric]:.4f} beats champion "
                      f"{champion[metric]:.4f} by more than the margin {margin}")
    return False, (f"challenger {metric} {challenger[metric]:.4f} does not beat champion "
                   f"{champion[metric]:.4f} by more than the margin {margin}: champion kept")


def select_champion(
    registry: ModelRegistry,
    challenger_dir: Path,
    challenger_metrics: dict,
    test_files: list[tuple[Path, str]],
    metric: str,
    margin: float,
    train_class_counts: dict[str, int] | None = None,
    run_id: str | None = None,
    pipeline_job: dict | None = None,
    suspects: list[dict] | None = None,
    ingest_dir: Path | None = None,
) -> dict:
    """Register the challenger as a new version, re-score the champion, move the alias on a win.

    The version gets an evaluation.json: the challenger's test metrics (confusion matrix and test
    confidences included) and its training split's class counts, for the feedback dashboard.
    run_id: the run the decision belongs to (checked first: RegistryError before anything is
    written when it is not a usable id); pipeline_job: the service's {"id", "name"} of the run.
    suspects (with ingest_dir, the snapshot holding their photos): recorded beside the version
    (catdog.suspects) before the alias moves.
    """
    if run_id is not None:
        check_run_id(run_id)
    champion_version = registry.champion_version()
    champion_metrics = None
    note = ""
    if champion_version is not None:
        predictor = OnnxPredictor(registry.fetch(champion_version))
        if sorted(predictor.class_names) != sorted(challenger_metrics["class_names"]):
            note = (f"champion v{champion_version} predicts {predictor.class_names}, the data has "
                    f"{challenger_metrics['class_names']}: it cannot be scored on this test split")
        else:
            labelled = [(path, predictor.class_names.index(label)) for path, label in test_files]
            champion_metrics = evaluate_files(predictor, labelled)
    promoted, reason = decide(challenger_metrics, champion_metrics, metric, margin)
    if note:  # an unscorable champion (other classes) is replaced
        reason = f"{note}; the challenger replaces it"
    evaluation = {**challenger_metrics, "train_class_counts": train_class_counts or {}}
    version = registry.register(challenger_dir, {EVALUATION_FILE: json.dumps(evaluation)})
    suspects_uri = None
    if suspects is not None:
        suspects_uri = record_suspects(registry, version, suspects, Path(ingest_dir), run_id,
                                       list(challenger_metrics["class_names"]))
    decision = {
        "run_id": run_id,
        "pipeline_job": pipeline_job,
        "promoted": promoted,
        "registry_uri": registry.uri,
        "model_uri": registry.version_uri(version),
        "reason": reason,
        "metric": metric,
        "margin": margin,
        "challenger_version": version,
        "previous_champion_version": champion_version,
        "challenger": {k: challenger_metrics[k] for k in COMPARED_METRICS},
        "champion": {k: champion_metrics[k] for k in COMPARED_METRICS} if champion_metrics else None,
        "n_test": challenger_metrics["n"],
        "suspects_uri": suspects_uri,
        "decided_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if promoted:
        registry.set_champion(version, metric=metric, score=challenger_metrics[metric],
                              previous_version=champion_version, run_id=run_id, suspects_uri=suspects_uri)
    decision["champion_version"] = registry.champion_version()
    decision["history_record"] = registry.record_decision(decision)
    return decision


def decision_markdown(decision: dict) -> str:
    verdict = "PROMOTED" if decision["promoted"] else "NOT PROMOTED"
    lines = [
        f"# Champion selection: challenger v{decision['challenger_version']} {verdict}",
        "",
        decision["reason"] + ".",
        "",
        *([f"Run `{decision['run_id']}`.", ""] if decision.get("run_id") else []),
        f"Metric `{decision['metric']}`, margin {decision['margin']}, test images: {decision['n_test']}.",
        f"Champion now: v{decision['champion_version']} (before: "
        f"{'v' + str(decision['previous_champion_version']) if decision['previous_champion_version'] else 'none'}).",
        "",
        "| metric | challenger | champion |",
        "| --- | --- | --- |",
    ]
    for key in COMPARED_METRICS:
        champion = f"{decision['champion'][key]:.4f}" if decision["champion"] else "-"
        lines.append(f"| {key} | {decision['challenger'][key]:.4f} | {champion} |")
    return "\n".join(lines) + "\n"
