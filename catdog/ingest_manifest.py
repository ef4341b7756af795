"""The ingest snapshot: its image records, skipped files and manifest.json (read by preprocess and
the champion step)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

MANIFEST_NAME = "manifest.json"
Origin = Literal["data", "feedback"]
ORIGINS: tuple[Origin, ...] = ("data", "feedback")


@dataclass(frozen=True)
class ImageRecord:
    file: str  # path inside the ingest output folder
    label: str
    source: str  # path relative to the source root; feedback photos: feedback:<label>/<file>
    source_split: str | None  # "train" / "validation" when the source had its own split
    sha256: str
    width: int
    height: int
    format: str
    origin: Origin = "data"  # "feedback": validated in the feedback app (manifests before it: all data)


@dataclass(frozen=True)
class SkippedFile:
    source: str
    reason: str


@dataclass
class IngestResult:
    class_names: list[str]
    layout: str  # "class_folders", "train_validation" or "file_names"
    images: list[ImageRecord]
    skipped: list[SkippedFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the report must say besides counts
    overrides: dict | None = None  # the label overrides applied (catdog.label_overrides), when feedback was read

    @property
    def fingerprint(self) -> str:
        """Content hash of the dataset: the sorted (sha256, label, source_split[, origin]) entries.

        The origin is appended for feedback photos only, so a dataset without feedback keeps the
        fingerprint it had before feedback existed.
        """
        digest = hashlib.sha256()
        for rec in sorted(self.images, key=lambda r: (r.sha256, r.label)):
            origin = "" if rec.origin == "data" else f":{rec.origin}"
            digest.update(f"{rec.sha256}:{rec.label}:{rec.source_split}{origin}\n".encode())
        return digest.hexdigest()


def class_counts(result: IngestResult) -> dict[str, int]:
    counts = {c: 0 for c in result.class_names}
    for rec in result.images:
        counts[rec.label] += 1
    return counts


def manifest_dict(result: IngestResult) -> dict:
    return {
        "class_names": result.class_names,
        "layout": result.layout,
        "fingerprint": result.fingerprint,
        "images": [asdict(r) for r in result.images],
        "skipped": [asdict(s) for s in result.skipped],
        "notes": result.notes,
        "overrides": result.overrides,
    }


def load_manifest(dataset_dir: Path) -> IngestResult:
    """The ingest result from manifest.json (manifests written before feedback existed included)."""
    data = json.loads((Path(dataset_dir) / MANIFEST_NAME).read_text())
    return IngestResult(
        class_names=data["class_names"],
        layout=data["layout"],
        images=[ImageRecord(**r) for r in data["images"]],
        skipped=[SkippedFile(**s) for s in data["skipped"]],
        notes=data.get("notes", []),
        overrides=data.get("overrides"),
    )
