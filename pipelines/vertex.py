"""TARGET=vertex: submit a Vertex AI PipelineJob, and create or delete a Vertex AI schedule.

    submit_vertex(config, s)                 `make run TARGET=vertex`: one job (WAIT=1: until it ends)
    submit_job(aiplatform, config, s, trigger)   the one PipelineJob build and submit (a refusal is a
                                             SubmitError), shared with the feedback app's VertexLauncher
                                             (feedback/retraining/launchers/)
    schedule_vertex / unschedule_vertex      `make schedule` / `make unschedule` TARGET=vertex
    vertex_schedule_body                     the request `schedule_vertex` sends, for DRY_RUN=1

Application Default Credentials are checked before aiplatform is initialised (a SubmitError saying
how to get them). Every job carries the LABELS, app=catdog, pipeline=catdog-training and a
`trigger` label (manual, schedule, feedback-app). Settings: pipelines/remote.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipelines.config import PipelineConfig
from pipelines.cron import validate_cron
from pipelines.remote import RemoteRunFailed, RemoteSettings, SubmitError, pipeline_package, replaced_warning


# --- the client and the job ---------------------------------------------------------------------

def google_credentials():
    """Application Default Credentials, or a SubmitError saying how to get them (checked up front)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError as exc:
        raise SubmitError(
            "no Google Cloud credentials: run `gcloud auth application-default login`, or set "
            f"GOOGLE_APPLICATION_CREDENTIALS to a service-account key file ({exc})"
        ) from None
    return credentials


def init_vertex(s: RemoteSettings):
    """aiplatform, initialised for PROJECT/REGION with the checked credentials."""
    credentials = google_credentials()
    from google.cloud import aiplatform

    aiplatform.init(project=s.project, location=s.region, credentials=credentials)
    return aiplatform


def vertex_console_url(s: RemoteSettings, job) -> str:
    try:
        return str(job._dashboard_uri())
    except Exception:  # no resource name yet
        return (f"https://console.cloud.google.com/vertex-ai/locations/{s.region}/pipelines/runs/"
                f"{job.job_id}?project={s.project}")


def vertex_job(aiplatform, s: RemoteSettings, config: PipelineConfig, template: Path, *,
               display_name: str, labels: dict[str, str], enable_caching: bool):
    return aiplatform.PipelineJob(
        display_name=display_name,
        template_path=str(template),
        pipeline_root=s.pipeline_root,
        parameter_values=config.pipeline_arguments(),
        labels=labels,
        enable_caching=enable_caching,
        project=s.project,
        location=s.region,
    )


def submit_job(aiplatform, config: PipelineConfig, s: RemoteSettings, *, trigger: str):
    """Build the PipelineJob named s.run_name from the compiled pipeline with s.image and submit it
    (labelled trigger=`trigger`); returns the job. A refusal (permission denied, API not enabled, bad
    bucket...) is a SubmitError."""
    with pipeline_package(s.image, s.train_hardware) as template:  # the job reads the template when built
        job = vertex_job(aiplatform, s, config, template, display_name=s.run_name,
                         labels={**s.labels, "trigger": trigger}, enable_caching=s.enable_caching)
    from google.api_core.exceptions import GoogleAPICallError

    try:
        job.submit(service_account=s.service_account or None)
    except GoogleAPICallError as exc:  # permission denied, API not enabled, bad bucket...
        raise SubmitError(f"Vertex AI refused the job: {exc}") from None
    return job


def submit_vertex(config: PipelineConfig, s: RemoteSettings) -> str:
    """Submit one Vertex AI PipelineJob; with WAIT, block until it ends. Returns the console URL."""
    job = submit_job(init_vertex(s), config, s, trigger="manual")
    url = vertex_console_url(s, job)
    print(f"submitted {s.run_name} (run id {config.run_id}) to Vertex AI Pipelines: {url}", flush=True)
    if s.wait:
        try:
            job.wait()
        except RuntimeError as exc:  # the SDK raises when the job fails or is cancelled
            raise RemoteRunFailed(f"Vertex AI run {s.run_name} did not succeed: {exc} ({url})") from None
        print(f"run {s.run_name} succeeded")
    return url


# --- schedules ----------------------------------------------------------------------------------

def schedule_vertex(config: PipelineConfig, s: RemoteSettings, name: str, cron: str):
    """Create the Vertex AI schedule `name` (replacing any of that name); returns it."""
    aiplatform = init_vertex(s)
    old = aiplatform.PipelineJobSchedule.list(
        filter=f'display_name="{name}"', project=s.project, location=s.region
    )
    with pipeline_package(s.image, s.train_hardware) as template:
        job = vertex_job(aiplatform, s, config, template, display_name=name,
                         labels={**s.labels, "trigger": "schedule"}, enable_caching=False)
    schedule = job.create_schedule(
        display_name=name, cron=validate_cron(cron), max_concurrent_run_count=1, max_run_count=None,
        service_account=s.service_account or None,
    )
    with replaced_warning(schedule.resource_name):
        for previous in old:
            previous.delete()
    print(f"schedule {name} ({cron}, UTC) created in {s.project}/{s.region}"
          f"{f', replacing {len(old)}' if old else ''}: https://console.cloud.google.com/vertex-ai/"
          f"locations/{s.region}/pipelines/schedules?project={s.project}")
    return schedule


def unschedule_vertex(s: RemoteSettings, name: str) -> int:
    aiplatform = init_vertex(s)
    old = aiplatform.PipelineJobSchedule.list(
        filter=f'display_name="{name}"', project=s.project, location=s.region
    )
    for schedule in old:
        schedule.delete()
    return len(old)

# --- dry run: the request body, validated against the SDK's own model ---------------------------

def check_vertex_body(body: dict[str, Any]) -> dict[str, Any]:
    """`body` parsed into google.cloud.aiplatform_v1 Schedule (unknown field or wrong type:
    json_format.ParseError), returned as canonical proto3 JSON (camelCase, int64 as strings)."""
    from google.cloud.aiplatform_v1.types import Schedule
    from google.protobuf import json_format

    message = json_format.ParseDict(body, Schedule.pb(Schedule()))
    return json_format.MessageToDict(message)



def vertex_pipeline_spec(template: Path, enable_caching: bool = False) -> dict[str, Any]:
    """The compiled spec with every task of every DAG given cachingOptions {enableCache: ...}, as
    aiplatform.PipelineJob(enable_caching=...) does (`_set_enable_caching_value`)."""
    spec = yaml.safe_load(template.read_text())
    for component in [spec["root"], *spec.get("components", {}).values()]:
        for task in component.get("dag", {}).get("tasks", {}).values():
            task["cachingOptions"] = {"enableCache": enable_caching}
    return spec


def vertex_schedule_body(config: PipelineConfig, s: RemoteSettings, name: str, cron: str,
                         template: Path) -> dict[str, Any]:
    """The Schedule `schedule_vertex` creates (POST .../v1/projects/P/locations/R/schedules)."""
    job = {
        "runtime_config": {"gcs_output_directory": s.pipeline_root, "parameter_values": {
            k: v for k, v in config.pipeline_arguments().items() if v is not None}},
        "pipeline_spec": vertex_pipeline_spec(template),
        "labels": {**s.labels, "trigger": "schedule"},
    }
    if s.service_account:
        job["service_account"] = s.service_account
    return check_vertex_body({
        "display_name": name, "cron": validate_cron(cron), "max_concurrent_run_count": 1,
        "create_pipeline_job_request": {"parent": f"projects/{s.project}/locations/{s.region}", "pipeline_job": job},
    })
