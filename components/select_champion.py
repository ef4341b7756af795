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
    registry_uri: str,
    champion_metric: str,
    champion_margin: float,
    decision: Output[Markdown],
    decision_json: Output[Artifact],
) -> bool:
    """Promote the challenger only when it beats the champion by the margin; record the decision.

    Returns whether it was promoted: a single output, because kfp.local (2.17) resolves a dsl.If
    condition on a task's `Output` but not on a named output. The version number and URI travel
    to deploy in decision_json.
    """
    import json
    from pathlib import Path

    from catdog import champion as lib
    from catdog.dataset import load_metadata
    from catdog.registry import ModelRegistry

    registry = ModelRegistry(registry_uri)
    result = lib.select_champion(
        registry,
        Path(challenger.path),
        json.loads(Path(evaluation.path).read_text()),
        lib.test_split_files(Path(ingested.path), Path(dataset.path)),
        champion_metric,
        champion_margin,
        load_metadata(Path(dataset.path))["splits"]["train"]["class_counts"],
    )
    Path(decision.path).write_text(lib.decision_markdown(result))
    Path(decision_json.path).write_text(json.dumps(result, indent=1))
    decision_json.metadata.update({"promoted": result["promoted"], "version": result["challenger_version"]})
    print(result["reason"])
    return result["promoted"]
