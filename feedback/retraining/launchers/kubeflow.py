"""Start, watch and stop the app's retraining runs on a KFP host (TARGET=kubeflow).

feedback/retraining/launchers/base.py's Launcher protocol, over the KFP API:
    start    pipelines/kubeflow.py's create_run (the call `make run TARGET=kubeflow` makes) with the
             run named catdog-retrain-<first 8 characters of the app's run id>; the handle records
             the KFP run id and its page in the KFP UI.
    observe  one GET of the run: its state, the pipeline step running now and how many of the
             pipeline's own steps succeeded (launchers/remote.py); why it failed. Once it
             succeeded, the champion decision of the app's run id (passed as the pipeline's
             run_id) is read from the registry (catdog/registry.py decision_of_run).
    cancel   terminate the run. A later observe says cancelled once KFP has stopped it.
    owns     always: any replica can watch a remote run (nothing here is tied to a host).
The client is built once per launcher, on first use (kfp.Client's constructor probes the host).
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
from pipelines.kubeflow import create_run, kfp_client, kfp_refusal

# KFP v2beta1 V2beta1RuntimeState (a plain string in kfp_server_api); None before the first report.
# A pending run is reported "running": the app already recorded it as started.
KFP_STATES: dict[str | None, RunState] = {
    None: "running", "RUNTIME_STATE_UNSPECIFIED": "running", "PENDING": "running", "RUNNING": "running",
    "CANCELING": "running", "PAUSED": "running", "SUCCEEDED": "succeeded", "SKIPPED": "succeeded",
    "FAILED": "failed", "CANCELED": "cancelled",
}


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
        s = dataclasses.replace(target.remote, run_name=run_name(run_id))
        remote_id, url = create_run(self.client(), run_config(run_id, config), s)
        return RunHandle(remote_id=remote_id, console_url=url)

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
