"""Train: MobileNetV2 transfer learning, a frozen-backbone phase then fine-tuning of the top layers.

Progress (catdog/progress.py, through $CATDOG_PROGRESS in a local run): the "features" phase (the
frozen backbone's features of every train photo, its mirror image, and every validation photo, computed
once: most of the frozen phase's time), one "epoch" event per epoch with an estimate of the phase's
remaining time (an upper bound: early stopping may end a phase sooner), and the "export" phase.
Each also prints one compact line.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from catdog import dataset as data
from catdog.augment import build_augmentation
from catdog.figures import png_base64
from catdog.model import HEAD_NAME, at_fixed_size, build_model, save_model_dir, unfreeze_top
from catdog.model_files import load_metadata
from catdog.ood import fit_ood
from catdog.preprocessing import PREPROCESSING_SPEC
from catdog.progress import ProgressWriter, Throttle, duration, epoch_line
from catdog.test_time_views import CENTRE_VIEW_BELOW, test_time_input_size, with_test_time_views


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
    finetune_ema_momentum: float
    finetune_lr_schedule: str
    label_smoothing: float
    finetune_image_scale: float
    dropout: float
    early_stopping_patience: int
    seed: int
    test_time_flip: bool
    test_time_crop: float


def finetune_size(image_size: int, params: TrainParams) -> int:
    """The fine-tuning resolution in pixels: finetune_image_scale of image_size."""
    return int(round(image_size * params.finetune_image_scale))


def _datasets(dataset_dir: Path, params: TrainParams, num_classes: int, image_size: int):
    """Training batches (streamed from the shards, shuffled, augmented, then downscaled to the
    fine-tuning resolution when it is lower) and validation batches (at image_size, as served).
    Nothing is cached: memory stays flat however many photos there are (docs/BENCHMARKS.md, scale).
    Labels are one-hot when label_smoothing > 0 (training_loss), class indices otherwise."""
    size = finetune_size(image_size, params)
    augment = build_augmentation(params.augmentations, params.seed, None if size == image_size else size)
    encode = _label_encoder(params, num_classes)
    train = (
        data.load_split(dataset_dir, "train", shuffle_seed=params.seed)
        .batch(params.batch_size)
        .map(lambda x, y: (augment(x, training=True), encode(y)), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = (data.load_split(dataset_dir, "validation").batch(params.batch_size)
                  .map(lambda x, y: (x, encode(y))).prefetch(tf.data.AUTOTUNE))
    return train, validation


def training_loss(params: TrainParams) -> keras.losses.Loss:
    """Cross-entropy on class indices; with label_smoothing > 0, Keras' categorical cross-entropy
    with label smoothing (the sparse one has none), on one-hot labels (_label_encoder)."""
    if params.label_smoothing:
        return keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def _label_encoder(params: TrainParams, num_classes: int):
    """Class indices -> what training_loss expects (one-hot rows when smoothing, else unchanged)."""
    if params.label_smoothing:
        return lambda y: tf.one_hot(tf.cast(y, tf.int32), num_classes)
    return lambda y: y


class EpochProgress(keras.callbacks.Callback):
    """One progress event and one compact printed line per epoch, with the phase's estimated remaining
    time (mean epoch time x epochs left: an upper bound, early stopping may end the phase sooner)."""

    def __init__(self, progress: ProgressWriter, phase: str, epochs: int, first_epoch: int = 0):
        super().__init__()
        self.progress, self.phase, self.epochs, self.first_epoch = progress, phase, epochs, first_epoch
        self.times: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.monotonic() - self._started)
        n = epoch - self.first_epoch + 1
        eta = sum(self.times) / len(self.times) * (self.epochs - n)
        values = {k: round(float(v), 4) for k, v in (logs or {}).items()
                  if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        self.progress.emit("epoch", phase=self.phase, epoch=n, epochs=self.epochs,
                           seconds=round(self.times[-1], 2), eta_s=round(eta, 1), **values)
        print(epoch_line(self.phase, n, self.epochs, self.times[-1], eta, values), flush=True)


def _callbacks(params: TrainParams, checkpoint: Path | None, plateau: bool = True) -> list[keras.callbacks.Callback]:
    """Early stopping on val_loss (restoring the best epoch's weights), and, when `plateau`, the rate
    cut by 0.3 when val_loss stalls (not with a rate schedule: its rate cannot be set)."""
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=params.early_stopping_patience, restore_best_weights=True
        ),
    ]
    if plateau:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.3, patience=max(1, params.early_stopping_patience - 1)))
    if checkpoint is not None:
        callbacks.append(keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True))
    return callbacks


class FeatureCount:
    """Counts the photos whose features were computed; a throttled "features" phase event with an estimate."""

    def __init__(self, progress: ProgressWriter, total: int):
        self.progress, self.total, self.done = progress, total, 0
        self.started, self._throttle = time.monotonic(), Throttle()
        progress.emit("phase", phase="features", done=0, total=total)
        print(f"features: the frozen backbone's features of {total} photos, computed once", flush=True)

    def add(self, n: int) -> None:
        self.done += n
        if self._throttle(self.done, self.total):
            elapsed = time.monotonic() - self.started
            eta = elapsed / self.done * (self.total - self.done)
            self.progress.emit("phase", phase="features", done=self.done, total=self.total,
                               seconds=round(elapsed, 1), eta_s=round(eta, 1))
            if self.done >= self.total:
                print(f"features: {self.done} photos in {duration(elapsed)}", flush=True)


def pooled_features(model: keras.Model, dataset_dir: Path, split: str, mirrored: bool,
                    batch_size: int, count: FeatureCount | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The frozen backbone's pooled features of a split's photos (and of their mirror images when
    `mirrored`), with their labels: what the head sees in the frozen phase, computed once."""
    extractor = keras.Model(model.inputs, model.get_layer("dropout").input)
    return data.split_features(extractor, dataset_dir, split, batch_size, mirrored,
                               on_batch=None if count is None else count.add)


FEATURES_EXTRACTOR = "the frozen ImageNet backbone's pooled features (global average of out_relu), before training"


def save_features(features_dir: Path, dataset_dir: Path, train: tuple[np.ndarray, np.ndarray],
                  validation: tuple[np.ndarray, np.ndarray], mirrored: bool, batch_size: int) -> None:
    """features.npz (catdog.dataset.save_split_features) of the train photos themselves (their
    mirror images left out) and the validation photos: what the label-issues step reads."""
    rows = data.original_rows(len(train[0]) // (2 if mirrored else 1), batch_size, mirrored)
    data.save_split_features(features_dir, dataset_dir, {"train": (train[0][rows], train[1][rows]),
                                                         "validation": validation}, FEATURES_EXTRACTOR)


def train_head(model: keras.Model, dataset_dir: Path, params: TrainParams, loss,
               progress: ProgressWriter | None = None, features_dir: Path | None = None) -> dict[str, list[float]]:
    """The frozen phase on features computed once: the backbone is frozen and its BatchNorm in
    inference mode, so the head's inputs change only with the augmentation. Augmenting every epoch
    costs a backbone pass per photo per epoch (4 epochs: about 60 s of the 2,000-photo benchmark);
    this passes each photo once (twice with "flip": it and its mirror image) and then trains the
    head in well under a second an epoch. The other augmentations apply in fine-tuning.
    features_dir: where those features are also written (save_features), for the label-issues step."""
    progress = progress or ProgressWriter(None)
    mirrored = "flip" in params.augmentations.split(",")
    splits = data.load_metadata(dataset_dir)["splits"]
    count = FeatureCount(progress, splits["train"]["count"] * (2 if mirrored else 1) + splits["validation"]["count"])
    train_x, train_y = pooled_features(model, dataset_dir, "train", mirrored, params.batch_size, count)
    val_x, val_y = pooled_features(model, dataset_dir, "validation", False, params.batch_size, count)
    if features_dir is not None:
        save_features(features_dir, dataset_dir, (train_x, train_y), (val_x, val_y), mirrored, params.batch_size)
    dense = model.get_layer(HEAD_NAME)
    head = keras.Sequential([keras.Input(train_x.shape[1:]), keras.layers.Dropout(model.get_layer("dropout").rate),
                             keras.layers.Dense(dense.units, activation="softmax")])
    head.layers[-1].set_weights(dense.get_weights())
    head.compile(optimizer=keras.optimizers.Adam(params.learning_rate), loss=loss, metrics=["accuracy"])
    encode = _label_encoder(params, dense.units)
    fit = head.fit(train_x, encode(train_y), validation_data=(val_x, encode(val_y)), epochs=params.frozen_epochs,
                   batch_size=params.batch_size, shuffle=True, verbose=0,
                   callbacks=[*_callbacks(params, None), EpochProgress(progress, "frozen", params.frozen_epochs)])
    dense.set_weights(head.layers[-1].get_weights())
    return fit.history


def finetune_optimizer(params: TrainParams, train_count: int) -> keras.optimizers.Optimizer:
    """Adam at the fine-tuning rate; with finetune_ema_momentum > 0, Keras' own exponential moving
    average of the weights (use_ema), written into the model at the last step of every epoch
    (ema_overwrite_frequency = steps per epoch): each epoch's validation, early stopping's best
    weights and the exported model are the averaged weights, and the next epoch continues from them.
    finetune_lr_schedule "cosine": the rate decays from finetune_learning_rate to 0 over finetune_epochs
    epochs (Keras' CosineDecay), instead of being cut on a plateau (_callbacks)."""
    steps_per_epoch = max(1, -(-train_count // params.batch_size))
    rate = params.finetune_learning_rate
    if params.finetune_lr_schedule == "cosine":  # from the rate down to 0 at the last allowed epoch
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=steps_per_epoch * max(1, params.finetune_epochs))
    if not params.finetune_ema_momentum:
        return keras.optimizers.Adam(rate)
    return keras.optimizers.Adam(rate, use_ema=True, ema_momentum=params.finetune_ema_momentum,
                                 ema_overwrite_frequency=steps_per_epoch)


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


def train_model(dataset_dir: Path, output_dir: Path, params: TrainParams,
                progress: ProgressWriter | None = None, features_dir: Path | None = None) -> dict:
    """Train and write model.keras, model.onnx (and centre.onnx) and metadata.json to output_dir (the
    serving model: probabilities and Grad-CAM outputs, see catdog.model.save_model_dir); return the
    metadata.

    progress: where the phases and epochs go (default: $CATDOG_PROGRESS, as the train step runs it).
    features_dir: where the frozen phase's features go (save_features); with frozen_epochs=0 there is
    no frozen phase, and they are computed for it (the one extra backbone pass).
    finetune_image_scale < 1: the model is built for any input size, fine-tunes on downscaled photos
    and validates at image_size; the exported copy has its input fixed at image_size."""
    progress = progress or ProgressWriter.from_environment("train")
    keras.utils.set_random_seed(params.seed)
    meta = data.load_metadata(dataset_dir)
    image_size = meta["image_size"]
    train, validation = _datasets(dataset_dir, params, len(meta["class_names"]), image_size)
    any_size = bool(params.finetune_epochs) and finetune_size(image_size, params) != image_size
    strategy = distribution_strategy()
    with strategy.scope():  # the model's variables live on every replica
        model = build_model(len(meta["class_names"]), None if any_size else image_size, params.backbone_alpha,
                            params.weights, params.dropout)
    loss = training_loss(params)
    history: list[dict] = []
    checkpoint = Path(output_dir).parent / f"{Path(output_dir).name}-best.keras"
    started = time.monotonic()
    if params.frozen_epochs:  # outside the scope: predict_on_batch would run the whole batch on every replica
        frozen = train_head(model, dataset_dir, params, loss, progress, features_dir)
        history += [{"phase": "frozen", "epoch": i + 1, **{k: float(v[i]) for k, v in frozen.items()}}
                    for i in range(len(frozen["loss"]))]
    elif features_dir is not None:
        save_features(features_dir, dataset_dir, pooled_features(model, dataset_dir, "train", False, params.batch_size),
                      pooled_features(model, dataset_dir, "validation", False, params.batch_size), False,
                      params.batch_size)
    if params.finetune_epochs:
        at = "" if not any_size else f", on photos at {finetune_size(image_size, params)} px (validation at {image_size})"
        print(f"fine-tuning: {unfreeze_top(model, params.finetune_layers)} backbone layers trainable{at}")
        with strategy.scope():  # the optimizer's variables too; fit splits each batch across the replicas
            model.compile(optimizer=finetune_optimizer(params, meta["splits"]["train"]["count"]), loss=loss,
                          metrics=["accuracy"])
            initial = len(history)
            fit = model.fit(
                train, validation_data=validation, epochs=initial + params.finetune_epochs, initial_epoch=initial,
                shuffle=False,  # the dataset shuffles itself (load_split); Keras would ignore it and warn
                callbacks=[*_callbacks(params, checkpoint, plateau=params.finetune_lr_schedule == "plateau"),
                           EpochProgress(progress, "fine-tuning", params.finetune_epochs, initial)], verbose=0,
            )
        history += [{"phase": "finetune", "epoch": initial + i + 1, **{k: float(v[i]) for k, v in fit.history.items()}}
                    for i in range(len(fit.history["loss"]))]
    checkpoint.unlink(missing_ok=True)
    best = min(history, key=lambda h: h["val_loss"]) if history else {}
    metadata = {
        "class_names": meta["class_names"],
        "image_size": image_size,
        "finetune_image_size": finetune_size(image_size, params) if params.finetune_epochs else None,
        "preprocessing": PREPROCESSING_SPEC,
        "architecture": architecture(params, image_size),
        "training_parameters": asdict(params),
        "data_fingerprint": meta["fingerprint"],
        "split_counts": {s: info["count"] for s, info in meta["splits"].items()},
        "history": history,
        "best_val_accuracy": best.get("val_accuracy"),
        "train_seconds": round(time.monotonic() - started, 1),
    }
    if any_size:
        model = at_fixed_size(model, image_size, params.backbone_alpha)
    progress.emit("phase", phase="export")
    print("export: the Keras and ONNX models", flush=True)
    with warnings.catch_warnings():
        # keras' tf2onnx bridge probes np.object, which NumPy 2 warns about; nothing here can change that
        warnings.filterwarnings("ignore", message="In the future `np.object`", category=FutureWarning)
        # the "neither" score's statistics: one pass over train and validation with the final weights (catdog.ood)
        ood = fit_ood(model, dataset_dir, params.test_time_flip, params.batch_size)
        save_model_dir(with_test_time_views(model, params.test_time_flip, params.test_time_crop, ood), output_dir, metadata)
    return load_metadata(output_dir)  # with the outputs and explanation fields save_model_dir adds


def architecture(params: TrainParams, image_size: int) -> str:
    """metadata.json's one-line description of the serving model (catdog.test_time_views)."""
    text = f"MobileNetV2(alpha={params.backbone_alpha}) + avg pool + dropout + softmax"
    if params.test_time_crop < 1:
        mirrored = " and its mirror image" if params.test_time_flip else ""
        views = (f"the whole photo{mirrored}; for a photo whose top probability is below {CENTRE_VIEW_BELOW}, also "
                 f"its centre {params.test_time_crop:.0%}{mirrored} (input "
                 f"{test_time_input_size(image_size, params.test_time_crop)} px, each view at {image_size})")
    elif params.test_time_flip:
        views = "the image and its mirror image"
    else:
        return text
    return f"{text}, averaged over {views}"


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
    image = png_base64(fig)
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
