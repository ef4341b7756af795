"""A run's suspects (the label-issues step's list) kept in the model registry, beside its version.

The feedback app imports the CHAMPION's run's suspects into its review queue, wherever the pipeline
ran (kfp.local, Kubeflow, Vertex AI): a pipeline artifact's URI is not readable everywhere (a
Kubeflow artifact lives in the cluster's object store), but the registry is (a local folder or a
gs:// prefix, read through catdog.storage). So select-champion copies the list, and the photos
it names, into the registry:

    <registry>/suspects/v<N>/suspects.json         {"format": 1, "run_id", "version", "written_at",
                                                    "class_names", "suspects": [entry, ...]}
    <registry>/suspects/v<N>/photos/<sha256><ext>  each listed photo's bytes, from the ingest snapshot

Entries are catdog.label_issues' (rank, sha256, split, origin, source, file, given_label,
probabilities, label_quality, outlier_score, reasons, duplicates) plus "photo": the photo's path
relative to suspects.json's folder. The photos are written first and suspects.json last, so a
suspects.json that exists names photos that exist. The champion alias records the file's URI
("suspects_uri", catdog.champion.select_champion); suspects_of_champion reads it. Outside
versions/<N>/, so fetching a model (the predictor, the champion re-score) never downloads photos.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from catdog import storage
from catdog.registry import ModelRegistry

SUSPECTS_DIR = "suspects"
SUSPECTS_FILE = "suspects.json"
FORMAT = 1


def suspects_uri(registry: ModelRegistry, version: int) -> str:
    return storage.join(registry.uri, SUSPECTS_DIR, f"v{version}", SUSPECTS_FILE)


def record_suspects(registry: ModelRegistry, version: int, entries: list[dict], ingest_dir: Path,
                    run_id: str | None, class_names: list[str]) -> str:
    """Copy the entries' photos from the ingest snapshot, then write suspects.json; returns its URI."""
    uri = suspects_uri(registry, version)
    base = uri.rsplit("/", 1)[0] if storage.is_gcs(uri) else str(Path(uri).parent)
    recorded = []
    for entry in entries:
        photo = f"photos/{entry['sha256']}{Path(entry['file']).suffix}"
        storage.write_bytes(storage.join(base, photo), (Path(ingest_dir) / entry["file"]).read_bytes())
        recorded.append({**entry, "photo": photo})
    document = {"format": FORMAT, "run_id": run_id, "version": version, "class_names": class_names,
                "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "suspects": recorded}
    storage.write_text(uri, json.dumps(document, indent=1))
    return uri


def read_suspects(uri: str) -> dict:
    """The document suspects.json holds (module docstring)."""
    document = json.loads(storage.read_text(uri))
    if not isinstance(document, dict) or not isinstance(document.get("suspects"), list):
        raise ValueError(f'{uri}: expected {{"suspects": [...]}}')
    return document


def photo_uri(uri: str, entry: dict) -> str:
    """Where an entry's photo is, given suspects.json's URI."""
    base = uri.rsplit("/", 1)[0] if storage.is_gcs(uri) else str(Path(uri).parent)
    return storage.join(base, entry["photo"])


def suspects_of_champion(registry_uri: str) -> tuple[dict | None, str | None]:
    """(the champion alias record, its suspects.json URI); the URI is None when there is no champion
    or its run recorded no suspects (a champion promoted before this existed)."""
    champion = ModelRegistry(registry_uri).champion()
    return champion, (champion or {}).get("suspects_uri")
