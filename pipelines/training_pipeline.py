"""The training pipeline: ingest -> preprocess -> train -> evaluate -> select_champion -> deploy,
and label_issues beside evaluate (on train's features: no backbone pass of its own); select_champion
takes label_issues' suspects too, to record them in the registry beside the version.

Parameter defaults come from PipelineConfig, the one typed parameter set; a test checks that the
pipeline's parameters and the config's fields are the same. run_id goes to select-champion, which
records it with the decision; when it is '' the service's own id of the run is recorded instead
(dsl.PIPELINE_JOB_ID_PLACEHOLDER, resolved by KFP, Vertex AI and kfp.local at run time).
"""

from kfp import dsl

from components.deploy import deploy
from components.evaluate import evaluate
from components.ingest import ingest
from components.label_issues import label_issues
from components.preprocess import preprocess
from components.select_champion import select_champion
from components.train import train
from pipelines.config import PipelineConfig

PIPELINE_NAME = "catdog-training"
# the steps (task names) in the order kfp.local runs them; deploy runs only when the challenger was
# promoted; label-issues needs only train's features (on a cluster it runs beside evaluate), and
# select-champion waits for it (it records the suspects in the registry)
STEPS = ("ingest", "preprocess", "train", "evaluate", "label-issues", "select-champion", "deploy")
_D = PipelineConfig()


@dsl.pipeline(name=PIPELINE_NAME, description="Train, select and deploy a cats-vs-dogs classifier.")
def training_pipeline(
    data_uri: str = _D.data_uri,
    feedback_uri: str = _D.feedback_uri,
    label_from: str = _D.label_from,
    label_map: str = _D.label_map,
    min_image_side: int = _D.min_image_side,
    max_image_pixels: int = _D.max_image_pixels,
    train_split: float = _D.train_split,
    val_split: float = _D.val_split,
    test_split: float = _D.test_split,
    image_size: int = _D.image_size,
    augmentations: str = _D.augmentations,
    seed: int = _D.seed,
    backbone_alpha: float = _D.backbone_alpha,
    weights: str = _D.weights,
    batch_size: int = _D.batch_size,
    frozen_epochs: int = _D.frozen_epochs,
    finetune_epochs: int = _D.finetune_epochs,
    learning_rate: float = _D.learning_rate,
    finetune_learning_rate: float = _D.finetune_learning_rate,
    finetune_layers: int = _D.finetune_layers,
    finetune_ema_momentum: float = _D.finetune_ema_momentum,
    finetune_lr_schedule: str = _D.finetune_lr_schedule,
    label_smoothing: float = _D.label_smoothing,
    finetune_image_scale: float = _D.finetune_image_scale,
    dropout: float = _D.dropout,
    early_stopping_patience: int = _D.early_stopping_patience,
    test_time_flip: bool = _D.test_time_flip,
    test_time_crop: float = _D.test_time_crop,
    registry_uri: str = _D.registry_uri,
    champion_metric: str = _D.champion_metric,
    champion_margin: float = _D.champion_margin,
    run_id: str = _D.run_id,
    deploy_target: str = _D.deploy_target,
    kserve_name: str = _D.kserve_name,
    kserve_namespace: str = _D.kserve_namespace,
    kserve_manifest: str = _D.kserve_manifest,
    kserve_ready_timeout_s: int = _D.kserve_ready_timeout_s,
    canary_percent: int = _D.canary_percent,
    serving_image: str = _D.serving_image,
    vertex_project: str = _D.vertex_project,
    vertex_region: str = _D.vertex_region,
    vertex_model: str = _D.vertex_model,
    vertex_endpoint: str = _D.vertex_endpoint,
    vertex_machine_type: str = _D.vertex_machine_type,
    vertex_min_replicas: int = _D.vertex_min_replicas,
    vertex_max_replicas: int = _D.vertex_max_replicas,
):
    ingest_task = ingest(
        data_uri=data_uri,
        feedback_uri=feedback_uri,
        label_from=label_from,
        label_map=label_map,
        min_image_side=min_image_side,
        max_image_pixels=max_image_pixels,
    )
    ingest_task.set_display_name("ingest")
    preprocess_task = preprocess(
        ingested=ingest_task.outputs["dataset"],
        train_split=train_split,
        val_split=val_split,
        test_split=test_split,
        image_size=image_size,
        seed=seed,
        max_image_pixels=max_image_pixels,
    )
    preprocess_task.set_display_name("preprocess")
    train_task = train(
        dataset=preprocess_task.outputs["dataset"],
        backbone_alpha=backbone_alpha,
        weights=weights,
        augmentations=augmentations,
        batch_size=batch_size,
        frozen_epochs=frozen_epochs,
        finetune_epochs=finetune_epochs,
        learning_rate=learning_rate,
        finetune_learning_rate=finetune_learning_rate,
        finetune_layers=finetune_layers,
        finetune_ema_momentum=finetune_ema_momentum,
        finetune_lr_schedule=finetune_lr_schedule,
        label_smoothing=label_smoothing,
        finetune_image_scale=finetune_image_scale,
        dropout=dropout,
        early_stopping_patience=early_stopping_patience,
        test_time_flip=test_time_flip,
        test_time_crop=test_time_crop,
        seed=seed,
    )
    train_task.set_display_name("train").set_cpu_limit("4").set_memory_limit("8G")
    label_issues_task = label_issues(features=train_task.outputs["features"], ingested=ingest_task.outputs["dataset"],
                                     seed=seed)
    label_issues_task.set_display_name("label issues")
    evaluate_task = evaluate(model=train_task.outputs["model"], ingested=ingest_task.outputs["dataset"],
                             dataset=preprocess_task.outputs["dataset"])
    evaluate_task.set_display_name("evaluate")
    select_task = select_champion(
        challenger=train_task.outputs["model"],
        evaluation=evaluate_task.outputs["evaluation"],
        ingested=ingest_task.outputs["dataset"],
        dataset=preprocess_task.outputs["dataset"],
        suspects=label_issues_task.outputs["suspects"],  # copied into the registry beside the version
        registry_uri=registry_uri,
        champion_metric=champion_metric,
        champion_margin=champion_margin,
        run_id=run_id,  # '' (a scheduled run): the service's id of the run, below
        pipeline_job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        pipeline_job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    )
    select_task.set_display_name("select champion").set_caching_options(False)  # the registry changes
    with dsl.If(select_task.outputs["Output"] == True, name="promoted"):  # noqa: E712 (KFP condition)
        deploy_task = deploy(
            decision=select_task.outputs["decision_json"],
            deploy_target=deploy_target,
            kserve_name=kserve_name,
            kserve_namespace=kserve_namespace,
            kserve_manifest=kserve_manifest,
            kserve_ready_timeout_s=kserve_ready_timeout_s,
            canary_percent=canary_percent,
            serving_image=serving_image,
            vertex_project=vertex_project,
            vertex_region=vertex_region,
            vertex_model=vertex_model,
            vertex_endpoint=vertex_endpoint,
            vertex_machine_type=vertex_machine_type,
            vertex_min_replicas=vertex_min_replicas,
            vertex_max_replicas=vertex_max_replicas,
        )
        deploy_task.set_display_name("deploy").set_caching_options(False)
