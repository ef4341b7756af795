"""Start, watch and stop the app's retraining runs on a KFP host (TARGET=kubeflow) or Vertex AI (TARGET=vertex).

feedback/launchers.py's Launcher protocol, over the services' APIs:
    start    submits the compiled pipeline (pipelines/submit.py's package, client and job builders)
             as a run named catdog-retrain-<first 8 characters of the app's run id>; the handle
             records the KFP run id or the PipelineJob resource name, and the console page.
    observe  one GET of the run: its state, the pipeline step running now and how many of the
             pipeline's own steps (feedback.runs.PIPELINE_STEPS) succeeded; why it failed. Once it
             succeeded, the champion decision of the app's run id (passed as the pipeline's
             run_id) is read from the registry (catdog/registry.py decision_of_run).
    cancel   KFP: terminate the run; Vertex AI: cancel the PipelineJob. A later observe says
             cancelled once the service has stopped it.
    owns     always: any replica can watch a remote run (nothing here is tied to a host).
Progress comes from the service's task states; the run service keeps it moving forward only (a
task list that lags behind is ignored), and a failed run shows the step that failed.
A client is built once per launcher, on first use: kfp.Client's constructor probes the host,
aiplatform.init reads credentials.
An API that refuses a start or a cancel raises SubmitError; observe lets the API's error through
(the run service logs it and asks again on its next round).
"""

from __future__ import annotations

import threading

from feedback.launchers import Observation, RunHandle, decision_observation, run_config
from feedback.models import RunState, TrainingRun
from feedback.retrain_config import TrainingTarget
from feedback.runs import PIPELINE_STEPS
from pipelines.config import PipelineConfig
from pipelines.submit import (
    SubmitError,
    init_vertex,
    kfp_client,
    kfp_refusal,
    pipeline_package,
    vertex_console_url,
    vertex_job,
)

# KFP v2beta1 V2beta1RuntimeState (a plain string in kfp_server_api); None before the first report.
# A pending run is reported "running": the app already recorded it as started.
KFP_STATES: dict[str | None, RunState] = {
    None: "running", "RUNTIME_STATE_UNSPECIFIED": "running", "PENDING": "running", "RUNNING": "running",
    "CANCELING": "running", "PAUSED": "running", "SUCCEEDED": "succeeded", "SKIPPED": "succeeded",
    "FAILED": "failed", "CANCELED": "cancelled",
}
# Vertex AI PipelineState names (aiplatform_v1 enum).
VERTEX_STATES: dict[str, RunState] = {
    "PIPELINE_STATE_UNSPECIFIED": "running", "PIPELINE_STATE_QUEUED": "running", "PIPELINE_STATE_PENDING": "running",
    "PIPELINE_STATE_RUNNING": "running", "PIPELINE_STATE_CANCELLING": "running", "PIPELINE_STATE_PAUSED": "running",
    "PIPELINE_STATE_SUCCEEDED": "succeeded", "PIPELINE_STATE_FAILED": "failed",
    "PIPELINE_STATE_CANCELLED": "cancelled",
}


def run_name(run_id: str) -> str:
    return f"catdog-retrain-{run_id[:8]}"


def step_name(name: str | None) -> str:
    """A task's name as the service shows it ('select champion', 'select_champion') -> 'select-champion'."""
    return (name or "").strip().lower().replace(" ", "-").replace("_", "-")


def progress(tasks: list[tuple[str | None, str | None]]) -> tuple[str | None, int, list[str]]:
    """(step running now, own steps succeeded, own steps failed) from (task name, state name) pairs.

    Only the pipeline's own steps count: the services also list the root DAG, the condition, drivers.
    """
    own = [(step_name(n), s) for n, s in tasks if step_name(n) in PIPELINE_STEPS]
    running = [n for n, s in own if s == "RUNNING"]
    done = {n for n, s in own if s == "SUCCEEDED"}
    failed = sorted({n for n, s in own if s == "FAILED"}, key=PIPELINE_STEPS.index)
    return (running[-1] if running else None), len(done), failed


def ended(state: RunState, run: TrainingRun, step: str | None, done: int, failed: list[str], error: str,
          service: str) -> Observation:
    """The observation of a failed or cancelled run: the failed steps and the service's error."""
    if state == "cancelled":
        return Observation("cancelled", step, done, "stopped on request" if run.cancel_requested
                           else f"cancelled in {service}")
    parts = [f"step {', '.join(failed)} failed" if failed else f"the {service} run failed", error]
    return Observation("failed", failed[0] if failed else step, done, "; ".join(p for p in parts if p))


class KubeflowLauncher:
    def __init__(self, target: TrainingTarget):
        self.target = target
        self._client = None
        self._lock = threading.Lock()

    def client(self):
        with self._lock:
            if self._client is None:
                self._client = kfp_client(self.target.remote)
            return self._client

    def start(self, run_id: str, target: TrainingTarget, config: PipelineConfig) -> RunHandle:
        s = target.remote
        client = self.client()
        with pipeline_package(s.image, s.train_hardware) as package, kfp_refusal("the run"):
            result = client.create_run_from_pipeline_package(
                pipeline_file=str(package), arguments=run_config(run_id, config).pipeline_arguments(),
                run_name=run_name(run_id),
                experiment_name=s.experiment, namespace=s.kfp_namespace or None,
                pipeline_root=s.pipeline_root or None, enable_caching=s.enable_caching,
                service_account=s.service_account or None)
        return RunHandle(remote_id=result.run_id, console_url=f"{s.kfp_host}/#/runs/details/{result.run_id}")

    def owns(self, run: TrainingRun) -> bool:
        return True  # any replica with the credentials can read a remote run

    def observe(self, run: TrainingRun) -> Observation:
        remote = self.client().get_run(run.remote_id)  # kfp_server_api V2beta1Run
        state = KFP_STATES[remote.state]
        tasks = (remote.run_details.task_details or []) if remote.run_details else []
        step, done, failed = progress([(t.display_name, t.state) for t in tasks])
        if state == "running":
            return Observation("running", step, done)
        if state == "succeeded":
            return decision_observation(self.target.registry_uri, run.id, done)
        return ended(state, run, step, done, failed, remote.error.message if remote.error else "", "KFP")

    def cancel(self, run: TrainingRun) -> None:
        with kfp_refusal("to stop the run"):
            self.client().terminate_run(run.remote_id)


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
        from google.api_core.exceptions import GoogleAPICallError

        s = target.remote
        aiplatform = self.aiplatform()
        with pipeline_package(s.image, s.train_hardware) as template:  # the job reads the template when built
            job = vertex_job(aiplatform, s, run_config(run_id, config), template, display_name=run_name(run_id),
                             labels={**s.labels, "trigger": "feedback-app"}, enable_caching=s.enable_caching)
        try:
            job.submit(service_account=s.service_account or None)
        except GoogleAPICallError as exc:  # permission denied, API not enabled, bad bucket...
            raise SubmitError(f"Vertex AI refused the job: {exc}") from None
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
