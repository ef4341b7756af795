"""label_from: labels from file names, Kaggle's Dogs vs. Cats and Oxford-IIIT Pet, flat and archived."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catdog import ingest
from catdog.ingest import IngestError, check_usable, ingest_dataset, report_markdown
from catdog.labels import NameMismatch, label_from_name
from pipelines.config import ConfigError, build_config
from tests.helpers import CLASS_COLORS, make_image, tar_folder, zip_folder

KAGGLE_NOT_A_NAME = "file name does not match label_from=kaggle: <label>.<number>.<ext>"
OXFORD_NOT_A_NAME = "file name does not match label_from=oxford_pet: <Breed>_<number>.<ext>"
OXFORD_BREEDS = {"Abyssinian": "cat", "Egyptian_Mau": "cat", "beagle": "dog", "american_pit_bull_terrier": "dog"}


def make_kaggle_train(root: Path, per_class: int = 4) -> Path:
    """root/train/{cat,dog}.<n>.jpg, as in Kaggle's train.zip (one flat train/ folder)."""
    folder = root / "train"
    for c, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            make_image(folder / f"{name}.{i}.jpg", seed=500 + 10 * c + i, color=CLASS_COLORS[name])
    return folder


def make_oxford_images(root: Path, per_breed: int = 2) -> Path:
    """root/images/<Breed>_<n>.jpg: capitalised cat breeds, lower-case dog breeds (Oxford-IIIT Pet)."""
    folder = root / "images"
    for b, (breed, label) in enumerate(OXFORD_BREEDS.items()):
        for i in range(1, per_breed + 1):
            make_image(folder / f"{breed}_{i}.jpg", seed=700 + 10 * b + i, color=CLASS_COLORS[label])
    return folder


def run_ingest(source, tmp_path: Path, **kwargs) -> ingest.IngestResult:
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    return ingest_dataset(str(source), tmp_path / "out", **kwargs)


def labels_by_source(result) -> dict[str, str]:
    return {r.source: r.label for r in result.images}


def skipped(result) -> dict[str, str]:
    return {s.source: s.reason for s in result.skipped}


@pytest.mark.parametrize("name, label", [
    ("cat.0.jpg", "cat"), ("dog.12499.jpg", "dog"), ("Cat.7.JPG", "cat"), ("fox.3.png", "fox"),
])
def test_kaggle_label_is_the_text_before_the_first_dot_lower_cased(name, label):
    assert label_from_name(name, "kaggle") == label


@pytest.mark.parametrize("name, label", [
    ("Abyssinian_1.jpg", "cat"), ("Egyptian_Mau_100.jpg", "cat"), ("British_Shorthair_7.png", "cat"),
    ("beagle_3.jpg", "dog"), ("american_pit_bull_terrier_12.jpg", "dog"), ("great_pyrenees_1.jpg", "dog"),
])
def test_oxford_pet_capital_breed_is_a_cat_lower_case_a_dog(name, label):
    assert label_from_name(name, "oxford_pet") == label


@pytest.mark.parametrize("name, label_from", [
    ("1.jpg", "kaggle"), ("cat.jpg", "kaggle"), ("cat_1.jpg", "kaggle"), ("cat.x.jpg", "kaggle"),
    (".DS_Store", "kaggle"), ("cat.1.2.jpg", "kaggle"),
    ("Abyssinian.jpg", "oxford_pet"), ("cat.0.jpg", "oxford_pet"), ("_1.jpg", "oxford_pet"),
    ("Abyssinian_1", "oxford_pet"), ("1_2.jpg", "oxford_pet"),
])
def test_names_outside_the_pattern_are_refused_with_the_pattern(name, label_from):
    with pytest.raises(NameMismatch, match=f"label_from={label_from}: <"):
        label_from_name(name, label_from)


def test_kaggle_flat_folder(tmp_path):
    folder = make_kaggle_train(tmp_path / "src")
    make_image(folder / "1.jpg", seed=900)  # like Kaggle's unlabelled test1/ photos
    (folder / "notes.txt").write_text("not a photo")
    result = run_ingest(folder, tmp_path, label_from="kaggle")
    assert result.layout == "file_names" and result.class_names == ["cat", "dog"]
    assert labels_by_source(result) == {f"{n}.{i}.jpg": n for n in ("cat", "dog") for i in range(4)}
    assert skipped(result) == {"1.jpg": f"{KAGGLE_NOT_A_NAME}, e.g. cat.0.jpg",
                               "notes.txt": f"{KAGGLE_NOT_A_NAME}, e.g. cat.0.jpg"}
    assert all(r.source_split is None for r in result.images)
    check_usable(result)
    summary = ingest.build_report(result, str(folder))
    markdown = report_markdown(summary)
    assert "labels from file names: label_from=kaggle" in markdown
    assert f"| `1.jpg` | {KAGGLE_NOT_A_NAME}, e.g. cat.0.jpg |" in markdown


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_kaggle_train_archive_with_one_flat_folder(tmp_path, kind):
    """Kaggle's train.zip holds a single train/ folder of photos and no class folders."""
    folder = make_kaggle_train(tmp_path / "src")
    archive = (zip_folder if kind == "zip" else tar_folder)(folder, tmp_path / f"train.{kind}")
    result = run_ingest(archive, tmp_path, label_from="kaggle")
    assert result.class_names == ["cat", "dog"]
    assert labels_by_source(result) == {f"train/{n}.{i}.jpg": n for n in ("cat", "dog") for i in range(4)}
    assert result.skipped == []


def test_the_same_archive_by_folder_fails_saying_to_use_file_names(tmp_path):
    archive = zip_folder(make_kaggle_train(tmp_path / "src"), tmp_path / "train.zip")
    result = run_ingest(archive, tmp_path)  # label_from=folder: train/ looks like a split without classes
    with pytest.raises(IngestError, match="pass label_from=kaggle or label_from=oxford_pet"):
        check_usable(result)


@pytest.mark.parametrize("kind", ["folder", "zip", "tar.gz"])
def test_oxford_pet_images(tmp_path, kind):
    images = make_oxford_images(tmp_path / "src")
    (images / "Abyssinian_100.mat").write_bytes(b"MATLAB 5.0 MAT-file")  # the real images/ has a few
    source = {"folder": lambda: images, "zip": lambda: zip_folder(images, tmp_path / "images.zip"),
              "tar.gz": lambda: tar_folder(images, tmp_path / "images.tar.gz")}[kind]()
    prefix = "" if kind == "folder" else "images/"
    result = run_ingest(source, tmp_path, label_from="oxford_pet")
    assert result.class_names == ["cat", "dog"]
    assert labels_by_source(result) == {f"{prefix}{breed}_{i}.jpg": label
                                        for breed, label in OXFORD_BREEDS.items() for i in (1, 2)}
    assert ingest.class_counts(result) == {"cat": 4, "dog": 4}
    assert list(skipped(result)) == [f"{prefix}Abyssinian_100.mat"]  # the name fits, the content is no image
    assert "not a decodable image" in skipped(result)[f"{prefix}Abyssinian_100.mat"]


def test_kaggle_names_under_oxford_pet_are_skipped_not_guessed(tmp_path):
    folder = make_kaggle_train(tmp_path / "src", per_class=1)
    make_oxford_images(folder, per_breed=1)
    result = run_ingest(folder, tmp_path, label_from="oxford_pet")
    assert {Path(s).name for s in skipped(result)} == {"cat.0.jpg", "dog.0.jpg"}
    assert set(skipped(result).values()) == {f"{OXFORD_NOT_A_NAME}, e.g. Abyssinian_1.jpg (cat) or beagle_7.jpg (dog)"}
    assert len(result.images) == len(OXFORD_BREEDS)


def test_label_map_renames_the_labels_file_names_give(tmp_path):
    folder = make_kaggle_train(tmp_path / "src", per_class=2)
    result = run_ingest(folder, tmp_path, label_from="kaggle", label_map={"cat": "kitten"})
    assert result.class_names == ["dog", "kitten"]
    assert {Path(r.file).parent.name for r in result.images} == {"dog", "kitten"}


def test_a_class_with_only_bad_files_is_named_as_a_class(tmp_path):
    folder = make_kaggle_train(tmp_path / "src", per_class=2)
    (folder / "bird.0.jpg").write_bytes(b"junk")
    result = run_ingest(folder, tmp_path, label_from="kaggle")
    with pytest.raises(IngestError, match=r"^class\(es\) \['bird'\] have no valid image"):
        check_usable(result)


def test_file_names_and_the_feedback_photos(tmp_path):
    folder = make_kaggle_train(tmp_path / "src", per_class=2)
    make_image(tmp_path / "feedback" / "dataset" / "dog" / "a.jpg", seed=999, color=CLASS_COLORS["dog"])
    result = run_ingest(folder, tmp_path, label_from="kaggle", feedback_uri=str(tmp_path / "feedback"))
    assert ingest.build_report(result, str(folder))["class_counts_by_origin"]["feedback"] == {"cat": 0, "dog": 1}


def test_manifest_round_trip(tmp_path):
    result = run_ingest(make_oxford_images(tmp_path / "src"), tmp_path, label_from="oxford_pet")
    assert ingest.load_manifest(tmp_path / "out") == result
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["layout"] == "file_names"


def test_an_unknown_label_from_stops_the_ingest_step(tmp_path):
    """A run started from the KFP or Vertex UI passes its parameters without PipelineConfig."""
    with pytest.raises(IngestError, match="label_from='filename': choose one of folder, kaggle, oxford_pet"):
        run_ingest(make_kaggle_train(tmp_path / "src", per_class=1), tmp_path, label_from="filename")


def test_label_from_is_a_checked_pipeline_parameter():
    assert build_config({}).label_from == "folder"
    assert build_config({"label_from": "oxford_pet"}).label_from == "oxford_pet"
    with pytest.raises(ConfigError, match="label_from: Input should be 'folder', 'kaggle' or 'oxford_pet'"):
        build_config({"label_from": "filename"})


def test_ingest_component_passes_label_from(tmp_path, monkeypatch, capsys):
    from kfp.dsl import Artifact, Dataset, Markdown

    from components.ingest import ingest as component

    folder = make_kaggle_train(tmp_path / "src", per_class=2)
    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path / "cache"))
    dataset = Dataset(uri=str(tmp_path / "dataset"))
    component.python_func(data_uri=str(folder), feedback_uri="", label_from="kaggle", label_map="",
                          min_image_side=32, max_image_pixels=10**6, dataset=dataset,
                          report=Markdown(uri=str(tmp_path / "report")),
                          report_json=Artifact(uri=str(tmp_path / "report.json")))
    assert dataset.metadata["class_counts"] == {"cat": 2, "dog": 2}
    assert "labels from file names: label_from=kaggle" in capsys.readouterr().out
