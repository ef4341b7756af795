"""deploy: put the newly promoted champion into service (runs only on promotion)."""

from kfp import dsl
from kfp.dsl import Artifact, Input

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy(
    decision: Input[Artifact],
    deploy_target: str,
    kserve_name: str,
    kserve_namespace: str,
    kserve_manifest: str,
    kserve_ready_timeout_s: int,
    canary_percent: int,
    serving_image: str,
    vertex_project: str,
    vertex_region: str,
    vertex_model: str,
    vertex_endpoint: str,
    vertex_machine_type: str,
    vertex_min_replicas: int,
    vertex_max_replicas: int,
) -> str:
    """Deploy the champion named by the selection decision to the target; returns where it went.

    local: check the registry's champion alias (`make serve` follows it). kserve: create or patch the
    InferenceService (canary_percent > 0: that share goes to the new revision). vertex: upload a new
    Model Registry version (alias champion) and deploy it to the endpoint with canary_percent of the
    traffic (0 = all of it). Every check runs before the first change; see catdog/deploy.py.
    """
    import json
    import logging
    from pathlib import Path

    from catdog import deploy as lib

    logging.basicConfig(level=logging.INFO)
    record = json.loads(Path(decision.path).read_text())
    registry_uri, version, model_uri = record["registry_uri"], record["champion_version"], record["model_uri"]
    if version != record["challenger_version"]:
        raise ValueError(f"the decision promotes v{record['challenger_version']} but the champion is v{version}")
    if deploy_target == "local":
        where = lib.deploy_local(registry_uri, version)
    elif deploy_target == "kserve":
        where = lib.deploy_kserve(model_uri, name=kserve_name, namespace=kserve_namespace,
                                  canary_percent=canary_percent, manifest=kserve_manifest, image=serving_image,
                                  ready_timeout_s=kserve_ready_timeout_s)
    elif deploy_target == "vertex":
        where = lib.deploy_vertex(model_uri, project=vertex_project, region=vertex_region,
                                  display_name=vertex_model, endpoint_name=vertex_endpoint,
                                  serving_image=serving_image, traffic_percent=canary_percent or 100,
                                  machine_type=vertex_machine_type, min_replicas=vertex_min_replicas,
                                  max_replicas=vertex_max_replicas)
    else:
        raise ValueError(f"unknown deploy_target {deploy_target!r}")
    print(f"deployed {model_uri}: {where}")
    return where
