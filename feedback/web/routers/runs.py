"""Retraining: POST /api/retrain (= /api/train), the runs, their state and Stop.

    POST /api/retrain {"target": "vertex", "parameters": {"frozen_epochs": 1}}  -> 202 the run
         409 {"detail", "run_id"} while a run is active; 422 naming a bad key; 502 when it cannot start
    GET  /api/training-status      the latest run, the targets, validations since the last run
    GET  /api/runs, /api/runs/{id} (with the log's tail)
    GET  /api/runs/{id}/log        a local run's log as plain text (its last LOG_LIMIT_BYTES); 404
                                   JSON for an unknown run or one without a log here (a remote run:
                                   see its console_url)
    POST /api/runs/{id}/cancel     -> the run (cancelled once its process or remote run ended)

Logs are shown with the server's own folders shortened (shorten_paths): $OUTPUT_ROOT, . (the
repository the pipeline runs in), $TMPDIR and ~.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from catdog import REPO_ROOT
from feedback.labelling.service import FeedbackService
from feedback.retraining.config import output_root
from feedback.retraining.launchers.base import LaunchError
from feedback.retraining.runs import RunConflict, RunFinished, RunNotFound
from feedback.store.tables import TrainingRun
from feedback.web.deps import get_service, require_writer
from feedback.web.schemas import MAX_OFFSET, RetrainIn, RunList, RunOut, TrainingStatus
from pipelines.config import ConfigError

router = APIRouter(prefix="/api", tags=["training"])
LOG_LIMIT_BYTES = 1 << 20  # a local run's log is a few hundred KiB; the answer ends with its last MiB


def shorten_paths(text: str, folders: dict[str, str]) -> str:
    """`text` with each folder path (and any path under it) starting with its name instead; the
    longest folder first, a folder only as whole path components (not /srv/app in /srv/app2 or /tmp in
    /var/tmp)."""
    names = {str(Path(folder)): name for folder, name in folders.items() if len(Path(folder).parts) > 1}
    if not names:
        return text
    alternatives = "|".join(re.escape(f) for f in sorted(names, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.-])(?:{alternatives})(?![\w.-])")
    return pattern.sub(lambda match: names[match.group(0)], text)


def server_folders(service: FeedbackService, run: TrainingRun | None = None) -> dict[str, str]:
    """The server's folders shorten_paths names: ~, $TMPDIR, . (the repository) and, for a run, its $OUTPUT_ROOT."""
    folders = {str(Path.home()): "~", tempfile.gettempdir(): "$TMPDIR", str(REPO_ROOT): "."}
    if run is None:
        return folders
    target = service.training.targets.get(run.target)
    if target is not None and target.settings.get("OUTPUT_ROOT"):
        folders[str(output_root(target))] = "$OUTPUT_ROOT"
    return folders


async def _start(body: RetrainIn, service: FeedbackService) -> JSONResponse:
    try:
        run = await run_in_threadpool(service.runs.start_run, body.target, body.parameters, "manual")
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    except RunConflict as exc:
        return JSONResponse({"detail": str(exc), "run_id": exc.run_id}, status_code=409)
    except LaunchError as exc:
        raise HTTPException(502, f"the run could not be started: {exc}") from None
    return JSONResponse(RunOut.of(run).model_dump(mode="json"), status_code=202)


@router.post("/retrain", status_code=202, response_model=RunOut, dependencies=[Depends(require_writer)],
             summary="Start a pipeline run on the feedback dataset (409 while one is active)",
             responses={409: {"description": "a run is active: its id is `run_id`"}})
async def retrain(body: RetrainIn | None = None, service: FeedbackService = Depends(get_service)):
    return await _start(body or RetrainIn(), service)


@router.post("/train", status_code=202, response_model=RunOut, dependencies=[Depends(require_writer)],
             summary="The same as /api/retrain (the older system's name)")
async def train(body: RetrainIn | None = None, service: FeedbackService = Depends(get_service)):
    return await _start(body or RetrainIn(), service)


@router.get("/training-status", response_model=TrainingStatus, summary="The latest run and what would start the next")
def training_status(service: FeedbackService = Depends(get_service)) -> TrainingStatus:
    run = service.latest_run()
    return TrainingStatus(run=RunOut.of(run) if run else None, active=bool(run and run.active),
                          targets=list(service.training.targets), new_validated_photos=service.runs.new_validated_photos(),
                          retrain_min_new=service.settings.retrain_min_new)


@router.get("/runs", response_model=RunList, summary="Training runs, newest first")
def runs(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=MAX_OFFSET),
         service: FeedbackService = Depends(get_service)) -> RunList:
    rows, current = service.list_runs(limit, offset)
    return RunList(runs=[RunOut.of(r) for r in rows], active=current.id if current else None)


@router.get("/runs/{run_id}", response_model=RunOut, summary="One run: state, times, step, decision, log tail")
def run(run_id: str, service: FeedbackService = Depends(get_service)) -> RunOut:
    try:
        found = service.runs.get(run_id)
    except RunNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    tail = service.runs.log_tail(found)
    return RunOut.of(found, None if tail is None else shorten_paths(tail, server_folders(service, found)),
                     service.runs.override_count(run_id))


@router.get("/runs/{run_id}/log", response_class=PlainTextResponse,
            summary="A local run's log as plain text (its last MiB); 404 for a remote run (see console_url)",
            responses={200: {"content": {"text/plain": {}}},
                       404: {"description": "no such run, or no log here (a remote run)"}})
def run_log(run_id: str, service: FeedbackService = Depends(get_service)) -> PlainTextResponse:
    try:
        found = service.runs.get(run_id)
    except RunNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    text = service.runs.log_tail(found, LOG_LIMIT_BYTES)
    if text is None:
        where = f": see {found.console_url}" if found.console_url else ""
        raise HTTPException(404, f"training run {run_id} has no log on this app (a {found.target} run's log is in "
                                 f"its console{where})")
    return PlainTextResponse(shorten_paths(text, server_folders(service, found)), headers={"cache-control": "no-store"})


@router.post("/runs/{run_id}/cancel", response_model=RunOut, dependencies=[Depends(require_writer)],
             summary="Stop a run (the local process group, or the KFP / Vertex run)")
async def cancel(run_id: str, service: FeedbackService = Depends(get_service)) -> RunOut:
    try:
        found = await run_in_threadpool(service.runs.cancel_run, run_id)
    except RunNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except RunFinished as exc:
        raise HTTPException(409, str(exc)) from None
    except LaunchError as exc:
        raise HTTPException(502, str(exc)) from None
    return RunOut.of(found)
