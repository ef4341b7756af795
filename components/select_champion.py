"""select_champion: register the challenger, re-score the champion on the same test split, promote on a win."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def select_champion(
    challenger: Input[Model],
    evaluation: Input[Artifact],
    ingested: Input[Dataset],
    dataset: Input[Dataset],
    suspects: Input[Artifact],
    registry_uri: str,
    champion_metric: str,
    champion_margin: float,
    run_id: str,
    pipeline_job_id: str,
    pipeline_job_name: str,
    decision: Output[Markdown],
    decision_json: Output[Artifact],
) -> bool:
    """Promote the challenger only when it beats the champion by the margin; record the decision.

    Returns whether it was promoted: a single output, because kfp.local (2.17) resolves a dsl.If
    condition on a task's `Output` but not on a named output. The version number and URI travel
    to deploy in decision_json.

    The decision is recorded with the run's id: run_id, or when it is '' (a scheduled run, which
    cannot know its id up front) pipeline_job_id, the service's id of this run (the pipeline passes
    dsl.PIPELINE_JOB_ID_PLACEHOLDER: the KFP run id; on Vertex AI the job's uuid). The job's id and
    name (dsl.PIPELINE_JOB_NAME_PLACEHOLDER) are recorded too. A service that left the placeholder
    unresolved gives no usable id: the step fails before it registers anything, saying so.

    suspects: the label-issues step's JSON list; it and its photos are copied into the registry
    beside the version (catdog.suspects), and the decision and alias name where ("suspects_uri"),
    so the feedback app finds the champion's suspects on every target.
    """
    import json
    from pathlib import Path

    from catdog import champion as lib
    from catdog.dataset import load_metadata
    from catdog.registry import ModelRegistry

    recorded_id = run_id or pipeline_job_id
    if recorded_id.startswith("{{"):
        raise ValueError(f"run_id is empty and the service did not resolve {recorded_id}: pass run_id=<id> "
                         "(letters, digits, '.', '_', '-')")
    registry = ModelRegistry(registry_uri)
    result = lib.select_champion(
        registry,
        Path(challenger.path),
        json.loads(Path(evaluation.path).read_text()),
        lib.test_split_files(Path(ingested.path), Path(dataset.path)),
        champion_metric,
        champion_margin,
        load_metadata(Path(dataset.path))["splits"]["train"]["class_counts"],
        run_id=recorded_id,
        pipeline_job={"id": pipeline_job_id, "name": pipeline_job_name},
        suspects=json.loads(Path(suspects.path).read_text()),
        ingest_dir=Path(ingested.path),
    )
    Path(decision.path).write_text(lib.decision_markdown(result))
    Path(decision_json.path).write_text(json.dumps(result, indent=1))
    decision_json.metadata.update({"promoted": result["promoted"], "version": result["challenger_version"],
                                   "run_id": recorded_id})
    print(f"run {recorded_id}: {result['reason']}")
    return result["promoted"]
