"""The training pipeline: ingest -> preprocess (more steps join as they land).

Parameter defaults come from PipelineConfig, the one typed parameter set; a test checks that the
pipeline's parameters and the config's fields are the same.
"""

from kfp import dsl

from components.ingest import ingest
from components.preprocess import preprocess
from pipelines.config import PipelineConfig

PIPELINE_NAME = "catdog-training"
_D = PipelineConfig()


@dsl.pipeline(name=PIPELINE_NAME, description="Train, select and deploy a cats-vs-dogs classifier.")
def training_pipeline(
    data_uri: str = _D.data_uri,
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
    dropout: float = _D.dropout,
    early_stopping_patience: int = _D.early_stopping_patience,
    registry_uri: str = _D.registry_uri,
    champion_metric: str = _D.champion_metric,
    champion_margin: float = _D.champion_margin,
):
    ingest_task = ingest(data_uri=data_uri, min_image_side=min_image_side, max_image_pixels=max_image_pixels)
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
