"""Train: MobileNetV2 transfer learning, a frozen-backbone phase then fine-tuning of the top layers."""

from __future__ import annotations

import base64
import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from catdog import dataset as data
from catdog.augment import build_augmentation
from catdog.model import HEAD_NAME, build_model, save_model_dir, unfreeze_top, with_flip_averaging
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


def _callbacks(params: TrainParams, checkpoint: Path | None) -> list[keras.callbacks.Callback]:
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=params.early_stopping_patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=max(1, params.early_stopping_patience - 1)),
    ]
    if checkpoint is not None:
        callbacks.append(keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True))
    return callbacks


def pooled_features(model: keras.Model, dataset_dir: Path, split: str, mirrored: bool,
                    batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The frozen backbone's pooled features of a split's photos (and of their mirror images when
    `mirrored`), with their labels: what the head sees in the frozen phase, computed once."""
    extractor = keras.Model(model.inputs, model.get_layer("dropout").input)
    features, labels = [], []
    for x, y in data.load_split(dataset_dir, split).batch(batch_size).as_numpy_iterator():
        for images in ([x, x[:, :, ::-1]] if mirrored else [x]):
            features.append(extractor.predict_on_batch(images))
            labels.append(y)
    return np.concatenate(features), np.concatenate(labels)


def train_head(model: keras.Model, dataset_dir: Path, params: TrainParams, loss) -> dict[str, list[float]]:
    """The frozen phase on features computed once: the backbone is frozen and its BatchNorm in
    inference mode, so the head's inputs change only with the augmentation. Augmenting every epoch
    costs a backbone pass per photo per epoch (4 epochs: about 60 s of the 2,000-photo benchmark);
    this passes each photo once (twice with "flip": it and its mirror image) and then trains the
    head in well under a second an epoch. The other augmentations apply in fine-tuning."""
    mirrored = "flip" in params.augmentations.split(",")
    train_x, train_y = pooled_features(model, dataset_dir, "train", mirrored, params.batch_size)
    val_x, val_y = pooled_features(model, dataset_dir, "validation", False, params.batch_size)
    dense = model.get_layer(HEAD_NAME)
    head = keras.Sequential([keras.Input(train_x.shape[1:]), keras.layers.Dropout(model.get_layer("dropout").rate),
                             keras.layers.Dense(dense.units, activation="softmax")])
    head.layers[-1].set_weights(dense.get_weights())
    head.compile(optimizer=keras.optimizers.Adam(params.learning_rate), loss=loss, metrics=["accuracy"])
    fit = head.fit(train_x, train_y, validation_data=(val_x, val_y), epochs=params.frozen_epochs,
                   batch_size=params.batch_size, shuffle=True, callbacks=_callbacks(params, None), verbose=2)
    dense.set_weights(head.layers[-1].get_weights())
    return fit.history


def distribution_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over the visible GPUs when there are several, else the default strategy
    (one GPU, or the CPU); says which."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        print(f"training on {strategy.num_replicas_in_sync} GPUs: MirroredStrategy", flush=True)
        return strategy
    print(f"training on {'1 GPU' if gpus else 'the CPU'}: default strategy", flush=True)
    return tf.distribute.get_strategy()


def train_model(dataset_dir: Path, output_dir: Path, params: TrainParams) -> dict:
    """Train and write model.keras, model.onnx and metadata.json to output_dir (the serving model:
    probabilities and Grad-CAM outputs, see catdog.model.save_model_dir); return the metadata."""
    keras.utils.set_random_seed(params.seed)
    meta = data.load_metadata(dataset_dir)
    train, validation = _datasets(dataset_dir, params)
    strategy = distribution_strategy()
    with strategy.scope():  # the model's variables live on every replica
        model = build_model(len(meta["class_names"]), meta["image_size"], params.backbone_alpha, params.weights, params.dropout)
    loss = keras.losses.SparseCategoricalCrossentropy()
    history: list[dict] = []
    checkpoint = Path(output_dir).parent / f"{Path(output_dir).name}-best.keras"
    started = time.monotonic()
    if params.frozen_epochs:  # outside the scope: predict_on_batch would run the whole batch on every replica
        frozen = train_head(model, dataset_dir, params, loss)
        history += [{"phase": "frozen", "epoch": i + 1, **{k: float(v[i]) for k, v in frozen.items()}}
                    for i in range(len(frozen["loss"]))]
    if params.finetune_epochs:
        print(f"fine-tuning: {unfreeze_top(model, params.finetune_layers)} backbone layers trainable")
        with strategy.scope():  # the optimizer's variables too; fit splits each batch across the replicas
            model.compile(optimizer=keras.optimizers.Adam(params.finetune_learning_rate), loss=loss, metrics=["accuracy"])
            initial = len(history)
            fit = model.fit(
                train, validation_data=validation, epochs=initial + params.finetune_epochs, initial_epoch=initial,
                shuffle=False,  # the dataset shuffles itself (load_split); Keras would ignore it and warn
                callbacks=_callbacks(params, checkpoint), verbose=2,
            )
        history += [{"phase": "finetune", "epoch": initial + i + 1, **{k: float(v[i]) for k, v in fit.history.items()}}
                    for i in range(len(fit.history["loss"]))]
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
