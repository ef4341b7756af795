"""deploy: put the newly promoted champion into service (runs only on promotion)."""

from kfp import dsl
from kfp.dsl import Artifact, Input

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy(decision: Input[Artifact], deploy_target: str) -> str:
    """Deploy the champion named by the selection decision to the target; returns where it went."""
    import json
    from pathlib import Path

    from catdog import deploy as lib

    record = json.loads(Path(decision.path).read_text())
    registry_uri, version, model_uri = record["registry_uri"], record["champion_version"], record["model_uri"]
    if deploy_target != "local":
        raise ValueError(f"unknown deploy_target {deploy_target!r}")
    where = lib.deploy_local(registry_uri, version)
    print(f"deployed {model_uri}: {where}")
    return where
