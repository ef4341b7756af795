"""Retraining runs: start one (never two at once), watch them, stop them, and retrain automatically.

    RunService(settings, db, training, launchers)
      .start_run(target, parameters, trigger)   -> TrainingRun  (RunConflict while one is active)
      .cancel_run(run_id)                       -> TrainingRun
      .refresh()                                the active runs' states, from their launchers
      .retrain_if_needed()                      -> TrainingRun | None

The lock is the database's: a run row holds `active = 1` (a unique column) from the moment it is
queued until it ends, so two requests, two replicas or a restarted app never start a second run.
A run records the verdicts it took in (run_validations: each validated photo's latest validation
when it started; training photos' verdicts are label overrides instead: run_overrides, each
training photo's override label when it started, feedback/store/training_queries.py).
Automatic retraining starts a run once RETRAIN_MIN_NEW photos were validated (training photos
included: a fixed training label is new data too) after the cut-off of the last run that finished (succeeded or failed, not cancelled): a
challenger that lost, or a run that failed, is not retried on the same data over and over.

Progress only moves forward, whatever a launcher reports: a run's steps_done never decreases (an
observation with fewer steps done than recorded is ignored), and a run that failed or was stopped
keeps the step it ended in.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from feedback.periodic import Periodic
from feedback.store.db import Database
from feedback.store.training_queries import record_run_overrides, run_override_count, training_shas
from feedback.retraining.launchers.base import Launcher, LaunchError, Observation
from feedback.retraining.launchers.local import read_tail
from feedback.store.tables import (
    ACTIVE_STATES,
    NEITHER,
    Photo,
    RunValidation,
    TrainingRun,
    Validation,
    utcnow,
)
from feedback.retraining.config import TrainingConfig
from feedback.settings import Settings

logger = logging.getLogger("catdog.feedback")
QUEUED_TIMEOUT_S = 300  # a run queued this long without a process or remote id was never started
# pipelines.training_pipeline.STEPS (kept equal by a test; not imported: that imports kfp and the components)
PIPELINE_STEPS = ("ingest", "preprocess", "train", "evaluate", "label-issues", "select-champion", "deploy")


class RunConflict(RuntimeError):
    def __init__(self, run_id: str | None):
        self.run_id = run_id
        super().__init__(f"a training run is already active: {run_id}" if run_id else
                         "a training run is already active")


class RunNotFound(LookupError):
    pass


class RunFinished(RuntimeError):
    """Cancel of a run that has ended already."""


def baseline_cutoff(session: Session) -> int:
    """The validation cut-off of the last run that finished (succeeded or failed); 0 if none."""
    cutoff = session.scalar(select(TrainingRun.validation_cutoff_id)
                            .where(TrainingRun.state.in_(("succeeded", "failed")))
                            .order_by(TrainingRun.created_at.desc()).limit(1))
    return cutoff or 0


def latest_validation_ids(session: Session, cutoff: int) -> list[int]:
    """Each validated photo's latest validation with id <= cutoff that agrees with the photo's label
    (the consensus of its reviewers), unless that is NEITHER (such a photo is in no class folder: no
    run trains on it) or the photo is a training photo (its verdicts are label overrides, recorded in
    run_overrides); a photo whose reviewers tie (label None) is in none either."""
    latest = (select(func.max(Validation.id).label("id")).join(Photo, Photo.sha256 == Validation.photo_sha256)
              .where(Validation.id <= cutoff, Validation.label == Photo.label)
              .group_by(Validation.photo_sha256).subquery())
    return list(session.scalars(select(Validation.id).join(latest, Validation.id == latest.c.id)
                                .where(Validation.label != NEITHER, Validation.photo_sha256.not_in(training_shas))
                                .order_by(Validation.id)))


def photos_validated_after(session: Session, cutoff: int) -> int:
    """Photos given a class verdict after `cutoff` (what RETRAIN_MIN_NEW counts; NEITHER adds no training photo)."""
    return session.scalar(select(func.count(func.distinct(Validation.photo_sha256)))
                          .where(Validation.id > cutoff, Validation.label != NEITHER)) or 0


def active_run(session: Session) -> TrainingRun | None:
    return session.scalar(select(TrainingRun).where(TrainingRun.active.is_not(None)))


def latest_run(session: Session) -> TrainingRun | None:
    return session.scalar(select(TrainingRun).order_by(TrainingRun.created_at.desc()).limit(1))


def list_runs(session: Session, limit: int = 50, offset: int = 0) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).order_by(TrainingRun.created_at.desc())
                                .limit(limit).offset(offset)))


class RunService:
    def __init__(self, settings: Settings, db: Database, training: TrainingConfig, launchers: Mapping[str, Launcher]):
        self.settings = settings
        self.db = db
        self.training = training
        self.launchers = launchers  # target name -> launcher
        self._refresh_lock = threading.Lock()
        self._watcher = Periodic("feedback-runs", self._watch_round, settings.run_poll_interval_s)
        self._next_check = 0.0  # when _watch_round next asks retrain_if_needed

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, background: bool = True) -> None:
        """Reconcile the runs a previous app process left active; then watch them in the background."""
        self.refresh()
        if background:
            self._next_check = time.monotonic() + self.settings.retrain_check_interval_s
            self._watcher.start()

    def close(self) -> None:
        self._watcher.close()

    def _watch_round(self) -> None:
        """Every run_poll_interval_s: the active runs' states; every retrain_check_interval_s: the
        retraining trigger (a failure is logged by Periodic, and the next round retries)."""
        self.refresh()
        if self.settings.retrain_min_new and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.settings.retrain_check_interval_s
            self.retrain_if_needed()

    # -- reading ---------------------------------------------------------------------------------
    def get(self, run_id: str) -> TrainingRun:
        with self.db.read() as session:
            run = session.get(TrainingRun, run_id)
        if run is None:
            raise RunNotFound(f"no training run {run_id}")
        return run

    def override_count(self, run_id: str) -> int:
        """How many training-photo label overrides the run took in (run_overrides)."""
        with self.db.read() as session:
            return run_override_count(session, run_id)

    def log_tail(self, run: TrainingRun, limit: int = 4000) -> str | None:
        return read_tail(run.log_uri, limit) if run.log_uri else None

    def new_validated_photos(self) -> int:
        with self.db.read() as session:
            return photos_validated_after(session, baseline_cutoff(session))

    # -- starting --------------------------------------------------------------------------------
    def start_run(self, target: str | None = None, parameters: dict | None = None,
                  trigger: str = "manual") -> TrainingRun:
        """Queue a run (the database refuses a second active one), then launch it.

        ConfigError: a bad target or parameter (nothing stored). RunConflict: a run is active.
        LaunchError: the launch failed (the run is recorded as failed, with the reason).
        """
        chosen = self.training.target(target)
        config = self.training.run_config(chosen, parameters)
        self.refresh()  # a run whose process died while no app watched must not block this one
        run_id = uuid.uuid4().hex
        try:
            with self.db.writing() as session:
                cutoff = session.scalar(select(func.max(Validation.id))) or 0
                taken = latest_validation_ids(session, cutoff)
                session.add(TrainingRun(
                    id=run_id, target=chosen.name, trigger=trigger, state="queued", active=1,
                    parameters=dict(parameters or {}), validation_cutoff_id=cutoff, validated_photos=len(taken),
                    new_validated_photos=photos_validated_after(session, baseline_cutoff(session)),
                    cancel_requested=False, steps_done=0))
                session.flush()  # the unique `active` refuses a second run here
                session.add_all(RunValidation(run_id=run_id, validation_id=v) for v in taken)
                record_run_overrides(session, run_id)
        except IntegrityError:
            with self.db.read() as session:
                current = active_run(session)
            raise RunConflict(current.id if current else None) from None
        try:
            handle = self.launchers[chosen.name].start(run_id, chosen, config)
        except Exception as exc:  # whatever the process or client library raised: the run did not start
            self._finish(run_id, Observation("failed", reason=f"could not start: {exc}"))
            raise LaunchError(str(exc) or type(exc).__name__) from None
        with self.db.writing() as session:
            run = session.get(TrainingRun, run_id)
            run.state, run.started_at = "running", utcnow()
            for key, value in vars(handle).items():
                setattr(run, key, value)
        logger.info("training run %s started on %s (%s, %d validated photos, %d new)", run_id, chosen.name,
                    trigger, run.validated_photos, run.new_validated_photos)
        return self.get(run_id)

    def retrain_if_needed(self) -> TrainingRun | None:
        """Start an automatic run when RETRAIN_MIN_NEW photos were validated since the last run."""
        threshold = self.settings.retrain_min_new
        if not threshold:
            return None
        new = self.new_validated_photos()
        if new < threshold:
            return None
        try:
            run = self.start_run(trigger="automatic")
        except RunConflict:
            return None
        logger.info("%d photos validated since the last run (threshold %d): started %s", new, threshold, run.id)
        return run

    # -- stopping --------------------------------------------------------------------------------
    def cancel_run(self, run_id: str) -> TrainingRun:
        run = self.get(run_id)
        if run.active is None:
            raise RunFinished(f"training run {run_id} has already ended ({run.state})")
        with self.db.writing() as session:
            session.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(cancel_requested=True))
        run = self.get(run_id)
        if run.started_at is not None:
            try:
                self.launchers[run.target].cancel(run)
            except Exception as exc:  # a refused terminate, an unreachable API: the run goes on
                raise LaunchError(f"the run could not be stopped: {exc}") from None
        else:
            self._finish(run_id, Observation("cancelled", reason="stopped before it started"))
        self.refresh()
        return self.get(run_id)

    # -- watching --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Ask each active run's launcher for its state; record changes; release the lock on the end."""
        with self._refresh_lock:
            with self.db.read() as session:
                runs = list(session.scalars(select(TrainingRun).where(TrainingRun.state.in_(ACTIVE_STATES))))
            for run in runs:
                observation = self._observe(run)
                if observation is None:
                    continue
                if observation.state in ACTIVE_STATES:
                    if observation.steps_done < run.steps_done:
                        continue  # only forward: a service's task list that lags behind what it said before
                    if (observation.step, observation.steps_done) != (run.step, run.steps_done):
                        with self.db.writing() as session:
                            session.execute(update(TrainingRun).where(TrainingRun.id == run.id)
                                            .values(step=observation.step, steps_done=observation.steps_done))
                else:
                    self._finish(run.id, observation)

    def _observe(self, run: TrainingRun) -> Observation | None:
        if run.state == "queued":
            age = (utcnow() - run.created_at).total_seconds()
            return (Observation("failed", reason="the app stopped before the run was started")
                    if age > QUEUED_TIMEOUT_S else None)
        launcher = self.launchers.get(run.target)
        if launcher is None:
            return None  # a target this replica is not configured for: another replica watches it
        if not launcher.owns(run):
            return None  # a local run of another host
        try:
            return launcher.observe(run)
        except Exception as exc:  # an API that does not answer now: the run is not failed for that
            logger.warning("cannot read the state of run %s on %s: %s", run.id, run.target, exc)
            return None

    def _finish(self, run_id: str, observation: Observation) -> None:
        """Record the end: steps_done never goes down; a failed or stopped run keeps the step it ended in."""
        decision = observation.decision or {}
        with self.db.read() as session:
            before = session.get(TrainingRun, run_id)
        done = max(observation.steps_done, before.steps_done if before else 0)
        values = {"state": observation.state, "active": None, "finished_at": utcnow(), "steps_done": done,
                  "step": None if observation.state == "succeeded" else observation.step or (before and before.step),
                  "reason": observation.reason}
        if observation.state == "succeeded" and decision:
            values.update(promoted=bool(decision.get("promoted")), version=decision.get("challenger_version"),
                          champion_version=decision.get("champion_version"))
        with self.db.writing() as session:  # only an active run ends, once
            ended = session.execute(update(TrainingRun).where(TrainingRun.id == run_id,
                                                              TrainingRun.active.is_not(None)).values(**values))
        if ended.rowcount:
            logger.info("training run %s %s: %s", run_id, observation.state, observation.reason or "")
