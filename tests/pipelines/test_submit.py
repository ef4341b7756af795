"""TARGET=vertex and TARGET=kubeflow: the exact requests sent to the (mocked) clients, and the
fail-fast paths (missing settings, local paths, no credentials, unreachable host, placeholder image).

Nothing here reaches the network beyond 127.0.0.1; see tests/remote_fixtures.py.
"""

from __future__ import annotations

import re
import time
from unittest import mock

import pytest
import yaml

from catdog.registry import ModelRegistry
from pipelines import kubeflow
from pipelines import remote as sub
from pipelines.compile import PIPELINE_YAML
from pipelines.config import build_config
from pipelines.run import main as run_main
from tests.helpers import free_port
from tests.remote_fixtures import IMAGE, REMOTE_ARGS, REMOTE_OVERRIDES, VERTEX_ARGS, kubeflow_args, executor_images, kfp_api, vertex  # noqa: F401



# --- the image in the compiled pipeline ---------------------------------------------------------

def test_substitute_image_on_the_checked_in_compiled_pipeline(tmp_path):
    original_text = PIPELINE_YAML.read_text()
    original = yaml.safe_load(original_text)
    assert executor_images(original) == {sub.PLACEHOLDER_IMAGE}
    dest = tmp_path / "pipeline.yaml"
    changed = sub.substitute_image(PIPELINE_YAML, IMAGE, dest)
    result = yaml.safe_load(dest.read_text())
    assert changed == len(original["deploymentSpec"]["executors"]) >= 6
    assert executor_images(result) == {IMAGE}
    for executor in original["deploymentSpec"]["executors"].values():  # nothing else changes
        executor["container"]["image"] = IMAGE
    assert result == original
    assert PIPELINE_YAML.read_text() == original_text  # the checked-in file stays machine-independent


def test_substitute_image_refuses_a_pipeline_without_the_placeholder(tmp_path):
    other = tmp_path / "other.yaml"
    sub.substitute_image(PIPELINE_YAML, IMAGE, other)
    with pytest.raises(sub.SubmitError, match="make compile"):
        sub.substitute_image(other, "reg/x:1", tmp_path / "again.yaml")


def test_pipeline_package_is_temporary(tmp_path):
    with sub.pipeline_package(IMAGE) as package:
        assert executor_images(yaml.safe_load(package.read_text())) == {IMAGE}
    assert not package.exists()


@pytest.mark.parametrize("image", ["", sub.PLACEHOLDER_IMAGE, "catdog-components:abc1234"])
def test_check_image_refuses_images_a_cluster_cannot_pull(image):
    with pytest.raises(sub.SubmitError, match=r"IMAGE.*set IMAGE=<registry>/catdog-components:<tag>"):
        sub.check_image(image)


@pytest.mark.parametrize("image", [IMAGE, "localhost:5000/catdog-components:1", "ghcr.io/me/c@sha256:ab"])
def test_check_image_accepts_pushed_images(image):
    assert sub.check_image(image) == image


def test_constants_match_the_pipeline_source():
    from pipelines import compile as comp
    from pipelines.training_pipeline import PIPELINE_NAME

    assert sub.PIPELINE_NAME == PIPELINE_NAME
    assert sub.PIPELINE_YAML == comp.PIPELINE_YAML


# --- settings -----------------------------------------------------------------------------------

def test_parse_labels():
    assert sub.parse_labels("team=ml, env=dev") == {"team": "ml", "env": "dev"}
    assert sub.parse_labels("") == {}
    for bad in ("Team=ml", "team", "team=ML", "1x=y"):
        with pytest.raises(sub.SubmitError, match="LABELS"):
            sub.parse_labels(bad)


def test_remote_settings_report_every_missing_vertex_setting_at_once():
    with pytest.raises(sub.SubmitError) as err:
        sub.remote_settings("vertex", {})
    message = str(err.value)
    for name in ("PROJECT", "REGION", "PIPELINE_ROOT", "IMAGE"):
        assert f"{name} is not set" in message or f"{name}=(not set)" in message, name


@pytest.mark.parametrize("setting, expected", [
    ("PIPELINE_ROOT=/tmp/root", "PIPELINE_ROOT=/tmp/root: Vertex AI needs a gs:// prefix"),
    ("REGION=Europe West", "REGION=Europe West is not a Google Cloud region"),
    ("CACHE=maybe", "CACHE='maybe': use 1 or 0"),
    ("LABELS=Bad", "LABELS: bad label"),
])
def test_run_vertex_rejects_bad_settings_before_any_client(setting, expected, vertex, capsys):
    assert run_main([*VERTEX_ARGS, setting]) == 2
    assert expected in capsys.readouterr().err
    vertex.auth_default.assert_not_called()
    vertex.job_cls.assert_not_called()


# --- TARGET=vertex ------------------------------------------------------------------------------

def test_run_vertex_sends_the_exact_job(vertex, capsys):
    args = [*VERTEX_ARGS, "SERVICE_ACCOUNT=pipelines@my-project.iam.gserviceaccount.com",
            "RUN_NAME=nightly-1", "LABELS=team=ml", "image_size=192", "frozen_epochs=2"]
    assert run_main(args) == 0
    run_id = made_run_id(vertex.job_cls.call_args.kwargs["parameter_values"], capsys)
    config = build_config({**REMOTE_OVERRIDES, "image_size": "192", "frozen_epochs": "2", "run_id": run_id,
                           "vertex_project": "my-project", "vertex_region": "europe-west4"})  # from PROJECT/REGION
    vertex.auth_default.assert_called_once_with(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    vertex.init.assert_called_once_with(project="my-project", location="europe-west4", credentials=vertex.credentials)
    vertex.job_cls.assert_called_once_with(
        display_name="nightly-1",
        template_path=mock.ANY,
        pipeline_root="gs://bucket/pipeline-root",
        parameter_values=config.pipeline_arguments(),
        labels={"app": "catdog", "pipeline": "catdog-training", "team": "ml", "trigger": "manual"},
        enable_caching=False,
        project="my-project",
        location="europe-west4",
    )
    params = vertex.job_cls.call_args.kwargs["parameter_values"]
    assert params["image_size"] == 192 and params["frozen_epochs"] == 2 and params["data_uri"] == "gs://bucket/photos"
    [template] = vertex.templates
    assert executor_images(template) == {IMAGE}
    assert template["pipelineInfo"]["name"] == "catdog-training"
    vertex.job.submit.assert_called_once_with(service_account="pipelines@my-project.iam.gserviceaccount.com")
    vertex.job.wait.assert_not_called()
    assert vertex.job._dashboard_uri.return_value in capsys.readouterr().out


def made_run_id(parameters: dict, capsys) -> str:
    """The run id `make run` made (a uuid4 hex), passed as the run_id parameter and printed."""
    run_id = parameters["run_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", run_id)
    out = capsys.readouterr().out
    assert f"(run id {run_id})" in out
    print(out, end="")  # left for the caller's own checks
    return run_id


def record(registry_uri: str, run_id: str, version: int) -> dict:
    decision = {"run_id": run_id, "promoted": True, "challenger_version": version, "champion_version": version,
                "registry_uri": registry_uri, "reason": f"v{version} beats the champion"}
    ModelRegistry(registry_uri).record_decision(decision)
    return decision


def test_run_vertex_defaults_and_wait_prints_the_runs_own_decision(vertex, gcs, capsys):
    registry = gcs.uri("registry")
    record(registry, "wait-1", 2)
    record(registry, "another-run", 3)  # a later decision of another run: not this one's
    assert run_main([*VERTEX_ARGS, f"REGISTRY={registry}", "run_id=wait-1", "WAIT=1", "CACHE=1"]) == 0
    kwargs = vertex.job_cls.call_args.kwargs
    assert kwargs["enable_caching"] is True and kwargs["parameter_values"]["run_id"] == "wait-1"
    assert kwargs["display_name"].startswith("catdog-training-")
    vertex.job.submit.assert_called_once_with(service_account=None)
    vertex.job.wait.assert_called_once_with()
    out = capsys.readouterr().out
    assert "succeeded" in out
    assert f"challenger v2 PROMOTED: v2 beats the champion\nchampion: v2 in {registry}\n" in out


def test_run_vertex_wait_says_when_the_run_recorded_no_decision(vertex, gcs, capsys):
    registry = gcs.uri("registry")
    record(registry, "another-run", 3)
    assert run_main([*VERTEX_ARGS, f"REGISTRY={registry}", "run_id=wait-2", "WAIT=1"]) == 0
    assert (f"the run finished but recorded no champion decision for run wait-2 in {registry}\n"
            in capsys.readouterr().out)


def test_run_vertex_wait_that_cannot_read_the_registry_says_why(vertex, monkeypatch, capsys):
    """The run succeeded (exit 0); that its decision could not be read here is said, not hidden."""
    import catdog.registry

    def no_credentials(registry_uri, run_id):
        raise RuntimeError("no credentials for gs://bucket")

    monkeypatch.setattr(catdog.registry, "decision_of_run", no_credentials)
    assert run_main([*VERTEX_ARGS, "run_id=wait-3", "WAIT=1"]) == 0
    assert ("could not read the decision of run wait-3 from gs://bucket/registry: RuntimeError: no credentials "
            "for gs://bucket") in capsys.readouterr().err


def test_run_vertex_failed_run_exits_1(vertex, capsys):
    vertex.job.wait.side_effect = RuntimeError("Job failed with: code 9")
    assert run_main([*VERTEX_ARGS, "WAIT=1"]) == 1
    assert "did not succeed: Job failed with: code 9" in capsys.readouterr().err


def test_run_vertex_console_link_falls_back_to_a_built_url(vertex, capsys):
    vertex.job._dashboard_uri.side_effect = RuntimeError("no resource name")
    assert run_main(VERTEX_ARGS) == 0
    assert ("https://console.cloud.google.com/vertex-ai/locations/europe-west4/pipelines/runs/"
            "catdog-training-20260101000000?project=my-project") in capsys.readouterr().out


def test_run_vertex_missing_settings_name_them(vertex, capsys):
    started = time.monotonic()
    assert run_main(["TARGET=vertex"]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 5
    for text in ("PROJECT is not set", "REGION is not set", "PIPELINE_ROOT=(not set)", "IMAGE is not set",
                 "REGISTRY=registry is a local path", "a remote run cannot read a folder on this machine"):
        assert text in err, text
    assert "DATA=" not in err  # the default DATA, cats_and_dogs_filtered.zip over https, suits a remote run
    vertex.auth_default.assert_not_called()
    vertex.init.assert_not_called()


@pytest.mark.parametrize("image", [sub.PLACEHOLDER_IMAGE, ""])
def test_run_vertex_refuses_the_placeholder_image(image, vertex, capsys):
    args = [a for a in VERTEX_ARGS if not a.startswith("IMAGE=")] + ([f"IMAGE={image}"] if image else [])
    assert run_main(args) == 2
    assert "set IMAGE=<registry>/catdog-components:<tag>" in capsys.readouterr().err
    vertex.job_cls.assert_not_called()


def test_run_vertex_local_paths_are_refused(vertex, tmp_path, capsys):
    args = [*VERTEX_ARGS, f"DATA={tmp_path}", "WEIGHTS=imagenet"]
    assert run_main(args) == 2
    err = capsys.readouterr().err
    assert f"DATA={tmp_path} is a local path" in err and "WEIGHTS" not in err
    vertex.job_cls.assert_not_called()


def test_run_vertex_without_credentials_fails_fast(vertex, capsys):
    from google.auth.exceptions import DefaultCredentialsError

    vertex.auth_default.side_effect = DefaultCredentialsError("Your default credentials were not found.")
    assert run_main(VERTEX_ARGS) == 2
    err = capsys.readouterr().err
    assert "no Google Cloud credentials" in err and "gcloud auth application-default login" in err
    vertex.init.assert_not_called()
    vertex.job_cls.assert_not_called()


# --- TARGET=kubeflow ----------------------------------------------------------------------------

def test_run_kubeflow_sends_the_exact_run(kfp_api, capsys):
    args = kubeflow_args(kfp_api.host + "/", "RUN_NAME=try-1", "EXPERIMENT=catdog-dev", "batch_size=16",
                         "SERVICE_ACCOUNT=pipeline-runner")
    assert run_main(args) == 0
    run_id = made_run_id(kfp_api.client.create_run_from_pipeline_package.call_args.kwargs["arguments"], capsys)
    kfp_api.client_cls.assert_called_once_with(host=kfp_api.host)
    kfp_api.client.create_run_from_pipeline_package.assert_called_once_with(
        pipeline_file=mock.ANY,
        arguments=build_config({**REMOTE_OVERRIDES, "batch_size": "16", "run_id": run_id}).pipeline_arguments(),
        run_name="try-1",
        experiment_name="catdog-dev",
        namespace=None,
        pipeline_root=None,
        enable_caching=False,
        service_account="pipeline-runner",
    )
    [package] = kfp_api.packages
    assert executor_images(package) == {IMAGE}
    kfp_api.client.wait_for_run_completion.assert_not_called()
    assert f"{kfp_api.host}/#/runs/details/run-123" in capsys.readouterr().out


def test_run_kubeflow_namespace_root_and_wait(kfp_api, gcs, capsys):
    kfp_api.client.wait_for_run_completion.return_value = mock.Mock(state="SUCCEEDED")
    registry = gcs.uri("registry")
    record(registry, "kfp-wait", 4)
    args = kubeflow_args(kfp_api.host, "KFP_NAMESPACE=team-a", "PIPELINE_ROOT=gs://bucket/root", "WAIT=1",
                         f"REGISTRY={registry}", "run_id=kfp-wait")
    assert run_main(args) == 0
    assert "challenger v4 PROMOTED: v4 beats the champion" in capsys.readouterr().out
    kfp_api.client_cls.assert_called_once_with(host=kfp_api.host, namespace="team-a")
    kwargs = kfp_api.client.create_run_from_pipeline_package.call_args.kwargs
    assert kwargs["namespace"] == "team-a" and kwargs["pipeline_root"] == "gs://bucket/root"
    kfp_api.client.wait_for_run_completion.assert_called_once_with("run-123", timeout=kubeflow.KFP_WAIT_TIMEOUT_S)

    kfp_api.client.wait_for_run_completion.return_value = mock.Mock(state="FAILED")
    assert run_main(args) == 1
    assert "ended failed" in capsys.readouterr().err


def test_run_kubeflow_unreachable_host_fails_within_seconds(kfp_api, capsys):
    host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    assert run_main(kubeflow_args(host)) == 2
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert f"KFP_HOST={host} is unreachable" in err and "port-forward" in err
    kfp_api.client_cls.assert_not_called()


def test_run_kubeflow_host_that_is_not_the_kfp_api_is_refused(kfp_api, capsys, http_server):
    (http_server.root / "apis" / "v2beta1" / "healthz").unlink()  # a 404 from the static server
    assert run_main(kubeflow_args(kfp_api.host)) == 2
    assert "answered HTTP 404" in capsys.readouterr().err
    kfp_api.client_cls.assert_not_called()


def test_check_kfp_host_treats_redirects_and_401_as_a_login(monkeypatch):
    import requests

    for status in (302, 401):
        monkeypatch.setattr(requests, "get", mock.Mock(return_value=mock.Mock(status_code=status)))
        with pytest.raises(sub.SubmitError, match=f"HTTP {status}.*needs a login"):
            kubeflow.check_kfp_host("http://127.0.0.1:1")
        assert requests.get.call_args.kwargs == {"timeout": kubeflow.KFP_PROBE_TIMEOUT_S, "allow_redirects": False}


def test_run_kubeflow_needs_a_host_and_remote_paths(kfp_api, capsys):
    assert run_main(["TARGET=kubeflow", f"IMAGE={IMAGE}", "DATA=data"]) == 2
    err = capsys.readouterr().err
    assert "KFP_HOST is not set" in err and "DATA=data is a local path" in err
    kfp_api.client_cls.assert_not_called()


def test_bare_kfp_host_gets_https_like_kfp_client():
    s = sub.remote_settings("kubeflow", {"KFP_HOST": "kfp.example.com/", "IMAGE": IMAGE})
    assert s.kfp_host == "https://kfp.example.com"


# --- TARGET=local fails fast on missing local inputs --------------------------------------------

def test_run_local_missing_data_fails_before_running(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("pipelines.local.run_local", mock.Mock(side_effect=AssertionError("must not run")))
    missing = tmp_path / "nope"
    assert run_main([f"DATA={missing}"]) == 2
    assert f"DATA={missing} does not exist" in capsys.readouterr().err


def test_run_local_missing_weights_fails_before_running(tmp_path, image_folder, monkeypatch, capsys):
    monkeypatch.setattr("pipelines.local.run_local", mock.Mock(side_effect=AssertionError("must not run")))
    assert run_main([f"DATA={image_folder}", f"WEIGHTS={tmp_path / 'w.h5'}"]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_unknown_target(capsys):
    assert run_main(["TARGET=aws"]) == 2
    assert "unknown TARGET=aws" in capsys.readouterr().err


# --- the service says no ------------------------------------------------------------------------

def test_run_vertex_api_refusal_is_one_clear_line(vertex, capsys):
    from google.api_core.exceptions import PermissionDenied

    vertex.job.submit.side_effect = PermissionDenied("Permission 'aiplatform.pipelineJobs.create' denied")
    assert run_main(VERTEX_ARGS) == 2
    assert "Vertex AI refused the job: 403 Permission 'aiplatform.pipelineJobs.create' denied" in capsys.readouterr().err


def test_run_kubeflow_api_refusal_is_one_clear_line(kfp_api, capsys):
    from kfp_server_api import ApiException

    kfp_api.client.create_run_from_pipeline_package.side_effect = ApiException(status=400, reason="Bad Request")
    assert run_main(kubeflow_args(kfp_api.host)) == 2
    assert "KFP refused the run: HTTP 400 Bad Request" in capsys.readouterr().err


def test_vertex_deploy_defaults_to_the_run_project_and_region():
    from pipelines.config import build_config
    from pipelines.words import parse_arguments, with_vertex_defaults

    words = ["TARGET=vertex", "PROJECT=proj-1", "REGION=europe-west4", "deploy_target=vertex",
             "serving_image=img:1", "REGISTRY=gs://b/registry"]
    overrides, settings = parse_arguments(words)
    config = build_config(with_vertex_defaults(overrides, settings))
    assert (config.vertex_project, config.vertex_region) == ("proj-1", "europe-west4")
    overrides, settings = parse_arguments([*words, "vertex_region=us-east1", "vertex_project=other"])
    config = build_config(with_vertex_defaults(overrides, settings))
    assert (config.vertex_project, config.vertex_region) == ("other", "us-east1")
    overrides, settings = parse_arguments(["TARGET=kubeflow", "PROJECT=proj-1", "REGION=europe-west4"])
    assert with_vertex_defaults(overrides, settings) == {}


def test_run_kubeflow_sends_kfp_token_from_the_environment(kfp_api, monkeypatch):
    import requests

    probe = mock.Mock(return_value=mock.Mock(status_code=200))
    monkeypatch.setattr(requests, "get", probe)
    monkeypatch.setenv("KFP_TOKEN", "t0ken")
    assert run_main(kubeflow_args(kfp_api.host, "KFP_NAMESPACE=team-a")) == 0
    assert probe.call_args.kwargs["headers"] == {"Authorization": "Bearer t0ken"}
    kfp_api.client_cls.assert_called_once_with(host=kfp_api.host, namespace="team-a", existing_token="t0ken")


def test_refused_kfp_token_is_named(monkeypatch):
    import requests

    monkeypatch.setattr(requests, "get", mock.Mock(return_value=mock.Mock(status_code=403)))
    with pytest.raises(sub.SubmitError, match="the KFP_TOKEN given was refused"):
        kubeflow.check_kfp_host("http://127.0.0.1:1", "bad")
