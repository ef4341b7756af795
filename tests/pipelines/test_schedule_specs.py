"""manifests/schedules/: the checked-in KFP RecurringRun and Vertex AI Schedule specs equal what the
code writes now (drift), parse into the SDKs' own types (a misspelt field fails), have the cron,
concurrency and caching `make schedule` promises, and equal the requests the real kfp.Client and
aiplatform code build in `make schedule` (only the final HTTP call is replaced). Nothing is sent.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from types import SimpleNamespace

import pytest
import yaml

from pipelines import kubeflow, vertex
from pipelines import schedule as sch
from pipelines.config import build_config
from pipelines.cron import validate_cron
from pipelines.remote import PIPELINE_YAML, check_remote
from pipelines.words import parse_arguments, with_vertex_defaults
from tests.helpers import REPO_ROOT

KFP_FILE, VERTEX_FILE = "kfp-recurring-run.yaml", "vertex-schedule.yaml"
REGENERATE = "run make compile (it also runs python -m pipelines.schedule examples)"


def example(filename: str):
    """(config, RemoteSettings, argv) of a checked-in example, as `make schedule` would build them."""
    argv = [*sch.EXAMPLES[filename], f"CRON={sch.EXAMPLE_CRON}"]
    overrides, settings = parse_arguments(argv, sch.KNOWN_SETTINGS)
    config = build_config(with_vertex_defaults(overrides, settings))
    return config, check_remote(settings["TARGET"], config, settings), argv


def checked_in(filename: str) -> dict:
    path = sch.SPECS_DIR / filename
    assert path.is_file(), f"{path} is missing: {REGENERATE}"
    return yaml.safe_load(path.read_text())


def tasks(pipeline_spec: dict) -> dict[str, dict]:
    """Every task of every DAG (root and sub-DAGs), by 'component/task'."""
    dags = {"root": pipeline_spec["root"], **pipeline_spec["components"]}
    return {f"{c}/{t}": task for c, comp in dags.items() for t, task in comp.get("dag", {}).get("tasks", {}).items()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("schedules")
    sch.write_examples(folder)
    return folder


# --- drift --------------------------------------------------------------------------------------

@pytest.mark.parametrize("filename", [KFP_FILE, VERTEX_FILE])
def test_checked_in_specs_match_the_code(generated, filename):
    checked_in(filename)
    assert (sch.SPECS_DIR / filename).read_text() == (generated / filename).read_text(), (
        f"manifests/schedules/{filename} is out of date with the pipeline or pipelines/schedule.py: {REGENERATE}"
    )


def test_parameters_follow_the_pipeline():
    """Every pipeline parameter, with the typed config's values; the embedded pipeline is the compiled one."""
    compiled = yaml.safe_load(PIPELINE_YAML.read_text())
    declared = set(compiled["root"]["inputDefinitions"]["parameters"])
    kfp, vertex = checked_in(KFP_FILE), checked_in(VERTEX_FILE)
    (kfp_config, *_), (vertex_config, *_) = example(KFP_FILE), example(VERTEX_FILE)
    assert kfp["runtime_config"]["parameters"] == kfp_config.pipeline_arguments()
    job = vertex["createPipelineJobRequest"]["pipelineJob"]
    assert job["runtimeConfig"]["parameterValues"] == vertex_config.pipeline_arguments()
    assert set(kfp["runtime_config"]["parameters"]) == set(job["runtimeConfig"]["parameterValues"]) == declared
    for spec in (kfp["pipeline_spec"], job["pipelineSpec"]):
        assert spec["root"]["inputDefinitions"] == compiled["root"]["inputDefinitions"]
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
        assert images == {a.partition("=")[2] for a in sch.EXAMPLES[KFP_FILE] if a.startswith("IMAGE=")}


# --- the SDKs' own models -----------------------------------------------------------------------

def test_kfp_spec_is_a_v2beta1_recurring_run():
    from kfp_server_api import ApiClient, V2beta1RecurringRun

    body = checked_in(KFP_FILE)
    run = ApiClient().deserialize(SimpleNamespace(data=json.dumps(body)), "V2beta1RecurringRun")
    assert isinstance(run, V2beta1RecurringRun)
    assert ApiClient().sanitize_for_serialization(run) == body  # nothing dropped or retyped
    assert kubeflow.check_kfp_body(body) == body
    assert run.display_name == "catdog-retraining" and run.experiment_id == kubeflow.KFP_EXPERIMENT_ID
    assert run.trigger.cron_schedule.cron == "0 0 3 * * 1"
    assert run.trigger.periodic_schedule is None
    assert (run.max_concurrency, run.no_catchup, run.mode) == ("1", True, "ENABLE")
    assert run.service_account == "pipeline-runner"
    assert run.pipeline_version_reference is None and run.pipeline_spec["pipelineInfo"]["name"] == "catdog-training"


def test_vertex_spec_is_an_aiplatform_v1_schedule():
    from google.cloud.aiplatform_v1.types import Schedule
    from google.protobuf import json_format

    body = checked_in(VERTEX_FILE)
    schedule = json_format.ParseDict(body, Schedule.pb(Schedule()))
    assert json_format.MessageToDict(schedule) == body and vertex.check_vertex_body(body) == body
    assert schedule.display_name == "catdog-retraining" and schedule.cron == "0 3 * * 1"
    assert schedule.max_concurrent_run_count == 1 and schedule.max_run_count == 0  # 0: unset, no end
    request = schedule.create_pipeline_job_request
    assert request.parent == "projects/my-project/locations/us-central1"
    job = request.pipeline_job
    assert job.service_account == "catdog-pipelines@my-project.iam.gserviceaccount.com"
    assert dict(job.labels) == {"app": "catdog", "pipeline": "catdog-training", "trigger": "schedule"}
    assert job.runtime_config.gcs_output_directory == "gs://my-bucket/pipeline-root"
    assert job.runtime_config.parameter_values["image_size"].number_value == 256
    assert job.runtime_config.parameter_values["vertex_project"].string_value == "my-project"
    assert not job.template_uri and job.pipeline_spec["pipelineInfo"]["name"] == "catdog-training"


def _edit(body: dict, path: str, value) -> dict:
    """A copy of `body` with the dotted `path` set to `value` (a misspelt key or a wrong value)."""
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node[key]
    node[last] = value
    return body


@pytest.mark.parametrize("path, value", [
    ("max_concurency", "1"),                       # misspelt top-level field
    ("trigger.cron_schedule.crom", "0 0 3 * * 1"),  # misspelt nested field
    ("trigger.cronSchedule", {"cron": "0 0 3 * * 1"}),  # camelCase: the v2beta1 REST API is snake_case
    ("no_catchup", "yes"),                         # wrong type
    ("mode", "ON"),                                # not a RecurringRunMode
])
def test_kfp_validation_refuses_a_bad_field(path, value):
    with pytest.raises(ValueError, match="not a valid V2beta1RecurringRun: bad or unknown field"):
        kubeflow.check_kfp_body(_edit(checked_in(KFP_FILE), path, value))


@pytest.mark.parametrize("path, value", [
    ("maxConcurrentRunCnt", "1"),
    ("createPipelineJobRequest.pipelineJob.runtimeConfig.parameterValue", {}),
    ("createPipelineJobRequest.pipelineJob.enableCaching", False),  # no such field: caching is in the spec
    ("cron", 5),
])
def test_vertex_validation_refuses_a_bad_field(path, value):
    from google.protobuf.json_format import ParseError

    with pytest.raises(ParseError):
        vertex.check_vertex_body(_edit(checked_in(VERTEX_FILE), path, value))


# --- what `make schedule` promises --------------------------------------------------------------

def test_cron_fields():
    kfp_cron = checked_in(KFP_FILE)["trigger"]["cron_schedule"]["cron"]
    vertex_cron = checked_in(VERTEX_FILE)["cron"]
    assert kfp_cron.split() == ["0", *sch.EXAMPLE_CRON.split()]  # seconds first, 6 fields
    assert vertex_cron == validate_cron(vertex_cron) == sch.EXAMPLE_CRON  # 5 fields, UTC


def test_one_run_at_a_time():
    kfp, vertex = checked_in(KFP_FILE), checked_in(VERTEX_FILE)
    assert (kfp["max_concurrency"], kfp["no_catchup"], kfp["mode"]) == ("1", True, "ENABLE")
    assert vertex["maxConcurrentRunCount"] == "1" and "maxRunCount" not in vertex


def test_caching_is_off_in_every_task():
    compiled = tasks(yaml.safe_load(PIPELINE_YAML.read_text()))
    assert any(t.get("cachingOptions", {}).get("enableCache") for t in compiled.values())  # on when compiled
    kfp = tasks(checked_in(KFP_FILE)["pipeline_spec"])
    vertex = tasks(checked_in(VERTEX_FILE)["createPipelineJobRequest"]["pipelineJob"]["pipelineSpec"])
    assert set(kfp) == set(vertex) == set(compiled)
    # KFP: enableCache false is the protobuf default, so it is left out ({}); Vertex: written out.
    assert {name: t["cachingOptions"] for name, t in kfp.items()} == {name: {} for name in compiled}
    off = {"enableCache": False}
    assert {name: t["cachingOptions"] for name, t in vertex.items()} == {name: off for name in compiled}


# --- equal to what the real SDK code in `make schedule` sends -----------------------------------

def test_kfp_spec_equals_what_make_schedule_sends(monkeypatch):
    """schedule_kubeflow with the real kfp.Client.create_recurring_run; only the REST call is caught."""
    import kfp
    from kfp_server_api import ApiClient

    config, s, _ = example(KFP_FILE)
    sent = []
    client = object.__new__(kfp.Client)  # no __init__: it would probe the host
    client._recurring_run_api = SimpleNamespace(recurring_run_service_create_recurring_run=lambda recurring_run: (
        sent.append(recurring_run) or SimpleNamespace(recurring_run_id="rr-1")))
    client.create_experiment = lambda name, namespace: SimpleNamespace(experiment_id=kubeflow.KFP_EXPERIMENT_ID)
    client.list_recurring_runs = lambda **_: SimpleNamespace(recurring_runs=[], next_page_token="")
    monkeypatch.setattr(kubeflow, "kfp_client", lambda _: client)
    kubeflow.schedule_kubeflow(config, s, "catdog-retraining", sch.EXAMPLE_CRON)
    body = ApiClient().sanitize_for_serialization(sent[0])
    assert body["max_concurrency"] == 1  # the SDK sends the int64 as a number; the spec, as "1"
    assert {**body, "max_concurrency": "1"} == checked_in(KFP_FILE)


def test_vertex_spec_equals_what_make_schedule_sends(monkeypatch):
    """schedule_vertex with the real aiplatform PipelineJob and PipelineJobSchedule; only the gRPC call is caught."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer
    from google.cloud.aiplatform_v1.services.schedule_service import ScheduleServiceClient
    from google.cloud.aiplatform_v1.types import Schedule
    from google.protobuf import json_format

    config, s, _ = example(VERTEX_FILE)
    sent = []

    def create_schedule(self, parent, schedule, timeout=None):
        sent.append(schedule)
        return Schedule(name=f"{parent}/schedules/1", display_name=schedule.display_name)

    def init_vertex(s):
        initializer.global_config.init(project=s.project, location=s.region, credentials=AnonymousCredentials())
        return aiplatform

    monkeypatch.setattr(initializer, "global_config", initializer._Config())  # leave no global state behind
    monkeypatch.setattr(vertex, "init_vertex", init_vertex)
    monkeypatch.setattr(aiplatform.PipelineJobSchedule, "list", classmethod(lambda cls, **_: []))
    monkeypatch.setattr(ScheduleServiceClient, "create_schedule", create_schedule)
    vertex.schedule_vertex(config, s, "catdog-retraining", sch.EXAMPLE_CRON)
    assert json_format.MessageToDict(Schedule.pb(sent[0])) == checked_in(VERTEX_FILE)


# --- the command line: DRY_RUN=1 / SPEC_FILE sends nothing --------------------------------------

@pytest.fixture
def no_clients(monkeypatch):
    def refuse(*_):
        raise AssertionError("a dry run builds no client")
    monkeypatch.setattr(kubeflow, "kfp_client", refuse)
    monkeypatch.setattr(vertex, "init_vertex", refuse)


@pytest.mark.parametrize("filename", [KFP_FILE, VERTEX_FILE])
def test_dry_run_prints_the_spec(no_clients, capsys, filename):
    *_, argv = example(filename)
    assert sch.main(["create", *argv, "DRY_RUN=1"]) == 0
    assert capsys.readouterr().out == (sch.SPECS_DIR / filename).read_text()


def test_spec_file_writes_it_with_overrides(no_clients, tmp_path, capsys):
    *_, argv = example(KFP_FILE)
    out = tmp_path / "rr.yaml"
    args = [*argv, "CRON=*/30 2 * * *", "SCHEDULE_NAME=nightly", "frozen_epochs=2", f"SPEC_FILE={out}"]
    assert sch.main(["create", *args]) == 0
    assert capsys.readouterr().out == f"wrote {out} (nothing was sent)\n"
    body = yaml.safe_load(out.read_text())
    assert body["display_name"] == "nightly" and body["trigger"]["cron_schedule"]["cron"] == "0 */30 2 * * *"
    assert body["runtime_config"]["parameters"]["frozen_epochs"] == 2


def test_dry_run_checks_like_make_schedule(no_clients, capsys):
    assert sch.main(["create", "TARGET=vertex", "CRON=0 3 * * 1", "DATA=photos", "DRY_RUN=1"]) == 2
    err = capsys.readouterr().err
    assert "PROJECT is not set" in err and "IMAGE is not set" in err and "DATA=photos is a local path" in err
    assert sch.main(["create", *example(KFP_FILE)[2], "CRON=0 3 * *", "DRY_RUN=1"]) == 2
    assert "has 4 fields" in capsys.readouterr().err
    assert sch.main(["create", *example(KFP_FILE)[2], "DRY_RUN=maybe"]) == 2
    assert "DRY_RUN='maybe': use 1 or 0" in capsys.readouterr().err


def test_unschedule_has_no_dry_run(no_clients, capsys):
    assert sch.main(["delete", "TARGET=kubeflow", "KFP_HOST=http://localhost:1", "DRY_RUN=1"]) == 2
    assert "unschedule has no dry run" in capsys.readouterr().err


def test_make_schedule_dry_run(tmp_path):
    """The real Makefile target passes DRY_RUN/SPEC_FILE through $(MAKEOVERRIDES) unchanged."""
    out = tmp_path / "schedule.yaml"
    result = subprocess.run(
        ["make", "-s", "schedule", *example(VERTEX_FILE)[2], f"SPEC_FILE={out}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, env={**os.environ, "MAKEFLAGS": ""},
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == (sch.SPECS_DIR / VERTEX_FILE).read_text()
