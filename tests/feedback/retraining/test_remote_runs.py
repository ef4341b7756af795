"""feedback/retraining/launchers/ (kubeflow.py, vertex.py): the exact requests the KubeflowLauncher and the VertexLauncher send
to the (mocked) clients, how they read a run's state, step and failure back, and the champion
decision they take from the registry once a run succeeded: the decision recorded with the app's run
id, passed as the pipeline's run_id (two overlapping runs each get their own; no time windows).

Mocks sit at the client boundary (tests/remote_fixtures.py: kfp.Client, aiplatform.init/PipelineJob,
google.auth.default); what the mocked APIs answer are real SDK objects (kfp_server_api models
deserialized from the REST JSON, aiplatform_v1 PipelineJob protos). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
import yaml

from catdog.registry import ModelRegistry
from feedback.store.tables import TrainingRun
from feedback.retraining.config import parse_training_words
from feedback.retraining.launchers.base import RunHandle
from feedback.retraining.launchers.kubeflow import KFP_STATES, KubeflowLauncher
from feedback.retraining.launchers.vertex import VERTEX_STATES, VertexLauncher
from pipelines.remote import SubmitError
from tests.remote_fixtures import (  # noqa: F401
    IMAGE,
    VERTEX_ARGS,
    executor_images,
    kfp_api,
    kubeflow_args,
    vertex,
)

RUN_ID = "0123abcd" + "e" * 24
RUN_NAME = "catdog-retrain-0123abcd"
FEEDBACK = "gs://bucket/feedback"
STARTED = datetime(2026, 3, 1, 12, 0, 0, 700000, tzinfo=UTC)
RESOURCE = "projects/my-project/locations/europe-west4/pipelineJobs/catdog-training-20260301120000"
ALL_DONE = [("ingest", "SUCCEEDED"), ("preprocess", "SUCCEEDED"), ("train", "SUCCEEDED"),
            ("evaluate", "SUCCEEDED"), ("select-champion", "SUCCEEDED"), ("deploy", "SUCCEEDED")]


def target_of(words: list[str], name: str, registry: Path | None = None):
    target = parse_training_words(words, FEEDBACK).targets[name]
    if registry is None:
        return target
    return dataclasses.replace(target, base=target.base.model_copy(update={"registry_uri": str(registry)}))


def training_run(**values) -> TrainingRun:
    """A TrainingRun as the run service passes it (not stored)."""
    return TrainingRun(**{"id": RUN_ID, "target": "kubeflow", "state": "running", "started_at": STARTED,
                          "remote_id": "run-123", "cancel_requested": False, **values})


def decide(registry: Path, run_id: str, decided_at: datetime, version: int, promoted: bool = True) -> dict:
    """A decision as select-champion records it for run `run_id`; returned as decision_of_run gives it."""
    record = {"run_id": run_id, "promoted": promoted, "challenger_version": version,
              "champion_version": version if promoted else 1,
              "reason": f"v{version} {'beats' if promoted else 'does not beat'} the champion",
              "decided_at": decided_at.isoformat(timespec="seconds")}
    uri = ModelRegistry(str(registry)).record_decision(record)
    return {**record, "history_record": uri}


# --- Kubeflow Pipelines -------------------------------------------------------------------------

def kfp_run(state: str | None, tasks=(), error: dict | None = None, finished_at: str | None = None):
    """What kfp.Client.get_run returns: the REST JSON of a v2beta1 run, deserialized by kfp_server_api."""
    from kfp_server_api.api_client import ApiClient

    body = {"run_id": "run-123", "display_name": RUN_NAME,
            "run_details": {"task_details": [{"display_name": n, "state": s} for n, s in tasks]}}
    body.update({k: v for k, v in {"state": state, "error": error, "finished_at": finished_at}.items() if v})
    return ApiClient().deserialize(mock.Mock(data=json.dumps(body)), "V2beta1Run")


@pytest.fixture
def kfp_launcher(kfp_api, tmp_path):  # noqa: F811
    target = target_of(kubeflow_args(kfp_api.host), "kubeflow", tmp_path / "registry")
    return KubeflowLauncher(target), target


def test_kubeflow_start_sends_the_exact_run(kfp_api, kfp_launcher):  # noqa: F811
    launcher, target = kfp_launcher
    config = parse_training_words(kubeflow_args(kfp_api.host), FEEDBACK).run_config(target, {"frozen_epochs": "3"})
    handle = launcher.start(RUN_ID, target, config)
    kfp_api.client_cls.assert_called_once_with(host=kfp_api.host)
    kfp_api.client.create_run_from_pipeline_package.assert_called_once_with(
        pipeline_file=mock.ANY, arguments=config.model_copy(update={"run_id": RUN_ID}).pipeline_arguments(),
        run_name=RUN_NAME, experiment_name="catdog", namespace=None, pipeline_root=None, enable_caching=False,
        service_account=None)
    arguments = kfp_api.client.create_run_from_pipeline_package.call_args.kwargs["arguments"]
    assert (arguments["frozen_epochs"], arguments["feedback_uri"], arguments["run_id"]) == (3, FEEDBACK, RUN_ID)
    [package] = kfp_api.packages
    assert executor_images(package) == {IMAGE}
    assert not Path(kfp_api.client.create_run_from_pipeline_package.call_args.kwargs["pipeline_file"]).exists()
    assert handle == RunHandle(remote_id="run-123", console_url=f"{kfp_api.host}/#/runs/details/run-123")


def test_kubeflow_start_passes_namespace_root_account_and_cache(kfp_api, monkeypatch):  # noqa: F811
    monkeypatch.setenv("KFP_TOKEN", "tok")
    words = kubeflow_args(kfp_api.host, "KFP_NAMESPACE=team-a", "PIPELINE_ROOT=gs://bucket/root", "CACHE=1",
                          "SERVICE_ACCOUNT=pipeline-runner", "EXPERIMENT=retrain")
    target = target_of(words, "kubeflow")
    KubeflowLauncher(target).start(RUN_ID, target, target.base)
    kfp_api.client_cls.assert_called_once_with(host=kfp_api.host, namespace="team-a", existing_token="tok")
    kwargs = kfp_api.client.create_run_from_pipeline_package.call_args.kwargs
    assert {k: kwargs[k] for k in ("experiment_name", "namespace", "pipeline_root", "enable_caching",
                                   "service_account")} == {
        "experiment_name": "retrain", "namespace": "team-a", "pipeline_root": "gs://bucket/root",
        "enable_caching": True, "service_account": "pipeline-runner"}


def test_kubeflow_refusal_is_a_submit_error(kfp_api, kfp_launcher):  # noqa: F811
    from kfp_server_api import ApiException

    launcher, target = kfp_launcher
    kfp_api.client.create_run_from_pipeline_package.side_effect = ApiException(status=403, reason="Forbidden")
    with pytest.raises(SubmitError, match="KFP refused the run: HTTP 403 Forbidden"):
        launcher.start(RUN_ID, target, target.base)
    kfp_api.client.terminate_run.side_effect = ApiException(status=404, reason="Not Found")
    with pytest.raises(SubmitError, match="HTTP 404 Not Found"):
        launcher.cancel(training_run())


def test_kubeflow_unreachable_host_fails_the_start_and_is_retried(kfp_api, kfp_launcher, http_server):  # noqa: F811
    launcher, target = kfp_launcher
    (http_server.root / "apis" / "v2beta1" / "healthz").unlink()  # the probe now gets a 404
    with pytest.raises(SubmitError, match="answered HTTP 404"):
        launcher.start(RUN_ID, target, target.base)
    kfp_api.client_cls.assert_not_called()
    (http_server.root / "apis" / "v2beta1" / "healthz").write_text("{}")
    launcher.start(RUN_ID, target, target.base)  # no failed client was kept
    kfp_api.client_cls.assert_called_once()


def test_kubeflow_client_is_built_once(kfp_api, kfp_launcher):  # noqa: F811
    launcher, target = kfp_launcher
    kfp_api.client.get_run.return_value = kfp_run("RUNNING")
    launcher.start(RUN_ID, target, target.base)
    launcher.observe(training_run())
    launcher.cancel(training_run())
    kfp_api.client_cls.assert_called_once()
    kfp_api.client.get_run.assert_called_once_with("run-123")
    kfp_api.client.terminate_run.assert_called_once_with("run-123")


def test_kubeflow_states_cover_the_api():
    from kfp_server_api import V2beta1RuntimeState

    assert set(KFP_STATES) - {None} == set(V2beta1RuntimeState.allowable_values)


@pytest.mark.parametrize(("remote", "expected"), [
    (None, "running"), ("RUNTIME_STATE_UNSPECIFIED", "running"), ("PENDING", "running"), ("RUNNING", "running"),
    ("CANCELING", "running"), ("PAUSED", "running"), ("SUCCEEDED", "succeeded"), ("SKIPPED", "succeeded"),
    ("FAILED", "failed"), ("CANCELED", "cancelled"),
])
def test_kubeflow_state_mapping(kfp_api, kfp_launcher, remote, expected):  # noqa: F811
    launcher, _ = kfp_launcher
    kfp_api.client.get_run.return_value = kfp_run(remote)
    assert launcher.observe(training_run()).state == expected
    kfp_api.client.get_run.assert_called_once_with("run-123")


def test_kubeflow_unknown_state_raises_so_the_run_stays_active(kfp_api, kfp_launcher):  # noqa: F811
    launcher, _ = kfp_launcher
    kfp_api.client.get_run.return_value = kfp_run("EXPLODED")
    with pytest.raises(KeyError):
        launcher.observe(training_run())


def test_kubeflow_step_and_steps_done(kfp_api, kfp_launcher):  # noqa: F811
    launcher, _ = kfp_launcher
    tasks = [("catdog-training", "RUNNING"), ("root-driver", "SUCCEEDED"), ("ingest-driver", "SUCCEEDED"),
             ("ingest", "SUCCEEDED"), ("executor", "RUNNING"), ("preprocess", "SUCCEEDED"),
             ("preprocess", "SUCCEEDED"), ("train", "SUCCEEDED"), ("evaluate", "RUNNING")]
    kfp_api.client.get_run.return_value = kfp_run("RUNNING", tasks)
    observation = launcher.observe(training_run())
    assert (observation.state, observation.step, observation.steps_done) == ("running", "evaluate", 3)
    kfp_api.client.get_run.return_value = kfp_run("RUNNING", [*tasks[:-1], ("evaluate", "SUCCEEDED"),
                                                               ("select champion", "RUNNING")])
    observation = launcher.observe(training_run())
    assert (observation.step, observation.steps_done) == ("select-champion", 4)


def test_kubeflow_failure_names_the_step_and_the_error(kfp_api, kfp_launcher):  # noqa: F811
    launcher, _ = kfp_launcher
    kfp_api.client.get_run.return_value = kfp_run(
        "FAILED", [("ingest", "SUCCEEDED"), ("preprocess", "SUCCEEDED"), ("train", "FAILED")],
        error={"code": 13, "message": "pod train-123 OOMKilled"})
    observation = launcher.observe(training_run())
    assert (observation.state, observation.step, observation.steps_done) == ("failed", "train", 2)
    assert observation.reason == "step train failed; pod train-123 OOMKilled"
    kfp_api.client.get_run.return_value = kfp_run("FAILED")
    assert launcher.observe(training_run()).reason == "the KFP run failed"


def test_kubeflow_cancelled_says_who_stopped_it(kfp_api, kfp_launcher):  # noqa: F811
    launcher, _ = kfp_launcher
    kfp_api.client.get_run.return_value = kfp_run("CANCELED", [("ingest", "SUCCEEDED")])
    asked = launcher.observe(training_run(cancel_requested=True))
    assert (asked.state, asked.steps_done, asked.reason) == ("cancelled", 1, "stopped on request")
    assert launcher.observe(training_run()).reason == "cancelled in KFP"


# --- the champion decision ----------------------------------------------------------------------

OTHER_ID = "4567cdef" + "f" * 24


def test_two_overlapping_kubeflow_runs_each_report_their_own_decision(kfp_api, kfp_launcher, tmp_path):  # noqa: F811
    """Run B starts after A and decides while A still trains; A decides later. Each run's decision is
    the one recorded with its id, whatever the order or the times (a window would give A B's)."""
    launcher, _ = kfp_launcher
    registry = tmp_path / "registry"
    first = training_run(remote_id="run-a")
    second = training_run(id=OTHER_ID, remote_id="run-b", started_at=STARTED + timedelta(minutes=5))
    decide(registry, "an-earlier-run", STARTED - timedelta(hours=1), 1)
    theirs = decide(registry, OTHER_ID, STARTED + timedelta(minutes=20), 2, promoted=False)
    ours = decide(registry, RUN_ID, STARTED + timedelta(minutes=40), 3)
    kfp_api.client.get_run.return_value = kfp_run("SUCCEEDED", ALL_DONE[:5])
    observed = {run.id: launcher.observe(run) for run in (first, second)}
    assert observed[RUN_ID].decision == ours and observed[OTHER_ID].decision == theirs
    assert (observed[RUN_ID].state, observed[RUN_ID].step, observed[RUN_ID].steps_done,
            observed[RUN_ID].reason) == ("succeeded", None, 5, "v3 beats the champion")
    assert observed[OTHER_ID].reason == "v2 does not beat the champion"
    assert [c.args for c in kfp_api.client.get_run.call_args_list] == [("run-a",), ("run-b",)]


def test_succeeded_without_a_decision_says_so(kfp_api, kfp_launcher, tmp_path):  # noqa: F811
    launcher, target = kfp_launcher
    decide(tmp_path / "registry", OTHER_ID, STARTED + timedelta(minutes=1), 1)  # another run's, in this one's time
    ModelRegistry(str(tmp_path / "registry")).record_decision({"reason": "a record from before run ids"})
    kfp_api.client.get_run.return_value = kfp_run("SUCCEEDED", ALL_DONE)
    observation = launcher.observe(training_run())
    assert (observation.state, observation.decision, observation.steps_done) == ("succeeded", None, 6)
    assert observation.reason == (f"the run finished but recorded no champion decision for run {RUN_ID} in "
                                  f"{target.base.registry_uri}")


# --- Vertex AI ----------------------------------------------------------------------------------

def vertex_job_answer(state: str, tasks=(), error: str = "", end_time: datetime | None = None):
    """What PipelineJob.get returns: a job whose gca_resource is the service's PipelineJob proto."""
    from google.cloud.aiplatform.compat.types import pipeline_job as gca

    resource = gca.PipelineJob(name=RESOURCE, state=state, error={"code": 9, "message": error} if error else None,
                               job_detail={"task_details": [{"task_name": n, "state": s} for n, s in tasks]},
                               end_time=end_time)
    return mock.Mock(name="PipelineJob.get()", gca_resource=resource)


@pytest.fixture
def vertex_launcher(vertex, tmp_path):  # noqa: F811
    vertex.job.resource_name = RESOURCE
    target = target_of(VERTEX_ARGS, "vertex", tmp_path / "registry")
    return VertexLauncher(target), target


def test_vertex_start_sends_the_exact_job(vertex, vertex_launcher):  # noqa: F811
    launcher, target = vertex_launcher
    config = parse_training_words(VERTEX_ARGS, FEEDBACK).run_config(target, {"frozen_epochs": "3"})
    handle = launcher.start(RUN_ID, target, config)
    vertex.auth_default.assert_called_once_with(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    vertex.init.assert_called_once_with(project="my-project", location="europe-west4", credentials=vertex.credentials)
    vertex.job_cls.assert_called_once_with(
        display_name=RUN_NAME, template_path=mock.ANY, pipeline_root="gs://bucket/pipeline-root",
        parameter_values=config.model_copy(update={"run_id": RUN_ID}).pipeline_arguments(),
        labels={"app": "catdog", "pipeline": "catdog-training", "trigger": "feedback-app"},
        enable_caching=False, project="my-project", location="europe-west4")
    assert vertex.job_cls.call_args.kwargs["parameter_values"]["frozen_epochs"] == 3
    [template] = vertex.templates
    assert executor_images(template) == {IMAGE}
    vertex.job.submit.assert_called_once_with(service_account=None)
    assert handle == RunHandle(remote_id=RESOURCE, console_url=vertex.job._dashboard_uri.return_value)


def test_vertex_start_with_account_labels_and_cache(vertex):  # noqa: F811
    vertex.job.resource_name = RESOURCE
    target = target_of([*VERTEX_ARGS, "SERVICE_ACCOUNT=p@my-project.iam.gserviceaccount.com", "LABELS=team=ml",
                        "CACHE=1"], "vertex")
    VertexLauncher(target).start(RUN_ID, target, target.base)
    kwargs = vertex.job_cls.call_args.kwargs
    assert kwargs["labels"] == {"app": "catdog", "pipeline": "catdog-training", "team": "ml", "trigger": "feedback-app"}
    assert kwargs["enable_caching"] is True
    vertex.job.submit.assert_called_once_with(service_account="p@my-project.iam.gserviceaccount.com")


def test_vertex_refusal_is_a_submit_error(vertex, vertex_launcher):  # noqa: F811
    from google.api_core.exceptions import NotFound, PermissionDenied

    launcher, target = vertex_launcher
    vertex.job.submit.side_effect = PermissionDenied("aiplatform.pipelineJobs.create denied")
    with pytest.raises(SubmitError, match="Vertex AI refused the job: 403 aiplatform.pipelineJobs.create denied"):
        launcher.start(RUN_ID, target, target.base)
    vertex.job_cls.get.return_value.cancel.side_effect = NotFound("no such job")
    with pytest.raises(SubmitError, match="Vertex AI refused to cancel the job: 404 no such job"):
        launcher.cancel(training_run(target="vertex", remote_id=RESOURCE))


def test_vertex_without_credentials_fails_the_start(vertex, vertex_launcher):  # noqa: F811
    from google.auth.exceptions import DefaultCredentialsError

    launcher, target = vertex_launcher
    vertex.auth_default.side_effect = DefaultCredentialsError("not found")
    with pytest.raises(SubmitError, match="no Google Cloud credentials"):
        launcher.start(RUN_ID, target, target.base)
    vertex.job_cls.assert_not_called()


def test_vertex_is_initialised_once_and_cancels_the_job(vertex, vertex_launcher):  # noqa: F811
    launcher, target = vertex_launcher
    vertex.job_cls.get.return_value = vertex_job_answer("PIPELINE_STATE_RUNNING")
    run = training_run(target="vertex", remote_id=RESOURCE)
    launcher.start(RUN_ID, target, target.base)
    launcher.observe(run)
    vertex.job_cls.get.assert_called_once_with(resource_name=RESOURCE)
    vertex.job_cls.get.reset_mock()
    launcher.cancel(run)
    vertex.job_cls.get.assert_called_once_with(resource_name=RESOURCE)
    vertex.job_cls.get.return_value.cancel.assert_called_once_with()
    vertex.init.assert_called_once()
    vertex.auth_default.assert_called_once()


def test_vertex_states_cover_the_api():
    from google.cloud.aiplatform.compat.types import pipeline_state

    assert set(VERTEX_STATES) == {s.name for s in pipeline_state.PipelineState}


@pytest.mark.parametrize(("remote", "expected"), [
    ("PIPELINE_STATE_UNSPECIFIED", "running"), ("PIPELINE_STATE_QUEUED", "running"),
    ("PIPELINE_STATE_PENDING", "running"), ("PIPELINE_STATE_RUNNING", "running"),
    ("PIPELINE_STATE_CANCELLING", "running"), ("PIPELINE_STATE_PAUSED", "running"),
    ("PIPELINE_STATE_SUCCEEDED", "succeeded"), ("PIPELINE_STATE_FAILED", "failed"),
    ("PIPELINE_STATE_CANCELLED", "cancelled"),
])
def test_vertex_state_mapping(vertex, vertex_launcher, remote, expected):  # noqa: F811
    launcher, _ = vertex_launcher
    vertex.job_cls.get.return_value = vertex_job_answer(remote)
    assert launcher.observe(training_run(target="vertex", remote_id=RESOURCE)).state == expected
    vertex.job_cls.get.assert_called_once_with(resource_name=RESOURCE)


def test_vertex_step_failure_and_decision(vertex, vertex_launcher, tmp_path):  # noqa: F811
    launcher, _ = vertex_launcher
    run = training_run(target="vertex", remote_id=RESOURCE)
    tasks = [("catdog-training", "RUNNING"), ("ingest", "SUCCEEDED"), ("preprocess", "SUCCEEDED"),
             ("train", "RUNNING"), ("condition-1", "PENDING")]
    vertex.job_cls.get.return_value = vertex_job_answer("PIPELINE_STATE_RUNNING", tasks)
    observation = launcher.observe(run)
    assert (observation.state, observation.step, observation.steps_done) == ("running", "train", 2)

    vertex.job_cls.get.return_value = vertex_job_answer(
        "PIPELINE_STATE_FAILED", [*tasks[:3], ("train", "FAILED")], error="The DAG failed because some tasks failed.")
    observation = launcher.observe(run)
    assert (observation.state, observation.step, observation.steps_done) == ("failed", "train", 2)  # where it failed
    assert observation.reason == "step train failed; The DAG failed because some tasks failed."

    vertex.job_cls.get.return_value = vertex_job_answer("PIPELINE_STATE_CANCELLED", tasks[:2])
    assert launcher.observe(run).reason == "cancelled in Vertex AI"

    vertex.job_cls.get.return_value = vertex_job_answer("PIPELINE_STATE_SUCCEEDED", ALL_DONE,
                                                        end_time=STARTED + timedelta(hours=1))
    observation = launcher.observe(run)
    assert (observation.state, observation.steps_done, observation.decision) == ("succeeded", 6, None)
    assert observation.reason.startswith(f"the run finished but recorded no champion decision for run {RUN_ID} in ")


def test_two_overlapping_vertex_runs_each_report_their_own_decision(vertex, vertex_launcher, tmp_path):  # noqa: F811
    launcher, _ = vertex_launcher
    other_resource = RESOURCE.replace("20260301120000", "20260301120500")
    first = training_run(target="vertex", remote_id=RESOURCE)
    second = training_run(id=OTHER_ID, target="vertex", remote_id=other_resource,
                          started_at=STARTED + timedelta(minutes=5))
    theirs = decide(tmp_path / "registry", OTHER_ID, STARTED + timedelta(minutes=20), 2)
    ours = decide(tmp_path / "registry", RUN_ID, STARTED + timedelta(minutes=40), 3, promoted=False)
    vertex.job_cls.get.return_value = vertex_job_answer("PIPELINE_STATE_SUCCEEDED", ALL_DONE[:5],
                                                        end_time=STARTED + timedelta(hours=1))
    assert launcher.observe(second).decision == theirs
    observation = launcher.observe(first)
    assert (observation.state, observation.steps_done, observation.decision, observation.reason) == \
        ("succeeded", 5, ours, "v3 does not beat the champion")
    assert [c.kwargs for c in vertex.job_cls.get.call_args_list] == [{"resource_name": other_resource},
                                                                    {"resource_name": RESOURCE}]


def test_compiled_pipeline_steps_are_the_ones_counted():
    """The task names the services report are the compiled pipeline's: a renamed step would never count."""
    from feedback.retraining.runs import PIPELINE_STEPS
    from pipelines.remote import PIPELINE_YAML

    spec = yaml.safe_load(PIPELINE_YAML.read_text())
    tasks = set(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks |= set(component.get("dag", {}).get("tasks", {}))
    assert set(PIPELINE_STEPS) <= tasks
