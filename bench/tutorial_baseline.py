"""The baseline of `make bench`: TensorFlow's transfer-learning tutorial, as written, in plain Keras.

    python -m bench.tutorial_baseline --data ../shared/data/cats_and_dogs --weights ...h5 [--json OUT]

The recipe of https://www.tensorflow.org/tutorials/images/transfer_learning (the tutorial's own
data is cats_and_dogs_filtered, which ../shared/data/cats_and_dogs is laid out like): 160 px
images from `image_dataset_from_directory`, RandomFlip + RandomRotation(0.2) inside the model,
MobileNetV2's `preprocess_input`, a frozen backbone with average pooling, dropout 0.2 and one
logit, 10 epochs of Adam(1e-4), then the layers from 100 on fine-tuned for 10 more epochs with
RMSprop(1e-5). Two changes, so that it runs here and is scored like the pipeline: the backbone is
the alpha 0.35 MobileNetV2 whose weights are in ../shared (no download; the tutorial's alpha 1.0
is 5x the compute), and it is scored on the whole validation/ folder, which is the pipeline's test
split for this layout (the tutorial holds out a fifth of it); it trains on train/, as the tutorial.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

IMAGE_SIZE = 160
BATCH_SIZE = 32
INITIAL_EPOCHS = 10
FINE_TUNE_EPOCHS = 10
FINE_TUNE_AT = 100


def run(data: Path, weights: str, seed: int = 42) -> dict:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    started = time.time()
    size = (IMAGE_SIZE, IMAGE_SIZE)
    train = keras.utils.image_dataset_from_directory(data / "train", shuffle=True, batch_size=BATCH_SIZE,
                                                     image_size=size, seed=seed)
    test = keras.utils.image_dataset_from_directory(data / "validation", shuffle=False, batch_size=BATCH_SIZE,
                                                    image_size=size)
    train, test = train.prefetch(tf.data.AUTOTUNE), test.prefetch(tf.data.AUTOTUNE)
    augmentation = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)])
    base = keras.applications.MobileNetV2(input_shape=(*size, 3), include_top=False, weights=weights, alpha=0.35)
    base.trainable = False
    inputs = keras.Input(shape=(*size, 3))
    x = augmentation(inputs)
    x = keras.applications.mobilenet_v2.preprocess_input(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    metrics = [keras.metrics.BinaryAccuracy(threshold=0, name="accuracy")]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-4), loss=loss, metrics=metrics)
    history = model.fit(train, epochs=INITIAL_EPOCHS, verbose=2)
    base.trainable = True
    for layer in base.layers[:FINE_TUNE_AT]:
        layer.trainable = False
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-5), loss=loss, metrics=metrics)
    model.fit(train, epochs=INITIAL_EPOCHS + FINE_TUNE_EPOCHS, initial_epoch=len(history.epoch), verbose=2)
    _, accuracy = model.evaluate(test, verbose=0)
    return {"accuracy": float(accuracy), "seconds": time.time() - started,
            "n_test": int(sum(int(y.shape[0]) for _, y in test)), "image_size": IMAGE_SIZE,
            "epochs": INITIAL_EPOCHS + FINE_TUNE_EPOCHS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a folder with train/ and validation/ class folders")
    parser.add_argument("--weights", required=True, help="MobileNetV2 alpha 0.35 no-top weights (.h5), or imagenet")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    result = run(args.data, args.weights)
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
