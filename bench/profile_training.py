"""`make profile-train`: where a training epoch's time goes: the input pipeline (decode, each
augmentation layer) against the network's step, frozen and fine-tuning, on the shared photos.

    python -m bench.profile_training --data ../shared/data/cats_and_dogs --weights ...h5 [--image-size 256]

Each part is timed alone on the same machine in one run (the input pipeline drained without a
model; the model stepped on a fixed batch), so the table shows which cost to cut first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.report import machine_description, today, update_section
from pipelines.config import PipelineConfig

BATCH = 32
STEPS = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--image-size", type=int, default=PipelineConfig().image_size)
    parser.add_argument("--finetune-layers", default="50,100", help="fine-tuning depths to time")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from catdog import dataset as data
    from catdog.augment import AUGMENTATION_LAYERS, build_augmentation
    from catdog.ingest import ingest_dataset
    from catdog.model import build_model, unfreeze_top

    work = Path(tempfile.mkdtemp(prefix="catdog-profile-"))
    result = ingest_dataset(args.data, work / "ingested", cache_dir=work / "cache")
    data.write_dataset(result, work / "ingested", work / "dataset", data.SplitRatios(0.7, 0.2, 0.1),
                       args.image_size, 42, 40_000_000)
    n_train = data.load_metadata(work / "dataset")["splits"]["train"]["count"]
    steps = n_train // BATCH
    rows = []

    def drain(spec: str) -> float:
        stream = data.load_split(work / "dataset", "train", shuffle_seed=42).batch(BATCH)
        if spec:
            augment = build_augmentation(spec, 42)
            stream = stream.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        began = time.perf_counter()
        for _ in stream.prefetch(tf.data.AUTOTUNE):
            pass
        return time.perf_counter() - began

    rows.append(("input: read + decode the shards", drain("")))
    batch = tf.random.uniform((BATCH, args.image_size, args.image_size, 3), 0, 255)
    for name, make in AUGMENTATION_LAYERS.items():
        layer = make(1)
        step = tf.function(lambda x, layer=layer: layer(x, training=True))
        step(batch)
        began = time.perf_counter()
        for _ in range(STEPS):
            step(batch)
        rows.append((f"augmentation `{name}` (one batch at a time, x {steps} batches)",
                     (time.perf_counter() - began) / STEPS * steps))
    labels = tf.zeros((BATCH,), tf.int32)
    depths = [int(d) for d in args.finetune_layers.split(",")]
    for phase, n_unfrozen in [("frozen backbone", 0), *((f"fine-tuning the top {d} layers", d) for d in depths)]:
        model = build_model(2, args.image_size, 0.35, args.weights, 0.2)
        if n_unfrozen:
            unfreeze_top(model, n_unfrozen)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.SparseCategoricalCrossentropy())
        model.train_on_batch(batch, labels)
        began = time.perf_counter()
        for _ in range(STEPS):
            model.train_on_batch(batch, labels)
        rows.append((f"network step, {phase}", (time.perf_counter() - began) / STEPS * steps))
    lines = [
        "## Where a training epoch's time goes (`make profile-train`)",
        "",
        f"- command: `python -m bench.profile_training {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- machine: {machine_description()}; date: {today()}",
        f"- one epoch of {n_train} training photos at {args.image_size} px, batches of {BATCH}; each part timed alone",
        "",
        "| part | seconds per epoch |",
        "| --- | --- |",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in rows],
    ]
    markdown = "\n".join(lines)
    print(markdown)
    print(f"wrote {update_section('profile-train', markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
