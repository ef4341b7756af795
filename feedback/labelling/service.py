"""The app's operations: predict a photo, validate a prediction, add labelled photos, the status.

One FeedbackService per process holds the settings, the database, the photo store and the
predictor client; the routers (feedback/web/routers/) call these methods and turn their errors into
HTTP answers. Order of writes, so that nothing is lost or half-stored:
- predict (and upload-data): check the photo -> ask the predictor -> one transaction: the photo
  and prediction rows are written (flushed) first, then the original file, then the commit. A
  predictor failure or a database that cannot write (read-only, unreachable) stores nothing, no
  file included; only a failed commit itself can leave an unreferenced original (harmless: same
  bytes, same name next time). On SQLite the one writer waits for that local file write.
- validate: one transaction for the verdict (the database is the source of truth), then the
  dataset file is moved to the verdict's class folder and the manifest follows within a second:
  the dataset publisher (feedback/labelling/publisher.py), which also repairs what a crash in
  between left behind.
A verdict is one of LABELS or NEITHER ("neither a cat nor a dog"): a NEITHER photo is recorded
like any verdict, and never enters the dataset or the manifest.
predict copies the model's out-of-distribution threshold (the predictor's metadata, when it
describes the same model version) onto a prediction that has an ood_score.
Errors, text checks and the upload-data types: feedback/labelling/inputs.py.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import NamedTuple

from sqlalchemy.exc import IntegrityError

from catdog.ingest import DEFAULT_LABEL_MAP, parse_label_map
from catdog.registry import ModelRegistry
from feedback.labelling.consensus import reviewer_key
from feedback.labelling.inputs import (
    DuplicateEvent,
    InvalidText,
    LabelledFile,
    ModelChanged,
    NotFound,
    UnknownLabel,
    UploadReport,
    StorageFailed,
    check_text,
    database_problem,
    normalise_label,
)
from feedback.labelling.publisher import DatasetPublisher
from feedback.labelling.reviewers import reviewer_name, upload_outcome
from feedback.labelling.training_photos import TrainingPhotos
from feedback.monitoring import metrics as app_metrics
from feedback.monitoring.dashboard import build_dashboard
from feedback.monitoring.trends import Trends
from feedback.predictor_client.metrics import PredictorMetrics
from feedback.predictor_client.client import PredictorAnswer, PredictorClient, PredictorError, PredictorStatus, ood_threshold
from feedback.retraining import runs
from feedback.retraining.config import TrainingConfig, parse_training_words
from feedback.retraining.launchers import default_launchers
from feedback.settings import ReviewOrder, Settings
from feedback.store import consensus_queries, queries
from feedback.store.db import Database, migrate, open_database, ping, probe_write
from feedback.store.photos import CheckedPhoto, PhotoRejected, PhotoStore, check_photo
from feedback.store.tables import NEITHER, TRAINING_SOURCE, Prediction, TrainingRun, Validation

logger = logging.getLogger("catdog.feedback")


class ReviewPage(NamedTuple):
    """One look at the review queue (FeedbackService.review_queue)."""

    predictions: list[Prediction]
    length: int
    order: str
    seed: int | None


class FeedbackService:
    def __init__(self, settings: Settings, predictor: PredictorClient | None = None,
                 training: TrainingConfig | None = None, launchers: Mapping | None = None):
        """training: where retraining runs go (feedback/retraining/config.py; default: TARGET=local with
        `make run`'s defaults); launchers: target -> launcher (default: the real ones)."""
        if NEITHER in settings.labels:
            raise ValueError(f"LABELS may not hold {NEITHER!r}: it is the verdict for a photo of none of them")
        self.settings = settings
        self.labels = settings.labels
        self.label_map = parse_label_map(DEFAULT_LABEL_MAP)  # zip folders named like ingest's (cats -> cat)
        self.db: Database = open_database(settings.database_url)
        self.photos = PhotoStore(settings.feedback_uri, settings.labels)
        self.predictor = predictor or PredictorClient(settings)
        self.publisher = DatasetPublisher(self.db, self.photos, settings.repair_interval_s)
        self.schema_revision: str | None = None
        self._predictor_status: tuple[float, PredictorStatus] | None = None
        self._ood_thresholds: dict[str, float | None] = {}  # model version -> its score's threshold
        self.training = training or parse_training_words([], settings.feedback_uri)
        self.runs = runs.RunService(settings, self.db, self.training, launchers or default_launchers(settings, self.training))
        self.trends = Trends(settings, PredictorMetrics(settings).text)  # the dashboard's trends (scrapes unless Prometheus)
        self.training_photos = TrainingPhotos(self.db, self.photos, self.registry_uri, self.check, self.labels)

    @property
    def registry_uri(self) -> str:
        """The registry of the default target: the one the predictor's champion comes from."""
        return self.training.default.registry_uri

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, background: bool = True) -> None:
        """Migrate the schema, then start the dataset publisher (it repairs interrupted dataset
        writes and writes the manifest first) and the runs' watcher; `background`: their threads."""
        self.schema_revision = migrate(self.db)
        self.publisher.start(background)
        self.training_photos.start(background)  # the champion's suspects into the queue (never fatal)
        self.runs.start(background)
        self.trends.start(background)

    def close(self) -> None:
        self.trends.close()
        self.runs.close()
        self.training_photos.close()
        self.publisher.close()
        self.predictor.close()
        self.db.close()

    # -- predictions ----------------------------------------------------------------------------
    def check(self, data: bytes) -> CheckedPhoto:
        return check_photo(data, self.settings.max_photo_bytes, self.settings.min_image_side, self.settings.max_pixels)

    def predict(self, data: bytes, original_name: str | None = None, explain: bool = False,
                source: str = "api") -> Prediction:
        """Check, predict, then store; raises PhotoRejected or PredictorError before storing anything."""
        check_text(original_name, "the file name")
        photo = self.check(data)
        answer = self.predictor.predict(photo.data, explain=explain and self.predictor.explanations)
        unknown = sorted(set(answer.probabilities) - set(self.labels))
        if unknown:
            raise PredictorError(f"the predictor answers label(s) {unknown} that this app does not know "
                                 f"(LABELS={','.join(self.labels)})", "bad_answer")
        if answer.ood_score is not None:
            answer = replace(answer, ood_threshold=self._ood_threshold_of(answer.model_version))
        with self.db.writing() as session:
            row = queries.add_photo(session, photo, self.photos.original_uri(photo.sha256, photo.extension), original_name)
            prediction = queries.add_prediction(session, row, answer, source)
            self.photos.save(photo)  # after the rows: a database that cannot write leaves no file
        app_metrics.count_upload(source)
        return prediction

    def add_endpoint_predictions(self, items: list[tuple[CheckedPhoto, PredictorAnswer]], inference_service: str | None,
                                 event_id: str) -> list[Prediction]:
        """Photos and predictions made at the serving endpoint (feedback/labelling/endpoint_events.py: source
        "endpoint"), all in one transaction: every one of them or none. Files written for photos the
        store did not hold are removed again when the transaction fails. DuplicateEvent when the
        predictions of `event_id` are stored already (also when another replica stores them first)."""
        answers = [replace(a, ood_threshold=self._ood_threshold_of(a.model_version)) if a.ood_score is not None else a
                   for _, a in items]
        written: list[CheckedPhoto] = []
        try:
            with self.db.writing() as session:
                if queries.event_stored(session, event_id):
                    raise DuplicateEvent(event_id)
                predictions = []
                for index, ((photo, _), answer) in enumerate(zip(items, answers)):
                    uri = self.photos.original_uri(photo.sha256, photo.extension)
                    row = queries.add_photo(session, photo, uri, None)
                    predictions.append(queries.add_prediction(session, row, answer, "endpoint", inference_service,
                                                            event_id, index))
                for photo, _ in items:  # after the rows: a database that cannot write leaves no file
                    if self.photos.save_new(photo):
                        written.append(photo)
        except Exception as exc:
            self.photos.remove_unreferenced(written, self._stored_photos)
            if isinstance(exc, IntegrityError):
                with self.db.read() as session:
                    if queries.event_stored(session, event_id):  # another replica stored the same event first
                        raise DuplicateEvent(event_id) from None
            raise
        return predictions

    def _stored_photos(self, sha256s: list[str]) -> set[str]:
        with self.db.read() as session:
            return queries.existing_photos(session, sha256s)

    def explain(self, prediction_id: str) -> Prediction:
        """Ask the predictor for an explanation of a stored prediction that has none yet."""
        prediction = self.get(prediction_id)
        if prediction.explanation is None:
            if not self.predictor.explanations:
                raise PredictorError(f"the {self.predictor.protocol} predictor gives no explanations", "unsupported")
            answer = self.predictor.predict(self.photos.read(prediction.photo.uri), explain=True)
            # a training photo's card has the out-of-sample probabilities: its heat map is the served model's
            if answer.model_version != prediction.model_version and prediction.source != TRAINING_SOURCE:
                raise ModelChanged(
                    f"the predictor now serves model {answer.model_version}; this prediction was made by "
                    f"{prediction.model_version}, so its heat map cannot be drawn any more: upload the photo "
                    "again for a new prediction with one")
            with self.db.writing() as session:
                session.get(Prediction, prediction_id).explanation = answer.explanation
            prediction = self.get(prediction_id)
        return prediction

    def get(self, prediction_id: str) -> Prediction:
        with self.db.read() as session:
            prediction = queries.get_prediction(session, prediction_id)
        if prediction is None:
            raise NotFound(f"no prediction {prediction_id!r}")
        return prediction

    def photo(self, prediction_id: str) -> tuple[bytes, str]:
        """The original photo of a prediction and its format (from its content: JPEG, PNG, ...)."""
        prediction = self.get(prediction_id)
        return self.photos.read(prediction.photo.uri), prediction.photo.format

    def detail(self, prediction_id: str) -> tuple[Prediction, list[Validation]]:
        """A prediction and every verdict on its photo, oldest first."""
        prediction = self.get(prediction_id)
        with self.db.read() as session:
            return prediction, queries.validations_of(session, prediction.photo_sha256)

    def list_predictions(self, status: str | None = None, model_version: str | None = None, order: str = "newest",
                         limit: int = 50, offset: int = 0, flagged: bool | None = None) -> list[Prediction]:
        """feedback.store.queries.list_predictions in a read transaction."""
        with self.db.read() as session:
            return queries.list_predictions(session, status, model_version, order, limit, offset, flagged=flagged)

    def review_queue(self, limit: int, order: ReviewOrder | None = None, seed: int | None = None) -> ReviewPage:
        """Up to `limit` photos nobody validated yet in `order` (None: the REVIEW_ORDER setting), how
        many there are, the order and, for random, the seed (None: drawn for this request, so one
        page is one consistent shuffle; give it back to see the same order again)."""
        order = order or self.settings.review_order
        if order == "random" and seed is None:
            seed = secrets.randbelow(2**31)
        elif order != "random":
            seed = None
        with self.db.read() as session:
            rows = queries.review_queue(session, limit, order, seed) if limit else []
            return ReviewPage(rows, queries.queue_length(session), order, seed)

    def second_opinion(self, limit: int, by: str | None) -> ReviewPage:
        """Up to `limit` photos that reviewer `by` (None: "anonymous") has not judged and that need another
        opinion, and how many (feedback.store.consensus_queries.second_opinion_queue)."""
        reviewer, threshold = reviewer_key(by), self.settings.second_opinion_confidence
        with self.db.read() as session:
            rows = consensus_queries.second_opinion_queue(session, reviewer, threshold, limit) if limit else []
            return ReviewPage(rows, consensus_queries.second_opinion_length(session, reviewer, threshold),
                              "second_opinion", None)

    def queue_length(self) -> int:
        with self.db.read() as session:
            return queries.queue_length(session)

    def model_versions(self) -> list[str]:
        """The model versions that made a prediction."""
        with self.db.read() as session:
            return queries.model_versions(session)

    # -- verdicts -------------------------------------------------------------------------------
    @property
    def verdicts(self) -> tuple[str, ...]:
        """What a person may answer: one of LABELS, or NEITHER."""
        return (*self.labels, NEITHER)

    def check_label(self, label: str) -> None:
        """UnknownLabel unless `label` (normalised: normalise_label) is a verdict: LABELS or NEITHER."""
        if label not in self.verdicts:
            raise UnknownLabel(f"unknown label {label!r}; choose one of {list(self.verdicts)}")

    def validate(self, prediction_id: str, label: str, by: str | None = None, note: str | None = None,
                 source: str = "api") -> Prediction:
        """Record a person's verdict on a prediction and move the photo into that class folder (NEITHER:
        out of the dataset)."""
        label = normalise_label(label)
        self.check_label(label)
        by = reviewer_name(check_text(by, "'by'"), self.settings.auth_required)
        check_text(note, "the note")
        check_text(prediction_id, "the prediction id")
        with self.db.writing() as session:
            prediction = queries.get_prediction(session, prediction_id)
            if prediction is None:
                raise NotFound(f"no prediction {prediction_id!r}")
            queries.add_validation(session, prediction.photo_sha256, label, source, by, note, prediction_id)
            sha256 = prediction.photo_sha256
        self.publisher.publish_or_defer(sha256)
        self.publisher.changed()
        prediction = self.get(prediction_id)
        if prediction.source != TRAINING_SOURCE:  # a training photo's card is no model's prediction
            app_metrics.count_verdict(label, prediction.label)
        return prediction

    def add_labelled(self, files: list[LabelledFile], by: str | None = None, report: UploadReport | None = None) -> UploadReport:
        """Photos with their labels straight into the dataset; bad ones are listed with the reason."""
        report = report or UploadReport()
        by = reviewer_name(check_text(by, "'by'"), self.settings.auth_required)
        for item in files:
            try:
                check_text(item.name, "the file name")
                label = normalise_label(item.label)
                photo = self.check(item.data)
                self.check_label(label)
            except (PhotoRejected, UnknownLabel, InvalidText) as exc:
                report.reject(item.name, str(exc))
                continue
            try:
                with self.db.writing() as session:
                    row = queries.add_photo(session, photo, self.photos.original_uri(photo.sha256, photo.extension),
                                          item.name)
                    previous = row.label
                    if consensus_queries.latest_vote(session, photo.sha256, reviewer_key(by)) != label:
                        queries.add_validation(session, photo.sha256, label, "upload-data", by)  # their vote counts
                    current = row.label  # the consensus now
                    try:  # after the rows: a database that cannot write leaves no file
                        self.photos.save(photo)
                    except Exception as exc:  # the storage failed: the rows roll back, say so and go on
                        raise StorageFailed(exc) from exc
            except StorageFailed as failed:
                exc = failed.error
                logger.error("upload-data: could not store %s: %s: %s", photo.sha256[:12], type(exc).__name__, exc)
                report.reject(item.name, f"not stored: the photo storage failed ({type(exc).__name__}); try again")
                continue
            self.publisher.publish_or_defer(photo.sha256)
            app_metrics.count_upload("upload-data")
            report.added.append({"name": item.name, "sha256": photo.sha256, "label": label,
                                 "previous_label": previous, "outcome": upload_outcome(label, previous, current)})
        if report.added:
            self.publisher.changed()
        return report

    # -- retraining runs and the dashboard (reads) -----------------------------------------------
    def latest_run(self) -> TrainingRun | None:
        with self.db.read() as session:
            return runs.latest_run(session)

    def list_runs(self, limit: int, offset: int) -> tuple[list[TrainingRun], TrainingRun | None]:
        """(runs, newest first; the active run or None)."""
        with self.db.read() as session:
            return runs.list_runs(session, limit, offset), runs.active_run(session)

    def dashboard(self) -> dict:
        """The dashboard's numbers from the store and the default target's registry
        (feedback.monitoring.dashboard.build_dashboard; the router adds the predictor's metrics)."""
        return build_dashboard(self.db, ModelRegistry(self.registry_uri), self.labels)

    def trends_data(self, window: str) -> dict:
        """The predictor's and this app's trends over a window of WINDOWS (feedback.monitoring.trends.Trends.read)."""
        return self.trends.read(window)

    # -- status ---------------------------------------------------------------------------------
    def counts(self) -> dict:
        with self.db.read() as session:
            return queries.counts(session)

    def _ood_threshold_of(self, version: str) -> float | None:
        """The threshold of a model version's out-of-distribution score, from the predictor's metadata:
        asked once per version, not on every predict (None while the predictor serves another version)."""
        if version not in self._ood_thresholds:
            status = self.predictor_status()
            if status.model_version != version:
                return None
            self._ood_thresholds[version] = ood_threshold(status.ood)
        return self._ood_thresholds[version]

    def predictor_status(self, max_age_s: float = 5.0) -> PredictorStatus:
        """The predictor's status, asked again when the last answer is older than max_age_s (pages
        show it on every render; this keeps them from probing the predictor each time). One probe
        waits at most READY_TIMEOUT_S."""
        cached = self._predictor_status
        if cached is None or time.monotonic() - cached[0] > max_age_s:
            cached = self._predictor_status = (time.monotonic(),
                                               self.predictor.status(timeout=self.settings.ready_timeout_s))
        return cached[1]

    def database_error(self, write: bool = False) -> str | None:
        """None when the database answers (and with `write`, can write: feedback.store.db.probe_write),
        else what failed, in one line without the URL."""
        try:
            (probe_write if write else ping)(self.db)
        except Exception as exc:
            return database_problem(exc)
        return None
