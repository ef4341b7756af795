"""Train: MobileNetV2 transfer learning, a frozen-backbone phase then fine-tuning of the top layers."""

from __future__ import annotations

import base64
import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import tensorflow as tf

from catdog import dataset as data
from catdog.augment import build_augmentation
from catdog.model import build_model, save_model_dir, unfreeze_top, with_flip_averaging
from catdog.model_files import load_metadata
from catdog.preprocessing import PREPROCESSING_SPEC


@dataclass(frozen=True)
class TrainParams:
    """Training parameters; their defaults live in pipelines/config.py (PipelineConfig) only."""

    backbone_alpha: float
    weights: str
    augmentations: str
    batch_size: int
    frozen_epochs: int
    finetune_epochs: int
    learning_rate: float
    finetune_learning_rate: float
    finetune_layers: int
    dropout: float
    early_stopping_patience: int
    seed: int
    test_time_flip: bool


def _datasets(dataset_dir: Path, params: TrainParams):
    """Training batches (streamed from the shards, shuffled, augmented) and validation batches.
    Nothing is cached: memory stays flat however many photos there are (docs/BENCHMARKS.md, scale)."""
    augment = build_augmentation(params.augmentations, params.seed)
    train = (
        data.load_split(dataset_dir, "train", shuffle_seed=params.seed)
        .batch(params.batch_size)
        .map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = data.load_split(dataset_dir, "validation").batch(params.batch_size).prefetch(tf.data.AUTOTUNE)
    return train, validation


def _callbacks(params: TrainParams, checkpoint: Path) -> list[keras.callbacks.Callback]:
    return [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=params.early_stopping_patience, restore_best_weights=True
        ),
        keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=max(1, params.early_stopping_patience - 1)),
    ]


def train_model(dataset_dir: Path, output_dir: Path, params: TrainParams) -> dict:
    """Train and write model.keras, model.onnx and metadata.json to output_dir (the serving model:
    probabilities and Grad-CAM outputs, see catdog.model.save_model_dir); return the metadata."""
    keras.utils.set_random_seed(params.seed)
    meta = data.load_metadata(dataset_dir)
    train, validation = _datasets(dataset_dir, params)
    model = build_model(len(meta["class_names"]), meta["image_size"], params.backbone_alpha, params.weights, params.dropout)
    loss = keras.losses.SparseCategoricalCrossentropy()
    history: list[dict] = []
    checkpoint = Path(output_dir).parent / f"{Path(output_dir).name}-best.keras"
    started = time.monotonic()
    phases = [("frozen", params.frozen_epochs, params.learning_rate, 0),
              ("finetune", params.finetune_epochs, params.finetune_learning_rate, params.finetune_layers)]
    for phase, epochs, lr, n_unfrozen in phases:
        if epochs == 0:
            continue
        if n_unfrozen:
            print(f"fine-tuning: {unfreeze_top(model, n_unfrozen)} backbone layers trainable")
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=["accuracy"])
        initial = len(history)
        fit = model.fit(
            train, validation_data=validation, epochs=initial + epochs, initial_epoch=initial,
            callbacks=_callbacks(params, checkpoint), verbose=2,
        )
        n = len(fit.history["loss"])
        history += [{"phase": phase, "epoch": initial + i + 1, **{k: float(v[i]) for k, v in fit.history.items()}}
                    for i in range(n)]
    checkpoint.unlink(missing_ok=True)
    best = min(history, key=lambda h: h["val_loss"]) if history else {}
    metadata = {
        "class_names": meta["class_names"],
        "image_size": meta["image_size"],
        "preprocessing": PREPROCESSING_SPEC,
        "architecture": f"MobileNetV2(alpha={params.backbone_alpha}) + avg pool + dropout + softmax"
                        + (", averaged over the image and its mirror image" if params.test_time_flip else ""),
        "training_parameters": asdict(params),
        "data_fingerprint": meta["fingerprint"],
        "split_counts": {s: info["count"] for s, info in meta["splits"].items()},
        "history": history,
        "best_val_accuracy": best.get("val_accuracy"),
        "train_seconds": round(time.monotonic() - started, 1),
    }
    save_model_dir(with_flip_averaging(model) if params.test_time_flip else model, output_dir, metadata)
    return load_metadata(output_dir)  # with the outputs and explanation fields save_model_dir adds


def curves_html(history: list[dict]) -> str:
    """Training curves (loss and accuracy, train vs validation) as a self-contained HTML page."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, [h[key] for h in history], "o-", label=f"train {key}")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", label=f"validation {key}")
        switch = next((h["epoch"] for h in history if h["phase"] == "finetune"), None)
        if switch:
            ax.axvline(switch - 0.5, color="grey", linestyle="--", label="fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    image = base64.b64encode(buffer.getvalue()).decode()
    rows = "".join(
        f"<tr><td>{h['epoch']}</td><td>{h['phase']}</td><td>{h['loss']:.4f}</td><td>{h['accuracy']:.4f}</td>"
        f"<td>{h['val_loss']:.4f}</td><td>{h['val_accuracy']:.4f}</td></tr>"
        for h in history
    )
    return (
        "<html><body><h2>Training curves</h2>"
        f'<img alt="training curves" src="data:image/png;base64,{image}"/>'
        "<table border=1><tr><th>epoch</th><th>phase</th><th>loss</th><th>accuracy</th>"
        f"<th>val loss</th><th>val accuracy</th></tr>{rows}</table></body></html>"
    )
