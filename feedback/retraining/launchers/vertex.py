"""Start, watch and stop the app's retraining runs on Vertex AI Pipelines (TARGET=vertex).

feedback/retraining/launchers/base.py's Launcher protocol, over the Vertex AI API:
    start    pipelines/vertex.py's submit_job (the submission `make run TARGET=vertex` makes, with
             its error handling) with the job named catdog-retrain-<first 8 characters of the app's
             run id> and labelled trigger=feedback-app; the handle records the PipelineJob
             resource name and its console page.
    observe  one GET of the job: its state, the pipeline step running now and how many of the
             pipeline's own steps succeeded (launchers/remote.py); why it failed. Once it
             succeeded, the champion decision of the app's run id (passed as the pipeline's
             run_id) is read from the registry (catdog/registry.py decision_of_run).
    cancel   cancel the PipelineJob. A later observe says cancelled once Vertex AI has stopped it.
    owns     always: any replica can watch a remote run (nothing here is tied to a host).
aiplatform is initialised once per launcher, on first use (it reads the credentials).
An API that refuses a start or a cancel raises SubmitError; observe lets the API's error through
(the run service logs it and asks again on its next round).
"""

from __future__ import annotations

import dataclasses
import threading

from feedback.store.tables import RunState, TrainingRun
from feedback.retraining.config import TrainingTarget
from feedback.retraining.launchers.base import Observation, RunHandle, decision_observation, run_config
from feedback.retraining.launchers.remote import ended, progress, run_name
from pipelines.config import PipelineConfig
from pipelines.remote import SubmitError
from pipelines.vertex import init_vertex, submit_job, vertex_console_url

# Vertex AI PipelineState names (aiplatform_v1 enum).
VERTEX_STATES: dict[str, RunState] = {
    "PIPELINE_STATE_UNSPECIFIED": "running", "PIPELINE_STATE_QUEUED": "running", "PIPELINE_STATE_PENDING": "running",
    "PIPELINE_STATE_RUNNING": "running", "PIPELINE_STATE_CANCELLING": "running", "PIPELINE_STATE_PAUSED": "running",
    "PIPELINE_STATE_SUCCEEDED": "succeeded", "PIPELINE_STATE_FAILED": "failed",
    "PIPELINE_STATE_CANCELLED": "cancelled",
}


class VertexLauncher:
    def __init__(self, target: TrainingTarget):
        self.target = target
        self._aiplatform = None
        self._lock = threading.Lock()

    def aiplatform(self):
        with self._lock:
            if self._aiplatform is None:
                self._aiplatform = init_vertex(self.target.remote)
            return self._aiplatform

    def start(self, run_id: str, target: TrainingTarget, config: PipelineConfig) -> RunHandle:
        s = dataclasses.replace(target.remote, run_name=run_name(run_id))
        job = submit_job(self.aiplatform(), run_config(run_id, config), s, trigger="feedback-app")
        return RunHandle(remote_id=job.resource_name, console_url=vertex_console_url(s, job))

    def owns(self, run: TrainingRun) -> bool:
        return True  # any replica with the credentials can read a remote run

    def observe(self, run: TrainingRun) -> Observation:
        # one GET: PipelineJob.get fetches the resource; its .state/.task_details would fetch it again each
        remote = self.aiplatform().PipelineJob.get(resource_name=run.remote_id).gca_resource
        state = VERTEX_STATES[remote.state.name]
        step, done, failed = progress([(t.task_name, t.state.name) for t in remote.job_detail.task_details])
        if state == "running":
            return Observation("running", step, done)
        if state == "succeeded":
            return decision_observation(self.target.registry_uri, run.id, done)
        return ended(state, run, step, done, failed, remote.error.message, "Vertex AI")

    def cancel(self, run: TrainingRun) -> None:
        from google.api_core.exceptions import GoogleAPICallError

        try:
            self.aiplatform().PipelineJob.get(resource_name=run.remote_id).cancel()
        except GoogleAPICallError as exc:
            raise SubmitError(f"Vertex AI refused to cancel the job: {exc}") from None
