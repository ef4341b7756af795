"""Scheduled retraining: cron validation, the exact Vertex schedule / KFP recurring run requested
(mocked clients), replace-by-name, unschedule, and the local crontab line (nothing installed).
"""

from __future__ import annotations

import os
import subprocess
import time
from types import SimpleNamespace
from unittest import mock

import pytest

from pipelines import schedule as sch
from pipelines.cron import kfp_cron, validate_cron
from pipelines.local import crontab_line
from pipelines.config import ConfigError, build_config
from tests.helpers import REPO_ROOT, free_port
from tests.remote_fixtures import IMAGE, REMOTE_ARGS, REMOTE_OVERRIDES, VERTEX_ARGS, kubeflow_args, executor_images, kfp_api, vertex  # noqa: F401

NAME = "catdog-retraining"


# --- cron ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cron", ["0 3 * * 1", "*/15 * * * *", "0 0 1,15 * MON-FRI", "30 2 * jan-mar 0",
                                  "0 22 * * 7", "  5  4 * * *  "])
def test_validate_cron_accepts_five_fields(cron):
    assert validate_cron(cron) == " ".join(cron.split())


@pytest.mark.parametrize("cron, expected", [
    ("", "CRON is not set"),
    ("0 3 * *", "has 4 fields"),
    ("0 0 3 * * 1", "has 6 fields"),
    ("61 * * * *", "bad minute field '61'"),
    ("0 24 * * *", "bad hour field '24'"),
    ("0 0 0 * *", "bad day-of-month field '0'"),
    ("0 0 * 13 *", "bad month field '13'"),
    ("0 0 * * 8", "bad day-of-week field '8'"),
    ("*/0 * * * *", "bad minute field"),
    ("0 0 ? * MON", "bad day-of-month field '?'"),
    ("@daily", "has 1 fields"),
])
def test_validate_cron_rejects_with_a_clear_message(cron, expected):
    with pytest.raises(ConfigError, match="CRON") as err:
        validate_cron(cron)
    assert expected in str(err.value)
    assert 'CRON="0 3 * * 1"' in str(err.value)


def test_kfp_cron_prefixes_seconds():
    assert kfp_cron("0 3 * * 1") == "0 0 3 * * 1"
    assert kfp_cron(" */30  * * * * ") == "0 */30 * * * *"


# --- Vertex AI ----------------------------------------------------------------------------------

def test_schedule_vertex_creates_the_exact_schedule_and_replaces_by_name(vertex, capsys):
    old = vertex.existing_schedule(NAME)
    args = [*VERTEX_ARGS, 'CRON=0 3 * * 1', "SERVICE_ACCOUNT=sa@p.iam.gserviceaccount.com", "finetune_epochs=3"]
    assert sch.main(["create", *args]) == 0
    vertex.init.assert_called_once_with(project="my-project", location="europe-west4", credentials=vertex.credentials)
    vertex.schedule_cls.list.assert_called_once_with(
        filter=f'display_name="{NAME}"', project="my-project", location="europe-west4"
    )
    vertex.job_cls.assert_called_once_with(
        display_name=NAME,
        template_path=mock.ANY,
        pipeline_root="gs://bucket/pipeline-root",
        parameter_values=build_config({**REMOTE_OVERRIDES, "finetune_epochs": "3", "vertex_project": "my-project",
                                       "vertex_region": "europe-west4"}).pipeline_arguments(),
        labels={"app": "catdog", "pipeline": "catdog-training", "trigger": "schedule"},
        enable_caching=False,
        project="my-project",
        location="europe-west4",
    )
    assert executor_images(vertex.templates[0]) == {IMAGE}
    vertex.job.create_schedule.assert_called_once_with(
        display_name=NAME, cron="0 3 * * 1", max_concurrent_run_count=1, max_run_count=None,
        service_account="sa@p.iam.gserviceaccount.com",
    )
    vertex.job.submit.assert_not_called()
    old.delete.assert_called_once_with()
    assert vertex.order == ["create", f"delete {NAME}"]  # the new schedule exists before the old goes
    assert "replacing 1" in capsys.readouterr().out


def test_schedule_vertex_caching_is_off_even_when_asked(vertex):
    assert sch.main(["create", *VERTEX_ARGS, "CRON=0 3 * * *", "CACHE=1", "SCHEDULE_NAME=weekly"]) == 0
    assert vertex.job_cls.call_args.kwargs["enable_caching"] is False
    assert vertex.job.create_schedule.call_args.kwargs["display_name"] == "weekly"


def test_schedule_vertex_bad_cron_fails_before_any_client(vertex, capsys):
    assert sch.main(["create", *VERTEX_ARGS, "CRON=0 3 * *"]) == 2
    assert "CRON='0 3 * *' has 4 fields" in capsys.readouterr().err
    vertex.auth_default.assert_not_called()


def test_schedule_vertex_missing_settings(vertex, capsys):
    assert sch.main(["create", "TARGET=vertex", "CRON=0 3 * * 1", *REMOTE_ARGS]) == 2
    err = capsys.readouterr().err
    assert "PROJECT is not set" in err and "IMAGE is not set" in err
    vertex.init.assert_not_called()


def test_unschedule_vertex_needs_only_project_and_region(vertex, capsys):
    old = vertex.existing_schedule(NAME)
    assert sch.main(["delete", "TARGET=vertex", "PROJECT=my-project", "REGION=europe-west4"]) == 0
    vertex.schedule_cls.list.assert_called_once_with(
        filter=f'display_name="{NAME}"', project="my-project", location="europe-west4"
    )
    old.delete.assert_called_once_with()
    assert f"deleted 1 schedule(s) named {NAME}" in capsys.readouterr().out

    assert sch.main(["delete", "TARGET=vertex", "REGION=europe-west4"]) == 2
    assert "PROJECT is not set" in capsys.readouterr().err


# --- Kubeflow Pipelines -------------------------------------------------------------------------

def test_schedule_kubeflow_creates_the_exact_recurring_run_and_replaces_by_name(kfp_api, capsys):
    kfp_api.client.list_recurring_runs.return_value = SimpleNamespace(
        recurring_runs=[SimpleNamespace(display_name=NAME, recurring_run_id="rr-old"),
                        SimpleNamespace(display_name="someone-else", recurring_run_id="rr-other")],
        next_page_token="",
    )
    args = kubeflow_args(kfp_api.host, "CRON=0 3 * * 1", "EXPERIMENT=retraining", "image_size=224")
    assert sch.main(["create", *args]) == 0
    kfp_api.client_cls.assert_called_once_with(host=kfp_api.host)
    kfp_api.client.create_experiment.assert_called_once_with(name="retraining", namespace=None)
    kfp_api.client.list_recurring_runs.assert_called_once_with(
        page_token="", page_size=100, namespace=None, filter=mock.ANY
    )
    assert NAME in kfp_api.client.list_recurring_runs.call_args.kwargs["filter"]
    kfp_api.client.create_recurring_run.assert_called_once_with(
        experiment_id="exp-1",
        job_name=NAME,
        cron_expression="0 0 3 * * 1",
        max_concurrency=1,
        no_catchup=True,
        params=build_config({**REMOTE_OVERRIDES, "image_size": "224"}).pipeline_arguments(),
        pipeline_package_path=mock.ANY,
        pipeline_root=None,
        enable_caching=False,
        service_account=None,
    )
    assert executor_images(kfp_api.packages[0]) == {IMAGE}
    assert kfp_api.order == ["create", "delete rr-old"]  # rr-other has another name: kept
    assert f"{kfp_api.host}/#/recurringruns/details/rr-new" in capsys.readouterr().out


def test_kfp_name_filter_is_the_v2beta1_equals_predicate():
    import json

    from pipelines.kubeflow import kfp_name_filter

    assert json.loads(kfp_name_filter(NAME)) == {
        "predicates": [{"operation": 1, "key": "display_name", "stringValue": NAME}]
    }


def test_unschedule_kubeflow_walks_every_page(kfp_api, capsys):
    pages = [
        SimpleNamespace(recurring_runs=[SimpleNamespace(display_name=NAME, recurring_run_id="a")], next_page_token="t2"),
        SimpleNamespace(recurring_runs=[SimpleNamespace(display_name=NAME, recurring_run_id="b")], next_page_token=""),
    ]
    kfp_api.client.list_recurring_runs.side_effect = pages
    assert sch.main(["delete", "TARGET=kubeflow", f"KFP_HOST={kfp_api.host}", "KFP_NAMESPACE=team-a"]) == 0
    assert [c.kwargs["page_token"] for c in kfp_api.client.list_recurring_runs.call_args_list] == ["", "t2"]
    assert {c.kwargs["namespace"] for c in kfp_api.client.list_recurring_runs.call_args_list} == {"team-a"}
    assert kfp_api.order == ["delete a", "delete b"]
    assert f"deleted 2 schedule(s) named {NAME}" in capsys.readouterr().out


def test_schedule_kubeflow_unreachable_host_fails_within_seconds(kfp_api, capsys):
    host = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert sch.main(["create", *kubeflow_args(host, "CRON=0 3 * * 1")]) == 2
    assert time.monotonic() - started < 5
    assert "is unreachable" in capsys.readouterr().err
    kfp_api.client_cls.assert_not_called()


# --- local: a crontab line, nothing installed ---------------------------------------------------

def test_schedule_local_prints_a_crontab_line(image_folder, monkeypatch, capsys):
    monkeypatch.chdir(image_folder.parent)
    monkeypatch.setattr(subprocess, "run", mock.Mock(side_effect=AssertionError("installs nothing")))
    args = ["TARGET=local", "CRON=0 3 * * 1", "DATA=data", "augmentations=flip,zoom", "frozen_epochs=-1"]
    with pytest.raises(ConfigError, match="frozen_epochs"):  # an invalid parameter: nothing printed
        sch.create(args)
    args[-1] = "seed=7"
    assert sch.main(["create", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# add this line with `crontab -e`")
    line = out[1]
    assert line.startswith(f"0 3 * * 1 cd {REPO_ROOT} && mkdir -p local_outputs && make run ")
    assert f"DATA={image_folder}" in line  # relative paths made absolute
    assert "augmentations=flip,zoom" in line and "seed=7" in line
    assert "CRON=" not in line and "TARGET=" not in line
    assert line.endswith(f">> local_outputs/retraining.log 2>&1 # {NAME}")


def test_crontab_line_quotes_and_escapes_percent(tmp_path):
    line = crontab_line("0 3 * * *", ["RUN_NAME=a b", "label_map=x%y=cat", "REGISTRY=gs://b/r"], "n",
                            repo=tmp_path)
    assert "'RUN_NAME=a b'" in line and "label_map=x\\%y=cat" in line and "REGISTRY=gs://b/r" in line


def test_schedule_local_missing_data_fails(tmp_path, capsys):
    assert sch.main(["create", "CRON=0 3 * * 1", f"DATA={tmp_path / 'missing'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unschedule_local_only_explains(capsys):
    assert sch.main(["delete", "TARGET=local"]) == 0
    assert f"'# {NAME}'" in capsys.readouterr().out


def test_schedule_usage_and_unknown_settings(capsys):
    assert sch.main([]) == 2
    assert "usage" in capsys.readouterr().err
    assert sch.main(["create", "CRONN=1"]) == 2
    assert "unknown setting CRONN" in capsys.readouterr().err
    assert sch.main(["create", "TARGET=aws", "CRON=0 3 * * 1"]) == 2
    assert "unknown TARGET=aws" in capsys.readouterr().err


def test_make_schedule_passes_a_cron_with_spaces(image_folder):
    """The real Makefile target: CRON's spaces survive $(MAKEOVERRIDES)."""
    env = {**os.environ, "MAKEFLAGS": ""}
    result = subprocess.run(
        ["make", "-s", "schedule", "TARGET=local", "CRON=15 4 * * 1-5", f"DATA={image_folder}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith(f"15 4 * * 1-5 cd {REPO_ROOT} && ")
    assert f"DATA={image_folder}" in result.stdout


def test_kfp_cron_uses_sunday_zero_and_reversed_ranges_fail():
    assert kfp_cron("0 22 * * 7") == "0 0 22 * * 0"
    assert kfp_cron("0 22 * * 1,7") == "0 0 22 * * 1,0"
    with pytest.raises(ConfigError, match="day-of-week"):
        validate_cron("0 3 * * 5-1")


def test_an_api_refusal_is_one_error_line_and_a_failed_replace_says_both_run(vertex, capsys):
    from google.api_core.exceptions import PermissionDenied

    vertex.existing_schedule(NAME).delete.side_effect = PermissionDenied("no aiplatform.schedules.delete")
    args = [*VERTEX_ARGS, "CRON=0 3 * * 1"]
    assert sch.main(["create", *args]) == 2
    err = capsys.readouterr().err
    assert "was created, but deleting the one(s) it replaces failed" in err
    assert "error: the scheduling API refused the request: 403 no aiplatform.schedules.delete" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("target_args", [VERTEX_ARGS, ["TARGET=local"]])
def test_a_schedule_takes_no_run_id(target_args, vertex, tmp_path, capsys):  # noqa: F811
    """Every scheduled run needs an id of its own (the service's run id, or one `make run` makes)."""
    args = [a for a in target_args] + ([f"DATA={tmp_path}"] if target_args[0] == "TARGET=local" else [])
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.jpg").write_bytes(b"x")
    assert sch.main(["create", *args, "CRON=0 3 * * 1", "WEIGHTS=none", "run_id=weekly"]) == 2
    assert "run_id=weekly: every scheduled run gets an id of its own" in capsys.readouterr().err
    vertex.job_cls.assert_not_called()
