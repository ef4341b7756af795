"""TARGET=kubeflow: submit a run to a Kubeflow Pipelines host, and create or delete a recurring run.

    submit_kubeflow(config, s)          `make run TARGET=kubeflow`: one run (WAIT=1: until it ends)
    create_run(client, config, s)       the one create_run_from_pipeline_package call, shared with the
                                        feedback app's KubeflowLauncher (feedback/retraining/launchers/)
    schedule_kubeflow / unschedule_kubeflow   `make schedule` / `make unschedule` TARGET=kubeflow
    kfp_recurring_run_body              the request `schedule_kubeflow` sends, for DRY_RUN=1

The host is probed once, briefly, before kfp.Client is built (its constructor retries for ~25 s);
a login page or a refused token is a SubmitError saying what to pass. An API error (bad spec, no
permission in the namespace) is a SubmitError too (kfp_refusal). Settings: pipelines/remote.py.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from pipelines.config import PipelineConfig
from pipelines.cron import kfp_cron
from pipelines.remote import RemoteRunFailed, RemoteSettings, SubmitError, pipeline_package, replaced_warning

KFP_PROBE_TIMEOUT_S = 3.0
KFP_WAIT_TIMEOUT_S = 7 * 24 * 3600
KFP_EXPERIMENT_ID = "EXPERIMENT_ID"  # placeholder in a dry run's body: `create` looks the experiment up by name


# --- the client ---------------------------------------------------------------------------------

def check_kfp_host(host: str, token: str = "", timeout_s: float = KFP_PROBE_TIMEOUT_S) -> None:
    """Probe the KFP API once, briefly: kfp.Client's constructor retries healthz for ~25 s."""
    import requests

    url = f"{host}/apis/v2beta1/healthz"
    auth = {"headers": {"Authorization": f"Bearer {token}"}} if token else {}
    try:
        response = requests.get(url, timeout=timeout_s, allow_redirects=False, **auth)
    except requests.RequestException as exc:
        raise SubmitError(
            f"KFP_HOST={host} is unreachable ({type(exc).__name__}): check the URL, or port-forward "
            "the API: kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80 and set "
            "KFP_HOST=http://localhost:8080"
        ) from None
    if response.status_code in (301, 302, 303, 307, 308, 401, 403):
        raise SubmitError(
            f"KFP_HOST={host} answered HTTP {response.status_code} at {url}: it needs a login "
            f"(multi-user Kubeflow): {'the KFP_TOKEN given was refused' if token else 'export KFP_TOKEN'}"
            " (a bearer token the API accepts, e.g. `kubectl create token default-editor -n <profile>` "
            "where the cluster authenticates service-account tokens), or run from inside the cluster"
        )
    if response.status_code >= 400:
        raise SubmitError(f"KFP_HOST={host} answered HTTP {response.status_code} at {url}: is it the KFP API?")


@contextlib.contextmanager
def kfp_refusal(what: str) -> Iterator[None]:
    """A KFP API error (bad spec, no permission in the namespace...) as a SubmitError."""
    from kfp_server_api import ApiException

    try:
        yield
    except ApiException as exc:
        raise SubmitError(f"KFP refused {what}: HTTP {exc.status} {exc.reason}: {exc.body}") from None


def kfp_client(s: RemoteSettings):
    check_kfp_host(s.kfp_host, s.kfp_token)
    import kfp

    options = {"namespace": s.kfp_namespace} if s.kfp_namespace else {}
    if s.kfp_token:
        options["existing_token"] = s.kfp_token  # sent as Authorization: Bearer
    return kfp.Client(host=s.kfp_host, **options)


def create_run(client, config: PipelineConfig, s: RemoteSettings) -> tuple[str, str]:
    """Create one KFP run named s.run_name from the compiled pipeline with s.image; (run id, UI URL)."""
    with pipeline_package(s.image, s.train_hardware) as package, kfp_refusal("the run"):
        result = client.create_run_from_pipeline_package(
            pipeline_file=str(package),
            arguments=config.pipeline_arguments(),
            run_name=s.run_name,
            experiment_name=s.experiment,
            namespace=s.kfp_namespace or None,
            pipeline_root=s.pipeline_root or None,
            enable_caching=s.enable_caching,
            service_account=s.service_account or None,
        )
    return result.run_id, f"{s.kfp_host}/#/runs/details/{result.run_id}"


def submit_kubeflow(config: PipelineConfig, s: RemoteSettings) -> str:
    """Create one KFP run; with WAIT, block until it ends. Returns the run's URL in the KFP UI."""
    client = kfp_client(s)
    run_id, url = create_run(client, config, s)
    print(f"submitted {s.run_name} (run id {config.run_id}) to {s.kfp_host}: {url}", flush=True)
    if s.wait:
        run = client.wait_for_run_completion(run_id, timeout=KFP_WAIT_TIMEOUT_S)
        state = str(getattr(run, "state", "")).lower()
        if state != "succeeded":
            raise RemoteRunFailed(f"KFP run {s.run_name} ended {state or 'in an unknown state'} ({url})")
        print(f"run {s.run_name} succeeded")
    return url


# --- schedules: recurring runs ------------------------------------------------------------------

def kfp_name_filter(name: str) -> str:
    """A KFP list filter matching display_name == name (EQUALS is 1 in the v2beta1 API)."""
    return json.dumps({"predicates": [{"operation": 1, "key": "display_name", "stringValue": name}]})


def kfp_recurring_runs_named(client, name: str, namespace: str | None) -> list:
    found, token = [], ""
    while True:
        page = client.list_recurring_runs(page_token=token, page_size=100, namespace=namespace,
                                          filter=kfp_name_filter(name))
        found += [r for r in (page.recurring_runs or []) if r.display_name == name]
        token = page.next_page_token
        if not token:
            return found


def schedule_kubeflow(config: PipelineConfig, s: RemoteSettings, name: str, cron: str):
    """Create the KFP recurring run `name` (replacing any of that name); returns it."""
    client = kfp_client(s)
    namespace = s.kfp_namespace or None
    with kfp_refusal(f"the experiment {s.experiment}"):
        experiment = client.create_experiment(name=s.experiment, namespace=namespace)
        old = kfp_recurring_runs_named(client, name, namespace)
    with pipeline_package(s.image, s.train_hardware) as package, kfp_refusal("the recurring run"):
        recurring = client.create_recurring_run(
            experiment_id=experiment.experiment_id,
            job_name=name,
            cron_expression=kfp_cron(cron),
            max_concurrency=1,
            no_catchup=True,
            params=config.pipeline_arguments(),
            pipeline_package_path=str(package),
            pipeline_root=s.pipeline_root or None,
            enable_caching=False,
            service_account=s.service_account or None,
        )
    with replaced_warning(recurring.recurring_run_id):
        for previous in old:
            client.delete_recurring_run(previous.recurring_run_id)
    print(f"recurring run {name} ({kfp_cron(cron)}) created on {s.kfp_host}"
          f"{f', replacing {len(old)}' if old else ''}: "
          f"{s.kfp_host}/#/recurringruns/details/{recurring.recurring_run_id}")
    return recurring


def unschedule_kubeflow(s: RemoteSettings, name: str) -> int:
    client = kfp_client(s)
    old = kfp_recurring_runs_named(client, name, s.kfp_namespace or None)
    for recurring in old:
        client.delete_recurring_run(recurring.recurring_run_id)
    return len(old)


# --- dry run: the request body, validated against the SDK's own model ---------------------------

def check_kfp_body(body: dict[str, Any]) -> dict[str, Any]:
    """`body` read as a kfp_server_api V2beta1RecurringRun and written back; ValueError names a field
    the model lacks or a value of the wrong type (either would not survive the round trip)."""
    from kfp_server_api import ApiClient, RecurringRunMode

    api = ApiClient()
    again = api.sanitize_for_serialization(
        api.deserialize(SimpleNamespace(data=json.dumps(body)), "V2beta1RecurringRun"))
    bad = sorted(k for k in body if again.get(k) != body[k])
    if body.get("mode") not in (None, *RecurringRunMode.allowable_values):
        bad.append("mode")
    if bad:
        raise ValueError(f"not a valid V2beta1RecurringRun: bad or unknown field(s) {', '.join(bad)}")
    return again



def kfp_pipeline_spec(package: Path, enable_caching: bool = False) -> dict[str, Any]:
    """The pipeline_spec kfp.Client.create_recurring_run sends for `package`: each root-DAG task's
    caching_options.enable_cache set to `enable_caching` (kfp 2.17 `_override_caching_options`)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    first, *rest = yaml.safe_load_all(package.read_text())
    spec = json_format.ParseDict(first, pipeline_spec_pb2.PipelineSpec())
    for task in spec.root.dag.tasks.values():
        task.caching_options.enable_cache = enable_caching
    platform = json_format.ParseDict({k: v for doc in rest for k, v in doc.items()}, pipeline_spec_pb2.PlatformSpec())
    if platform == pipeline_spec_pb2.PlatformSpec():
        return json_format.MessageToDict(spec)
    return {"pipeline_spec": json_format.MessageToDict(spec), "platform_spec": json_format.MessageToDict(platform)}


def kfp_recurring_run_body(config: PipelineConfig, s: RemoteSettings, name: str, cron: str, package: Path,
                           experiment_id: str = KFP_EXPERIMENT_ID) -> dict[str, Any]:
    """The POST /apis/v2beta1/recurringruns body of `schedule_kubeflow` (caching off, one run at a time)."""
    runtime = {"pipeline_root": s.pipeline_root or None, "parameters": config.pipeline_arguments()}
    body = {
        "display_name": name, "pipeline_spec": kfp_pipeline_spec(package),
        "runtime_config": {k: v for k, v in runtime.items() if v is not None},
        "service_account": s.service_account or None, "max_concurrency": "1",
        "trigger": {"cron_schedule": {"cron": kfp_cron(cron)}}, "mode": "ENABLE", "no_catchup": True,
        "experiment_id": experiment_id,
    }
    return check_kfp_body({k: v for k, v in body.items() if v is not None})
