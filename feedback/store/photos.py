"""Photos: checked by content (catdog.preprocessing, the rules of ingest and the predictor) and
stored content-addressed under FEEDBACK_URI, a local folder or a gs:// prefix (catdog.storage).

    <FEEDBACK_URI>/photos/<sha[:2]>/<sha256>.<ext>     every photo anyone uploaded, once, never changed
    <FEEDBACK_URI>/dataset/<label>/<sha256>.<ext>      the validated ones, in ingest's class-folder layout
                                                       (a photo judged "neither" is in none of them)
    <FEEDBACK_URI>/dataset/manifest.json               where each dataset photo came from

File names are content hashes and labels from the configured set, never a name a client sent.
A dataset file is a copy of its original, so moving it between class folders (a correction)
can never lose the photo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass

from catdog import storage
from catdog.preprocessing import EXTENSIONS, ImageHeader, InvalidImageError, validate_image

MANIFEST = "manifest.json"
# Photos decoded at once to check them, per process: with max_pixels this bounds the memory that
# checks take (16 MP RGB: 48 MB each), however many requests arrive together; others wait.
DECODE_SLOTS = threading.BoundedSemaphore(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                          else os.cpu_count() or 1)


class PhotoRejected(ValueError):
    """A photo we do not accept; `status` is the HTTP status (413 too large, 422 not a usable image)."""

    def __init__(self, reason: str, status: int = 422):
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class CheckedPhoto:
    data: bytes
    sha256: str
    header: ImageHeader

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.header.format]



def check_photo(data: bytes, max_bytes: int, min_side: int, max_pixels: int) -> CheckedPhoto:
    """Accept the bytes as a photo or raise PhotoRejected with the reason."""
    if len(data) > max_bytes:
        raise PhotoRejected(f"photo of {len(data):,} bytes is over the limit of {max_bytes:,} bytes "
                            "(MAX_PHOTO_BYTES)", status=413)
    try:
        with DECODE_SLOTS:
            header = validate_image(data, min_side, max_pixels)
    except InvalidImageError as exc:
        raise PhotoRejected(str(exc)) from None
    return CheckedPhoto(data, hashlib.sha256(data).hexdigest(), header)


class PhotoStore:
    def __init__(self, root: str, labels: tuple[str, ...]):
        self.root = root.rstrip("/") if storage.is_gcs(root) else root
        self.labels = labels

    def original_uri(self, sha256: str, extension: str) -> str:
        return storage.join(self.root, "photos", sha256[:2], f"{sha256}{extension}")

    def dataset_uri(self, label: str, sha256: str, extension: str) -> str:
        return storage.join(self.root, "dataset", label, f"{sha256}{extension}")

    @property
    def dataset_root(self) -> str:
        return storage.join(self.root, "dataset")

    @property
    def manifest_uri(self) -> str:
        return storage.join(self.dataset_root, MANIFEST)

    def save(self, photo: CheckedPhoto) -> str:
        """Store the original once (same bytes, same name); returns its URI."""
        uri = self.original_uri(photo.sha256, photo.extension)
        if not storage.exists(uri):
            storage.write_bytes(uri, photo.data)
        return uri

    def save_new(self, photo: CheckedPhoto) -> bool:
        """save(); True when this call wrote the file (it was not stored before)."""
        uri = self.original_uri(photo.sha256, photo.extension)
        if storage.exists(uri):
            return False
        storage.write_bytes(uri, photo.data)
        return True

    def remove_unreferenced(self, photos: list[CheckedPhoto], referenced) -> None:
        """Remove the originals of `photos` that no row references (`referenced(sha256s)` -> the
        referenced ones): files written by a transaction that then failed. Never raises: a file
        left behind is harmless (same bytes, same name next time)."""
        if not photos:
            return
        try:
            keep = referenced([p.sha256 for p in photos])
            for photo in photos:
                if photo.sha256 not in keep:
                    storage.delete(self.original_uri(photo.sha256, photo.extension))
        except Exception:  # the database or the storage failed again: the files stay, harmlessly
            logging.getLogger("catdog.feedback").exception("could not remove photos of a failed transaction")

    def read(self, uri: str) -> bytes:
        return storage.read_bytes(uri)

    def publish(self, sha256: str, extension: str, original_uri: str, label: str) -> None:
        """Make dataset/<label>/ hold the photo and no other class folder: copy first, then remove
        the others, so a crash in between leaves a duplicate (repaired next time), never nothing."""
        if label not in self.labels:
            raise ValueError(f"unknown label {label!r}; known: {list(self.labels)}")
        target = self.dataset_uri(label, sha256, extension)
        if not storage.exists(target):
            storage.copy(original_uri, target)
        for other in self.labels:
            if other != label:
                storage.delete(self.dataset_uri(other, sha256, extension))

    def unpublish(self, sha256: str, extension: str) -> None:
        """Remove the photo from every class folder of the dataset (a NEITHER verdict); the
        original stays under photos/."""
        for label in self.labels:
            storage.delete(self.dataset_uri(label, sha256, extension))

    def write_manifest(self, entries: list[dict], latest_validation_id: int) -> None:
        """The manifest, with the id of the newest verdict it includes (replicas compare it)."""
        storage.write_text(self.manifest_uri, json.dumps(
            {"latest_validation_id": latest_validation_id, "photos": entries}, indent=1, sort_keys=True))

    def _manifest(self) -> dict:
        if not storage.exists(self.manifest_uri):
            return {"latest_validation_id": None, "photos": []}
        return json.loads(storage.read_text(self.manifest_uri))

    def read_manifest(self) -> list[dict]:
        return self._manifest()["photos"]

    def manifest_written_at(self) -> int | None:
        """latest_validation_id of the stored manifest (None: there is none)."""
        return self._manifest()["latest_validation_id"]

    def dataset_files(self) -> dict[str, list[str]]:
        """{label: [file names]} of the published dataset."""
        return {label: sorted(uri.rsplit("/", 1)[-1] for uri in storage.list_files(storage.join(self.dataset_root, label)))
                for label in self.labels}
