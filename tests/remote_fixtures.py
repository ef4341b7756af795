"""Fixtures for the remote-target tests (tests/pipelines/test_submit.py, tests/pipelines/test_schedule.py).

Mocks sit at the client boundary only: ``google.auth.default``, ``aiplatform.init``,
``aiplatform.PipelineJob``, ``aiplatform.PipelineJobSchedule`` and ``kfp.Client``. The KFP host is
a real static server on 127.0.0.1 (conftest's ``http_server``) answering /apis/v2beta1/healthz, so
the reachability probe runs for real. Nothing reaches the network beyond 127.0.0.1.

- ``vertex``: a ``VertexMocks``; ``.templates`` holds each YAML a PipelineJob was built from
  (read while the temporary file still exists), ``.order`` the sequence of create/delete calls.
- ``kfp_api``: a ``KfpMocks``; ``.host`` the loopback KFP_HOST, ``.packages`` the pipeline YAMLs
  sent, ``.client`` the mocked kfp.Client instance, ``.order`` create/delete calls.
- ``remote_data``: parameter overrides with gs:// DATA/REGISTRY/WEIGHTS, as a remote run needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import yaml

IMAGE = "us-central1-docker.pkg.dev/my-project/catdog/catdog-components:abc1234"
REMOTE_ARGS = ["DATA=gs://bucket/photos", "REGISTRY=gs://bucket/registry", "WEIGHTS=gs://bucket/w.h5"]
REMOTE_OVERRIDES = {"data_uri": "gs://bucket/photos", "registry_uri": "gs://bucket/registry", "weights": "gs://bucket/w.h5"}
def kubeflow_args(host: str, *extra: str) -> list[str]:
    return ["TARGET=kubeflow", f"KFP_HOST={host}", f"IMAGE={IMAGE}", *REMOTE_ARGS, *extra]


VERTEX_ARGS = [
    "TARGET=vertex", "PROJECT=my-project", "REGION=europe-west4",
    "PIPELINE_ROOT=gs://bucket/pipeline-root", f"IMAGE={IMAGE}", *REMOTE_ARGS,
]


def executor_images(spec: dict) -> set[str]:
    return {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}


@dataclass
class VertexMocks:
    credentials: object
    auth_default: mock.Mock
    init: mock.Mock
    job_cls: mock.Mock
    job: mock.Mock
    schedule_cls: mock.Mock
    templates: list[dict] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def existing_schedule(self, name: str) -> mock.Mock:
        """Make PipelineJobSchedule.list return one more schedule named `name`."""
        schedule = mock.Mock(display_name=name)
        schedule.delete.side_effect = lambda: self.order.append(f"delete {name}")
        self.schedule_cls.list.return_value = [*self.schedule_cls.list.return_value, schedule]
        return schedule


@pytest.fixture
def vertex(monkeypatch) -> VertexMocks:
    import google.auth
    from google.cloud import aiplatform

    credentials = object()
    auth_default = mock.Mock(return_value=(credentials, "adc-project"))
    monkeypatch.setattr(google.auth, "default", auth_default)
    job = mock.Mock(name="PipelineJob()", job_id="catdog-training-20260101000000")
    job._dashboard_uri.return_value = "https://console.cloud.google.com/vertex-ai/locations/europe-west4/pipelines/runs/x?project=my-project"
    mocks = VertexMocks(credentials, auth_default, mock.Mock(name="init"), mock.Mock(name="PipelineJob"),
                        job, mock.Mock(name="PipelineJobSchedule"))

    def build_job(**kwargs):
        mocks.templates.append(yaml.safe_load(Path(kwargs["template_path"]).read_text()))
        return job

    mocks.job_cls.side_effect = build_job
    job.create_schedule.side_effect = lambda **kwargs: mocks.order.append("create") or mock.Mock(name="schedule")
    mocks.schedule_cls.list.return_value = []
    monkeypatch.setattr(aiplatform, "init", mocks.init)
    monkeypatch.setattr(aiplatform, "PipelineJob", mocks.job_cls)
    monkeypatch.setattr(aiplatform, "PipelineJobSchedule", mocks.schedule_cls)
    return mocks


@dataclass
class KfpMocks:
    host: str
    client_cls: mock.Mock
    client: mock.Mock
    packages: list[dict] = field(default_factory=list)
    order: list[str] = field(default_factory=list)


@pytest.fixture
def kfp_api(http_server, monkeypatch) -> KfpMocks:
    import kfp

    healthz = http_server.root / "apis" / "v2beta1" / "healthz"
    healthz.parent.mkdir(parents=True)
    healthz.write_text('{"multi_user": false}')
    client = mock.Mock(name="kfp.Client()")
    mocks = KfpMocks(http_server.base_url, mock.Mock(name="kfp.Client", return_value=client), client)

    def read_package(path: str) -> None:
        mocks.packages.append(yaml.safe_load(Path(path).read_text()))

    def create_run(**kwargs):
        read_package(kwargs["pipeline_file"])
        return SimpleNamespace(run_id="run-123")

    def create_recurring(**kwargs):
        read_package(kwargs["pipeline_package_path"])
        mocks.order.append("create")
        return SimpleNamespace(recurring_run_id="rr-new")

    client.create_run_from_pipeline_package.side_effect = create_run
    client.create_recurring_run.side_effect = create_recurring
    client.create_experiment.return_value = SimpleNamespace(experiment_id="exp-1")
    client.list_recurring_runs.return_value = SimpleNamespace(recurring_runs=None, next_page_token="")
    client.delete_recurring_run.side_effect = lambda recurring_run_id: mocks.order.append(f"delete {recurring_run_id}")
    monkeypatch.setattr(kfp, "Client", mocks.client_cls)
    return mocks
