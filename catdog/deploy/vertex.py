"""deploy_target=vertex: upload the model as a new version of the Vertex Model Registry model,
deploy it to the endpoint with a traffic share, then move the `default` and `champion` aliases to
it; the models already deployed keep serving until the new one is up, and are retired only after a
full (100 %) rollout.
"""

from __future__ import annotations

import logging

from catdog.deploy.checks import DeployError, require_gcs, verify_model, version_tag

logger = logging.getLogger("catdog.deploy")

# The predictor's routes (serving/app.py); the Vertex container gets them as AIP_PREDICT_ROUTE /
# AIP_HEALTH_ROUTE, so Vertex uses the same KServe V1 predict route and V2 readiness route.
SERVING_PORT = 8080
VERTEX_CHAMPION_ALIAS = "champion"
VERTEX_PREDICT_ROUTE = "/v1/models/catdog:predict"
VERTEX_HEALTH_ROUTE = "/v2/health/ready"


def deploy_vertex(
    model_uri: str,
    project: str,
    region: str = "us-central1",
    display_name: str = "catdog",
    endpoint_name: str = "catdog",
    serving_image: str = "",
    traffic_percent: int = 100,
    machine_type: str = "n1-standard-2",
    min_replicas: int = 1,
    max_replicas: int = 2,
    retire_previous: bool = True,
) -> str:
    """Upload the model folder as a new version of the Vertex model `display_name`, deploy it to the
    endpoint `endpoint_name` (created when missing) with `traffic_percent` of the traffic (the rest
    stays with the models already deployed), then move the `default` and `champion` aliases to it.

    Nothing is undeployed and no alias moves before the new model is up: if the deploy fails, the
    endpoint's traffic split and the Model Registry's aliases are unchanged and the error propagates. After a 100 % rollout, the previously deployed
    models (now at 0 %) are undeployed when retire_previous (a failure there is logged, not raised:
    the new model is serving).
    """
    if not project:
        raise DeployError("deploy_vertex needs a project (vertex_project)")
    if not serving_image:
        raise DeployError("deploy_vertex needs the predictor image (serving_image), pushed to Artifact Registry")
    if not 1 <= int(traffic_percent) <= 100:
        raise DeployError(f"traffic_percent {traffic_percent} is not in 1..100")
    if not 1 <= min_replicas <= max_replicas:
        raise DeployError(f"replicas: need 1 <= min ({min_replicas}) <= max ({max_replicas})")
    require_gcs(model_uri, "Vertex AI")
    verify_model(model_uri)

    from google.cloud import aiplatform

    aiplatform.init(project=project, location=region)
    parents = aiplatform.Model.list(filter=f'display_name="{display_name}"', order_by="update_time desc")
    parent = parents[0].resource_name if parents else None
    endpoints = aiplatform.Endpoint.list(filter=f'display_name="{endpoint_name}"', order_by="update_time desc")
    endpoint = endpoints[0] if endpoints else None
    tag = version_tag(model_uri)

    # -- mutating calls from here on --
    model = aiplatform.Model.upload(
        display_name=display_name,
        artifact_uri=model_uri,
        serving_container_image_uri=serving_image,
        serving_container_predict_route=VERTEX_PREDICT_ROUTE,
        serving_container_health_route=VERTEX_HEALTH_ROUTE,
        serving_container_ports=[SERVING_PORT],
        parent_model=parent,
        is_default_version=parent is None,  # a later version becomes default once it serves (below)
        version_aliases=None,
        version_description=f"catdog {tag} from {model_uri}",
        sync=True,
    )
    if endpoint is None:
        endpoint = aiplatform.Endpoint.create(display_name=endpoint_name, sync=True)
    previous = [m.id for m in endpoint.list_models()]
    traffic = int(traffic_percent) if previous else 100  # the first model on an endpoint takes it all
    try:
        endpoint.deploy(
            model,
            deployed_model_display_name=f"{display_name}-{tag}",
            traffic_percentage=traffic,
            machine_type=machine_type,
            min_replica_count=min_replicas,
            max_replica_count=max_replicas,
            sync=True,
        )
    except Exception as exc:
        logger.error("deploying %s to endpoint %s failed (%s: %s); its traffic split is unchanged: "
                     "the deployed models %s keep serving. The uploaded version %s stays in the Model "
                     "Registry.", tag, endpoint.resource_name, type(exc).__name__, exc, previous,
                     getattr(model, "resource_name", model))
        raise
    model.versioning_registry.add_version_aliases(new_aliases=["default", VERTEX_CHAMPION_ALIAS], version=model.version_id)
    where = (f"vertex: {model.resource_name} version {model.version_id} ({tag}, aliases default and "
             f"{VERTEX_CHAMPION_ALIAS}) on endpoint {endpoint.resource_name} with {traffic}% of traffic")
    if retire_previous and traffic == 100 and previous:
        split = endpoint.traffic_split
        for deployed_id in previous:
            if split.get(deployed_id, 0) == 0:
                try:
                    endpoint.undeploy(deployed_model_id=deployed_id, sync=True)
                    where += f"; retired deployed model {deployed_id}"
                except Exception as exc:  # the new model serves; an idle old one only costs money
                    logger.warning("could not undeploy the previous model %s: %s", deployed_id, exc)
                    where += f"; could not retire {deployed_id} ({type(exc).__name__})"
    logger.info(where)
    return where
