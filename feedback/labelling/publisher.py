"""The dataset publisher: the dataset's class folders and manifest.json follow the database.

    DatasetPublisher(db, photos, repair_interval_s)
        start(background)       repair, write the manifest; then (background) a thread keeps it current
        changed()               a verdict or upload was committed: the manifest follows within MANIFEST_DELAY_S
        publish_or_defer(sha)   move one photo's dataset file to its verdict's class folder (or out)
        repair() / flush_manifest()
        close()                 stop the thread, write what is pending

The database is the source of truth. A verdict is committed first; then its photo's dataset file is
moved (publish). A crash or a storage error in between leaves photos.published_label behind
photos.label, which `repair` (at start-up and every REPAIR_INTERVAL_S) finds and finishes. A
NEITHER verdict removes the photo's dataset files instead of copying them (published_label becomes
NEITHER); repair finishes an interrupted removal like a move. A photo whose reviewers tie
(label None: unresolved, feedback/labelling/consensus.py) is not used for training either: a copy
published before the tie is removed the same way (published_label becomes None). The manifest is derived from the
database, written by the maintenance thread within MANIFEST_DELAY_S of a burst of changes (it is
O(validated photos), so requests do not wait for it); a failed write is logged and retried.
Training photos (feedback/labelling/training_photos.py) are never copied into the dataset: with
the manifest, their verdicts are written as <FEEDBACK_URI>/label-overrides.json instead.
"""

from __future__ import annotations

import logging
import threading
import time

from catdog.preprocessing import EXTENSIONS
from feedback.labelling.training_photos import write_overrides
from feedback.periodic import Periodic
from feedback.store import queries, training_queries
from feedback.store.db import Database
from feedback.store.photos import PhotoStore
from feedback.store.tables import NEITHER

logger = logging.getLogger("catdog.feedback")
MANIFEST_DELAY_S = 1.0  # the manifest follows changes within about this long


class DatasetPublisher:
    def __init__(self, db: Database, photos: PhotoStore, repair_interval_s: float):
        self.db = db
        self.photos = photos
        self.repair_interval_s = repair_interval_s
        self._manifest_lock = threading.Lock()
        self._manifest_dirty = threading.Event()  # set by every change; the maintenance thread writes
        self._closed = False
        self._next_repair = 0.0
        self._maintainer = Periodic("feedback-maintenance", self._maintain_round, MANIFEST_DELAY_S)

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, background: bool = True) -> None:
        """Finish any interrupted dataset writes, write the manifest; then (in the background) keep
        the manifest current and repair every REPAIR_INTERVAL_S."""
        repaired = self.repair()
        if repaired:
            logger.warning("repaired %d photo(s) whose dataset file did not match their validation", repaired)
        self.flush_manifest(always=True)
        if background:
            self._next_repair = time.monotonic() + self.repair_interval_s
            self._maintainer.start()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._maintainer.close()
            self.flush_manifest()

    def _maintain_round(self) -> None:
        """Every MANIFEST_DELAY_S: the manifest when something changed; every repair_interval_s
        (when > 0) a repair first (a failure is logged by Periodic, and the next round retries)."""
        if self.repair_interval_s > 0 and time.monotonic() >= self._next_repair:
            self._next_repair = time.monotonic() + self.repair_interval_s
            self.repair()
        self.flush_manifest()

    def changed(self) -> None:
        """Something the manifest shows changed (a committed verdict or upload): it is rewritten soon."""
        self._manifest_dirty.set()

    # -- the dataset ----------------------------------------------------------------------------
    def publish(self, sha256: str) -> None:
        """Make the dataset folder match the photo's current label (idempotent; NEITHER: in no class
        folder, published_label NEITHER; None after verdicts, a tie: in no class folder either). The photo's row
        stays locked across the file move, so threads and replicas moving the same photo take
        turns, and each re-reads the label: racing verdicts end with the files of the latest one.
        (On SQLite the lock is the one writer: other writes wait for a local file copy.)"""
        with self.db.writing() as session:
            photo = queries.lock_photo(session, sha256)
            if training_queries.is_training_photo(session, sha256):
                return  # its verdict is a label override (flush_manifest), never a dataset file
            if photo.label == photo.published_label or (photo.label is None and photo.published_label in (None, NEITHER)):
                return
            if photo.label in (None, NEITHER):  # neither, or reviewers who tie (unresolved): in no class folder
                self.photos.unpublish(sha256, EXTENSIONS[photo.format])
            else:
                self.photos.publish(sha256, EXTENSIONS[photo.format], photo.uri, photo.label)
            photo.published_label = photo.label

    def publish_or_defer(self, sha256: str) -> bool:
        """publish(); a failure (a storage outage, a lost original, a label no longer in LABELS)
        is logged, counted as `unpublished` in the status and left to repair(): the verdict itself
        is committed. False when it failed."""
        try:
            self.publish(sha256)
        except Exception as exc:  # OSError, google.api_core errors...: whatever the storage raised
            logger.error("dataset file of photo %s not moved yet (%s: %s); repair retries it",
                         sha256[:12], type(exc).__name__, exc)
            return False
        return True

    def repair(self) -> int:
        """Finish every dataset move that a crash or a storage error interrupted, and rewrite a
        manifest that misses verdicts (another replica's older snapshot may have replaced it);
        returns how many moves were finished. A move that fails again is logged and left for the
        next round: it must not stop the app, nor the other photos' repairs."""
        with self.db.read() as session:
            pending = queries.unpublished(session)
            latest = queries.latest_validation_id(session)
        repaired = sum(self.publish_or_defer(sha256) for sha256 in pending)
        if repaired or (latest and self.photos.manifest_written_at() != latest):
            self._manifest_dirty.set()
        return repaired

    def flush_manifest(self, always: bool = False) -> bool:
        """Rewrite dataset/manifest.json from the database when something changed since the last
        write (or `always`); True when written. Requests do not wait for it: it is O(validated
        photos), so the maintenance thread writes it within MANIFEST_DELAY_S of a burst of changes.
        A failed write is logged and retried (the manifest is derived from the database)."""
        with self._manifest_lock:
            if not (always or self._manifest_dirty.is_set()):
                return False
            self._manifest_dirty.clear()  # changes from here on set it again: at least one more write
            try:
                with self.db.read() as session:
                    entries = queries.manifest_entries(session)
                    latest = queries.latest_validation_id(session)
                self.photos.write_manifest(entries, latest)
                write_overrides(self.db, self.photos)
            except Exception as exc:  # storage errors of any kind: try again next round
                self._manifest_dirty.set()
                logger.error("dataset manifest not written (%s: %s); retrying", type(exc).__name__, exc)
                return False
            return True
