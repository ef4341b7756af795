"""One contract for a run's result: a run's id is recorded with its champion decision in the registry's
history (local folder and gs://), and "the decision of run X" is read back by that id.

Covered elsewhere: the launchers (tests/feedback/retraining/test_remote_runs.py: two overlapping KFP and Vertex
runs; tests/feedback/retraining/test_runs.py: a local run), `make run TARGET=vertex|kubeflow WAIT=1`
(tests/pipelines/test_submit.py), the whole pipeline (tests/pipelines/test_pipeline_twice.py: ids given and made by
make run; tests/pipelines/test_local_pipeline.py: no id, the service's; tests/pipelines/test_gcs_pipeline.py: gs://).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from catdog import storage
from catdog.registry import ModelRegistry, RegistryError, decision_of_run, no_decision_reason
from pipelines import local, run, words
from pipelines.config import ConfigError, build_config


def decision(run_id: str | None, version: int, promoted: bool = True) -> dict:
    return {"run_id": run_id, "promoted": promoted, "challenger_version": version, "champion_version": version,
            "registry_uri": "r", "reason": f"v{version} {'wins' if promoted else 'loses'}"}


def check_history_by_run_id(registry: ModelRegistry) -> None:
    """Two overlapping runs and an old record: each run's decision is found by its id, nothing else."""
    registry.record_decision({"challenger_version": 1, "promoted": True})  # from before run ids
    first = registry.record_decision(decision("run-a", 2))
    second = registry.record_decision(decision("run-b", 3, promoted=False))
    assert first.endswith("-v2.run-run-a.json") and second.endswith("-v3.run-run-b.json")
    assert registry.decision_of_run("run-a") == {**decision("run-a", 2), "history_record": first}
    assert registry.decision_of_run("run-b") == {**decision("run-b", 3, promoted=False), "history_record": second}
    assert registry.decision_of_run("run") is None and registry.decision_of_run("run-c") is None
    assert len(registry.history()) == 3  # the dashboard still reads every record
    again = registry.record_decision(decision("run-a", 4))  # a retried step: its latest decision counts
    assert decision_of_run(registry.uri, "run-a")["history_record"] == again


def test_history_by_run_id_in_a_local_registry(tmp_path):
    check_history_by_run_id(ModelRegistry(tmp_path / "registry"))
    assert ModelRegistry(tmp_path / "empty").decision_of_run("run-a") is None


def test_history_by_run_id_in_a_gcs_registry(gcs):
    registry = ModelRegistry(gcs.uri("registry"))
    assert registry.decision_of_run("run-a") is None  # no history yet
    check_history_by_run_id(registry)
    assert all(u.startswith(gcs.uri("registry", "history")) for u in storage.list_files(gcs.uri("registry")))


def test_a_record_named_for_a_run_but_holding_another_is_not_its_decision(tmp_path):
    registry = ModelRegistry(tmp_path / "registry")
    uri = registry.record_decision(decision("run-a", 2))
    Path(uri).write_text(json.dumps(decision("run-z", 2)))  # a hand-edited or copied record
    assert registry.decision_of_run("run-a") is None


@pytest.mark.parametrize("bad", ["", "a b", "../x", "a/b", "-a", "{{$.pipeline_job_uuid}}", "x" * 129])
def test_unusable_run_ids_are_refused(tmp_path, bad):
    registry = ModelRegistry(tmp_path / "registry")
    with pytest.raises(RegistryError, match="letters, digits"):
        registry.record_decision(decision(bad, 1))
    with pytest.raises(RegistryError, match="letters, digits"):
        registry.decision_of_run(bad)
    assert registry.history() == []
    if bad:
        with pytest.raises(ConfigError, match="run_id: .*letters, digits"):
            build_config({"run_id": bad})


def test_no_decision_reason_names_the_run_and_the_registry():
    assert no_decision_reason("abc", "gs://b/r") == "the run finished but recorded no champion decision for run abc in gs://b/r"


# -- select-champion ------------------------------------------------------------------------------

def test_select_champion_records_the_run_id_with_its_decision(tmp_path):
    from catdog.champion import decision_markdown, select_champion
    from tests.serving_fixtures import tiny_model_dir

    registry = ModelRegistry(tmp_path / "registry")
    metrics = {"accuracy": 0.9, "precision": 0.9, "recall": 0.9, "f1": 0.9, "auc": 0.9, "n": 4,
               "class_names": ["cat", "dog"]}
    job = {"id": "12345678", "name": "catdog-training-20260301"}
    result = select_champion(registry, tiny_model_dir(), metrics, [], "accuracy", 0.0, run_id="run-1", pipeline_job=job)
    assert (result["run_id"], result["pipeline_job"]) == ("run-1", job)
    assert registry.decision_of_run("run-1") == result
    assert "Run `run-1`." in decision_markdown(result)
    with pytest.raises(RegistryError):  # refused before anything is registered
        select_champion(registry, tiny_model_dir(), metrics, [], "accuracy", 0.0, run_id="no good")
    assert registry.versions() == [1]


def test_select_champion_step_refuses_an_unresolved_job_id_before_anything(tmp_path):
    """run_id '' and a service that left {{$.pipeline_job_uuid}} as it is: no usable id, one clear error."""
    from components.select_champion import select_champion

    nothing = SimpleNamespace(path=str(tmp_path / "missing"), metadata={})
    with pytest.raises(ValueError, match=r"did not resolve \{\{\$.pipeline_job_uuid\}\}: pass run_id=<id>"):
        select_champion.python_func(
            challenger=nothing, evaluation=nothing, ingested=nothing, dataset=nothing, suspects=nothing,
            registry_uri=str(tmp_path / "registry"), champion_metric="accuracy", champion_margin=0.0,
            run_id="", pipeline_job_id="{{$.pipeline_job_uuid}}", pipeline_job_name="{{$.pipeline_job_name}}",
            decision=nothing, decision_json=nothing)
    assert not (tmp_path / "registry").exists()


def select_champion_inputs(spec: dict) -> dict:
    (task,) = [t for name, t in spec["root"]["dag"]["tasks"].items() if name == "select-champion"]
    return task["inputs"]["parameters"]


def test_the_compiled_pipeline_and_the_schedules_pass_the_run_id_and_the_services_job_id():
    from pipelines.schedule import SPECS_DIR
    from pipelines.remote import PIPELINE_YAML

    compiled = yaml.safe_load(PIPELINE_YAML.read_text())
    assert compiled["root"]["inputDefinitions"]["parameters"]["run_id"]["defaultValue"] == ""
    vertex = yaml.safe_load((SPECS_DIR / "vertex-schedule.yaml").read_text())
    kfp = yaml.safe_load((SPECS_DIR / "kfp-recurring-run.yaml").read_text())
    job = vertex["createPipelineJobRequest"]["pipelineJob"]
    assert job["runtimeConfig"]["parameterValues"]["run_id"] == kfp["runtime_config"]["parameters"]["run_id"] == ""
    for spec in (compiled, job["pipelineSpec"], kfp["pipeline_spec"]):
        inputs = select_champion_inputs(spec)
        assert inputs["run_id"] == {"componentInputParameter": "run_id"}
        assert inputs["pipeline_job_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
        assert inputs["pipeline_job_name"] == {"runtimeValue": {"constant": "{{$.pipeline_job_name}}"}}


# -- make run (TARGET=local) --------------------------------------------------------------------------

def fake_run(record: dict | None):
    """A stand-in for run_local: a run folder, and (unless None) select-champion's record for the run."""
    def run_local(config, output_root, progress, errors):
        progress.emit("run", steps=["select-champion"])
        if record is not None:
            ModelRegistry(config.registry_uri).record_decision({**record, "registry_uri": config.registry_uri})
        (output_root / "catdog-training-1").mkdir(parents=True)
        return output_root / "catdog-training-1"
    return run_local


def make_run(tmp_path, image_folder, *words: str) -> list[str]:
    return [f"DATA={image_folder}", "WEIGHTS=none", f"OUTPUT_ROOT={tmp_path / 'out'}",
            f"REGISTRY={tmp_path / 'registry'}", f"PROGRESS_FILE={tmp_path / 'progress.jsonl'}", *words]


def test_make_run_reads_its_own_decision_by_the_id_it_made(tmp_path, image_folder, monkeypatch, capsys):
    from catdog.progress import read_events

    ModelRegistry(tmp_path / "registry").record_decision(decision("another-run", 7))
    made = []
    real = fake_run(None)

    def run_local(config, output_root, progress, errors):
        made.append(config.run_id)
        ModelRegistry(config.registry_uri).record_decision({**decision(config.run_id, 8, promoted=False),
                                                            "registry_uri": config.registry_uri})
        return real(config, output_root, progress, errors)

    monkeypatch.setattr(local, "run_local", run_local)
    assert run.main(make_run(tmp_path, image_folder)) == 0
    [run_id] = made
    out = capsys.readouterr().out
    assert out.startswith(f"run id: {run_id}\n") and len(run_id) == 32
    assert f"challenger v8 not promoted: v8 loses\nchampion: v8 in {tmp_path / 'registry'}" in out
    end = read_events(tmp_path / "progress.jsonl")[-1]
    assert (end["status"], end["run_id"], end["decision"]["challenger_version"]) == ("succeeded", run_id, 8)


def test_make_run_that_finished_without_a_decision_says_so(tmp_path, image_folder, monkeypatch, capsys):
    from catdog.progress import read_events

    monkeypatch.setattr(local, "run_local", fake_run(decision("another-run", 2)))
    assert run.main(make_run(tmp_path, image_folder, "run_id=mine-1")) == 0
    reason = f"the run finished but recorded no champion decision for run mine-1 in {tmp_path / 'registry'}"
    assert capsys.readouterr().out.rstrip().endswith(reason)
    end = read_events(tmp_path / "progress.jsonl")[-1]
    assert (end["status"], end["run_id"], end["decision"]) == ("succeeded", "mine-1", None)


def test_result_file_is_gone():
    with pytest.raises(ConfigError, match="unknown setting RESULT_FILE"):
        words.parse_arguments(["RESULT_FILE=x.json"])
