"""preprocess: seeded stratified split, decode + resize once, TFRecord shards."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def preprocess(
    ingested: Input[Dataset],
    train_split: float,
    val_split: float,
    test_split: float,
    image_size: int,
    seed: int,
    max_image_pixels: int,
    dataset: Output[Dataset],
):
    """Split the ingested images and write resized TFRecord shards for tf.data."""
    from pathlib import Path

    from catdog import dataset as lib
    from catdog.ingest import load_manifest

    metadata = lib.write_dataset(
        load_manifest(Path(ingested.path)),
        Path(ingested.path),
        Path(dataset.path),
        lib.SplitRatios(train_split, val_split, test_split),
        image_size,
        seed,
        max_image_pixels,
    )
    dataset.metadata.update(
        {split: info["count"] for split, info in metadata["splits"].items()}
        | {"image_size": image_size, "class_names": metadata["class_names"], "fingerprint": metadata["fingerprint"]}
    )
    print(metadata["split_policy"])
    for split, info in metadata["splits"].items():
        print(f"{split}: {info['count']} images {info['class_counts']}")
