"""Training photos in the review queue: the champion's run's suspects, imported; verdicts -> overrides.

    TrainingPhotos(db, photos, registry_uri, check, labels)
        start(background)   check whether the champion changed and import its suspects: in the
                            background at once and then every CHECK_INTERVAL_S (so a large list on
                            gs:// never delays the app's start), or now when not `background`;
                            errors are logged, never fatal
        sync()              import when the champion's suspects_uri is not the one imported last
        import_champion()   import the champion's suspects now -> a report (the re-import route)
        close()

Where the suspects are: the model registry's champion alias names its run's suspects.json
("suspects_uri", catdog/suspects.py: written by select-champion with the photos beside it), so this
works for every target (a local folder or gs://). Each entry becomes a photo of the app (its bytes
checked like an upload and copied into the photo store, so the heat map works), one card (a
prediction with source "training": label = the given label, probabilities = the out-of-sample
ones) and a training_photos row (reasons, near-duplicate partners, the run that flagged it).
Idempotent: a photo already imported is not imported again (its verdicts stand; the row keeps the
run that flagged it first). Left out, and listed in the report with the reason: photos the app
holds already as uploads (and feedback photos, whose verdicts are in the app already), given
labels not in LABELS, photos the app's checks refuse.

Verdicts on training photos are validations like any (feedback/store/queries.add_validation), and
are never published to the feedback dataset: the dataset publisher writes them as
<FEEDBACK_URI>/label-overrides.json (write_overrides, catdog/label_overrides.py) that the next
ingest applies. What a verdict means is in one place: feedback/store/training_queries.override_label.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from catdog import storage
from catdog.label_overrides import write_overrides as write_overrides_file
from catdog.suspects import photo_uri, read_suspects, suspects_of_champion
from feedback.periodic import Periodic
from feedback.store import queries, training_queries
from feedback.store.db import Database
from feedback.store.photos import CheckedPhoto, PhotoRejected, PhotoStore

logger = logging.getLogger("catdog.feedback")
CHECK_INTERVAL_S = 30.0  # how often the champion alias is read (one small file) for a change


class TrainingPhotos:
    def __init__(self, db: Database, photos: PhotoStore, registry_uri: str, check: Callable[[bytes], CheckedPhoto],
                 labels: tuple[str, ...], interval_s: float = CHECK_INTERVAL_S):
        self.db = db
        self.photos = photos
        self.registry_uri = registry_uri
        self.check = check
        self.labels = labels
        self.interval_s = interval_s
        self.last: dict | None = None  # the last import's report (or error)
        self._imported_uri: str | None = None
        self._lock = threading.Lock()
        self._watcher = Periodic("feedback-training-photos", self._sync_logged, interval_s, first_now=True)

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, background: bool = True) -> None:
        if background:
            self._watcher.start()
        else:
            self._sync_logged()

    def close(self) -> None:
        self._watcher.close()

    def _sync_logged(self) -> None:
        try:
            self.sync()
        except Exception as exc:  # a registry or storage outage: the app runs on, the next round retries
            self.last = {"error": f"{type(exc).__name__}: {exc}"}
            logger.error("training photos not imported (%s: %s); retrying in %.0f s", type(exc).__name__, exc,
                         self.interval_s)

    # -- importing ------------------------------------------------------------------------------
    def sync(self) -> dict | None:
        """Import the champion's suspects when they are not the ones imported last; the report or None.
        (The registry's alias is read once a round.)"""
        champion, uri = suspects_of_champion(self.registry_uri)
        if uri is not None and uri == self._imported_uri:
            return None
        if uri is None and self.last is not None and "note" in self.last:  # said already why there are none
            return None
        return self.import_champion((champion, uri))

    def import_champion(self, found: tuple[dict | None, str | None] | None = None) -> dict:
        """Import the champion's run's suspects now (idempotent); the report. `found`: the
        (champion, suspects_uri) just read from the registry (suspects_of_champion), else read here."""
        with self._lock:
            champion, uri = found or suspects_of_champion(self.registry_uri)
            report = {"registry_uri": self.registry_uri, "champion_version": (champion or {}).get("version"),
                      "suspects_uri": uri, "run_id": None, "listed": 0, "added": 0, "already": 0, "skipped": []}
            if uri is None:
                report["note"] = ("no champion in the registry yet" if champion is None else
                                  "the champion's run recorded no suspects (it ran before the label-issues step "
                                  "was recorded in the registry)")
                self.last = report
                return report
            document = read_suspects(uri)
            report.update(run_id=document.get("run_id"), listed=len(document["suspects"]))
            added = []
            for entry in document["suspects"]:
                outcome = self._import_one(entry, uri, document)
                if outcome == "added":
                    added.append(entry["sha256"])
                    report["added"] += 1
                elif outcome == "already":
                    report["already"] += 1
                else:
                    report["skipped"].append({"sha256": entry["sha256"], "source": entry.get("source"),
                                              "reason": outcome})
            if added:
                with self.db.writing() as session:
                    training_queries.link_duplicates(session, added)
            self._imported_uri = uri
            self.last = report
            logger.info("training photos of run %s (champion v%s): %d listed, %d added, %d already here, %d skipped",
                        report["run_id"], report["champion_version"], report["listed"], report["added"],
                        report["already"], len(report["skipped"]))
            return report

    def _import_one(self, entry: dict, uri: str, document: dict) -> str:
        """"added", "already", or why the entry was left out."""
        sha = entry["sha256"]
        with self.db.read() as session:
            if training_queries.is_training_photo(session, sha):
                return "already"
            if queries.existing_photos(session, [sha]):
                return "the app holds this photo already (an upload): judge it there"
        if entry.get("origin", "data") != "data":
            return "a feedback photo: its verdict is in the app already"
        if entry["given_label"] not in self.labels:
            return f"given label {entry['given_label']!r} is not one of LABELS ({', '.join(self.labels)})"
        try:
            photo = self.check(storage.read_bytes(photo_uri(uri, entry)))
        except PhotoRejected as exc:
            return f"not accepted by the app: {exc}"
        if photo.sha256 != sha:
            return f"the registry's copy of the photo has another sha256 ({photo.sha256[:12]})"
        with self.db.writing() as session:
            row = queries.add_photo(session, photo, self.photos.original_uri(sha, photo.extension),
                                    entry["source"].rsplit("/", 1)[-1][:255] or None)
            training_queries.add_training_photo(session, row, entry, document.get("run_id"), document.get("version"), uri)
            self.photos.save(photo)  # after the rows: a database that cannot write leaves no file
        return "added"


def write_overrides(db: Database, photos: PhotoStore) -> str | None:
    """Write <FEEDBACK_URI>/label-overrides.json from the database (the dataset publisher calls it
    with the manifest); nothing while the app holds no training photo. Its URI, or None."""
    with db.read() as session:
        if not training_queries.training_photo_count(session):
            return None
        entries = training_queries.override_entries(session)
    return write_overrides_file(photos.root, entries)
