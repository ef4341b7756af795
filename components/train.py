"""train: MobileNetV2 transfer learning (frozen phase, then fine-tuning) with ONNX export."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    backbone_alpha: float,
    weights: str,
    augmentations: str,
    batch_size: int,
    frozen_epochs: int,
    finetune_epochs: int,
    learning_rate: float,
    finetune_learning_rate: float,
    finetune_layers: int,
    finetune_ema_momentum: float,
    finetune_lr_schedule: str,
    label_smoothing: float,
    finetune_image_scale: float,
    dropout: float,
    early_stopping_patience: int,
    seed: int,
    test_time_flip: bool,
    test_time_crop: float,
    model: Output[Model],
    curves: Output[HTML],
    features: Output[Dataset],
):
    """Train on the preprocessed splits; write model.keras, model.onnx, metadata.json and curves, and
    the frozen phase's pooled features of the train and validation photos (for label-issues)."""
    from pathlib import Path

    from catdog.train import TrainParams, curves_html, train_model

    params = TrainParams(
        backbone_alpha=backbone_alpha, weights=weights, augmentations=augmentations,
        batch_size=batch_size, frozen_epochs=frozen_epochs, finetune_epochs=finetune_epochs,
        learning_rate=learning_rate, finetune_learning_rate=finetune_learning_rate,
        finetune_layers=finetune_layers, finetune_ema_momentum=finetune_ema_momentum,
        finetune_lr_schedule=finetune_lr_schedule, label_smoothing=label_smoothing,
        finetune_image_scale=finetune_image_scale, dropout=dropout,
        early_stopping_patience=early_stopping_patience, seed=seed, test_time_flip=test_time_flip,
        test_time_crop=test_time_crop,
    )
    metadata = train_model(Path(dataset.path), Path(model.path), params, features_dir=Path(features.path))
    Path(curves.path).write_text(curves_html(metadata["history"]))
    model.metadata.update({
        "framework": "keras+onnx", "class_names": metadata["class_names"],
        "image_size": metadata["image_size"], "best_val_accuracy": metadata["best_val_accuracy"],
        "data_fingerprint": metadata["data_fingerprint"],
    })
