"""Where a photo's label comes from: its class folder (label_from=folder) or its file name.

- folder: one sub-folder per class (cat/, dog/), or train/ and validation/ folders that each hold
  class folders (cats_and_dogs_filtered); label_map renames folders to labels.
- kaggle: Kaggle's Dogs vs. Cats, a flat folder of <label>.<number>.<ext> (cat.0.jpg, dog.12.jpg):
  the label is the text before the first dot, lower-cased.
- oxford_pet: Oxford-IIIT Pet's images/<Breed>_<number>.<ext> (Abyssinian_1.jpg, beagle_7.jpg):
  the breed is the name before the last _<number>; the dataset's own convention is a capital
  first letter for cat breeds and a lower-case one for dogs, so the label is cat or dog.

With either file-name source, label_map then renames the label, and a file whose name does not
match the pattern is skipped with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from catdog.sources import IngestError

LabelFrom = Literal["folder", "kaggle", "oxford_pet"]
LABEL_FROM: tuple[LabelFrom, ...] = ("folder", "kaggle", "oxford_pet")
DEFAULT_LABEL_MAP = "cats=cat,dogs=dog"  # the folders of cats_and_dogs_filtered -> served labels
SOURCE_SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation"}
IGNORED_DIRS = {"__MACOSX"}
_KAGGLE = re.compile(r"(?P<label>[A-Za-z][A-Za-z0-9_-]*)\.\d+\.[A-Za-z0-9]+")
_OXFORD_PET = re.compile(r"(?P<breed>[A-Za-z][A-Za-z0-9_-]*)_\d+\.[A-Za-z0-9]+")
NAME_PATTERNS = {"kaggle": "<label>.<number>.<ext>, e.g. cat.0.jpg",
                 "oxford_pet": "<Breed>_<number>.<ext>, e.g. Abyssinian_1.jpg (cat) or beagle_7.jpg (dog)"}


class NameMismatch(ValueError):
    """A file name that does not match the label_from pattern; str(error) is the skip reason."""


def label_from_name(name: str, label_from: LabelFrom) -> str:
    """The label a file name gives under `label_from` ('kaggle' or 'oxford_pet'), before label_map."""
    pattern = _KAGGLE if label_from == "kaggle" else _OXFORD_PET
    match = pattern.fullmatch(name)
    if not match:
        raise NameMismatch(f"file name does not match label_from={label_from}: {NAME_PATTERNS[label_from]}")
    if label_from == "kaggle":
        return match["label"].lower()
    return "cat" if match["breed"][0].isupper() else "dog"


def parse_label_map(spec: str) -> dict[str, str]:
    """'cats=cat,dogs=dog' -> {'cats': 'cat', 'dogs': 'dog'}; raises ValueError on a malformed entry."""
    mapping = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        folder, sep, label = (part.strip() for part in entry.partition("="))
        if not sep or not folder or not label:
            raise ValueError(f"label_map entry {entry!r} is not folder=label")
        mapping[folder] = label
    return mapping


def relabel(classes: dict[str, Path], label_map: dict[str, str]) -> dict[str, Path]:
    relabelled: dict[str, Path] = {}
    for name, folder in classes.items():
        label = label_map.get(name, name)
        if label in relabelled:
            raise IngestError(f"folders {relabelled[label].name!r} and {name!r} both map to label {label!r}")
        relabelled[label] = folder
    return relabelled


def subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and p.name not in IGNORED_DIRS and not p.name.startswith("."))


def files_below(folder: Path) -> list[Path]:
    """Every file below a folder, sorted (archive litter such as __MACOSX left out)."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and not any(part in IGNORED_DIRS for part in p.parts)]


def find_class_folders(root: Path) -> tuple[str, dict[str | None, dict[str, Path]]]:
    """Detect the layout: {source_split: {class: folder}}; source_split is None without a split."""
    while True:  # descend through a single wrapping folder (one that holds folders), as archives often have
        dirs = subdirs(root)
        files = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
        if len(dirs) == 1 and not files and subdirs(dirs[0]):
            root = dirs[0]
        else:
            break
    names = {d.name.lower(): d for d in dirs}
    split_dirs = {SOURCE_SPLIT_NAMES[n]: d for n, d in names.items() if n in SOURCE_SPLIT_NAMES}
    if "train" in split_dirs:
        if set(names) - set(SOURCE_SPLIT_NAMES) - {"test"}:
            raise IngestError(f"{root} mixes split folders (train/validation) with other folders: {sorted(names)}")
        return "train_validation", {s: {c.name: c for c in subdirs(d)} for s, d in split_dirs.items()}
    return "class_folders", {None: {d.name: d for d in dirs}}
