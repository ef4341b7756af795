"""`make run RUNNER=container` (pipelines/container_run.py) without running the pipeline: what is
mounted, the image tag's source hash, the errors a user can make (each before any step, naming what
to do), that the compiled YAML with IMAGE is what kfp.local runs and with which DockerRunner
settings, and (needs_podman) podman's Docker API service running a container the way DockerRunner
does. The whole pipeline in the component image runs in `make image-test` (container_tests/pipeline_run.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from pipelines import container_run, run
from pipelines.config import build_config
from pipelines.container_run import ContainerRunError, Mount
from tests.helpers import REPO_ROOT



def config_for(tmp_path: Path, **overrides):
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True, exist_ok=True)
    (data / "cat" / "a.jpg").write_bytes(b"x")
    values = {"data_uri": str(data), "registry_uri": str(tmp_path / "registry"), **overrides}
    return build_config(values)


def test_local_paths_are_mounted_at_their_paths_inputs_read_only(tmp_path):
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"h5")
    (tmp_path / "feedback").mkdir()
    config = config_for(tmp_path, weights=str(weights), feedback_uri=str(tmp_path / "feedback"))
    mounts = container_run.planned_mounts(config, tmp_path / "out")
    assert set(mounts) == {Mount(str(tmp_path / "out"), False), Mount(str(tmp_path / "data"), True),
                           Mount(str(tmp_path / "registry"), False), Mount(str(weights), True),
                           Mount(str(tmp_path / "feedback"), True)}


def test_gcs_paths_are_not_mounted_and_a_path_inside_a_writable_mount_is_left_to_it(tmp_path):
    config = config_for(tmp_path, data_uri="gs://b/data", registry_uri=str(tmp_path / "out" / "registry"),
                        feedback_uri=str(tmp_path / "no-feedback-yet"))
    assert container_run.planned_mounts(config, tmp_path / "out") == [Mount(str(tmp_path / "out"), False)]


def test_an_archive_url_is_read_from_the_download_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CATDOG_CACHE", str(tmp_path / "cache"))
    config = config_for(tmp_path, data_uri="https://example.com/photos.zip")
    assert Mount(str(tmp_path / "cache"), True) in container_run.planned_mounts(config, tmp_path / "out")


@pytest.mark.parametrize("name, problem", [("a:b", "cannot be bind mounted"), ("missing", "does not exist")])
def test_a_path_that_cannot_be_mounted_is_refused(tmp_path, name, problem):
    path = tmp_path / name
    if name != "missing":
        path.mkdir()
    with pytest.raises(ContainerRunError, match=problem):
        container_run.check_mounts([Mount(str(path), True)], container_run.default_user())


def test_gcs_credentials_file_is_mounted_and_the_emulator_passed_through(tmp_path, monkeypatch):
    key = tmp_path / "key.json"
    key.write_text("{}")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    env, mounts = container_run.credentials(config_for(tmp_path, registry_uri="gs://b/registry"))
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == str(key) and mounts == [Mount(str(key), True)]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    env, mounts = container_run.credentials(config_for(tmp_path, registry_uri="gs://b/registry"))
    assert env["STORAGE_EMULATOR_HOST"] == "http://127.0.0.1:9" and mounts == []


def test_the_image_tag_follows_the_files_the_dockerfile_copies(tmp_path):
    assert container_run.copied_paths() == ["requirements.lock", "pyproject.toml", "catdog/", "components/",
                                            "pipelines/", "manifests/"]
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "code.py").write_text("a = 1\n")
    (tmp_path / "other.txt").write_text("not copied")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM x AS build\nCOPY --from=build /opt /opt\nCOPY --chown=root:root pkg/ /app/pkg/\n")
    first = container_run.source_hash(dockerfile, tmp_path)
    (tmp_path / "other.txt").write_text("changed, not copied")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "code.cpython-311.pyc").write_bytes(b"cache")
    assert container_run.source_hash(dockerfile, tmp_path) == first
    (tmp_path / "pkg" / "code.py").write_text("a = 2\n")
    assert container_run.source_hash(dockerfile, tmp_path) != first


@pytest.mark.parametrize("host, image, problem", [
    ("tcp://10.0.0.1:2375", "img", "must run on this machine"),
    ("unix:///nonexistent/docker.sock", "img", "no Docker engine answers"),
    ("unix:///nonexistent/docker.sock", "", "give IMAGE="),
])
def test_engine_errors_name_what_to_do(monkeypatch, host, image, problem):
    monkeypatch.setenv("DOCKER_HOST", host)
    with pytest.raises(ContainerRunError, match=problem), container_run.engine({"IMAGE": image}):
        pass


def test_no_docker_and_no_podman_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(container_run, "DOCKER_SOCKET", tmp_path / "no-docker.sock")
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman, no runc
    with pytest.raises(ContainerRunError, match="apt-get install podman runc"), container_run.engine({"IMAGE": "x"}):
        pass


def test_make_run_fails_before_any_step_on_a_users_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    data = config_for(tmp_path).data_uri
    out = tmp_path / "out"
    code = run.main(["RUNNER=container", "IMAGE=catdog-components:x", f"DATA={data}", f"OUTPUT_ROOT={out}",
                     f"REGISTRY={tmp_path / 'registry'}"])
    assert code == 2 and "no Docker engine answers" in capsys.readouterr().err
    assert not out.exists() or [p.name for p in out.iterdir()] in ([], ["logs"])  # no step ran
    assert run.main(["RUNNER=docker", f"DATA={data}"]) == 2
    assert "RUNNER=docker: choose subprocess or container" in capsys.readouterr().err
    assert run.main(["RUNNER=container", "TARGET=vertex"]) == 2


def test_the_compiled_yaml_runs_with_the_image_under_a_docker_runner(tmp_path, monkeypatch):
    """What run_pipeline hands kfp: the compiled pipeline with IMAGE in every executor, the
    DockerRunner's settings (user, group 0, host network, mounts, environment), the pipeline root."""
    import contextlib

    from kfp import components, local

    seen = {}

    @contextlib.contextmanager
    def fake_engine(settings):
        yield "unix:///fake.sock", settings["IMAGE"]

    def load(path):
        seen["spec"] = yaml.safe_load(Path(path).read_text())

        def pipeline(**arguments):
            seen["arguments"], seen["docker_host"] = arguments, os.environ["DOCKER_HOST"]
            (tmp_path / "out" / "catdog-training-run").mkdir()
        return pipeline

    monkeypatch.setattr(container_run, "engine", fake_engine)
    monkeypatch.setattr(components, "load_component_from_file", load)
    monkeypatch.setattr(local, "init", lambda runner, pipeline_root: seen.update(runner=runner, root=pipeline_root))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    config = config_for(tmp_path)
    run_dir = container_run.run_pipeline(config, {"IMAGE": "localhost/catdog-components:t"}, tmp_path / "out",
                                         user="10001:0")
    assert run_dir == tmp_path / "out" / "catdog-training-run"
    executors = seen["spec"]["deploymentSpec"]["executors"]
    assert len(executors) == 7 and {e["container"]["image"] for e in executors.values()} == {
        "localhost/catdog-components:t"}
    assert seen["spec"]["root"] == yaml.safe_load((REPO_ROOT / "compiled" / "training_pipeline.yaml").read_text())["root"]
    assert seen["arguments"] == config.pipeline_arguments() and seen["root"] == str(tmp_path / "out")
    assert seen["docker_host"] == "unix:///fake.sock" and "DOCKER_HOST" not in os.environ
    args = seen["runner"].container_run_args
    assert args["user"] == "10001:0" and args["group_add"] == ["0"] and args["network_mode"] == "host"
    assert args["environment"] == {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}
    assert {(m["Source"], m["Target"], m["ReadOnly"]) for m in args["mounts"]} == {
        (config.data_uri, config.data_uri, True), (config.registry_uri, config.registry_uri, False)}
    assert Path(config.registry_uri).is_dir()  # made here, so the mount has a source


@pytest.mark.needs_podman
def test_podmans_docker_api_runs_a_container_as_docker_runner_does(tmp_path, request):
    """The service on its own socket, the docker SDK, kfp's run_docker_container with the pipeline
    root as a volume, a read-only bind mount, uid 10001 in group 0, the environment; stopped after."""
    from docker.types import Mount as DockerMount
    from kfp.local.docker_task_handler import run_docker_container

    from container_tests.build import Podman
    from tests.container_tests.test_images_build import minimal_rootfs

    missing = [tool for tool in ("podman", "runc", "ldd") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install podman runc debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("make image-test's podman settings are for root")
    import docker

    podman = Podman(tmp_path / "store", "vfs")
    podman.runroot = Path(tempfile.mkdtemp(prefix="podman-", dir="/tmp"))  # under 50 characters
    request.addfinalizer(lambda: shutil.rmtree(podman.runroot, ignore_errors=True))
    rootfs = minimal_rootfs(tmp_path / "rootfs")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tmp_path / "rootfs.tar"), "."], check=True)
    podman("import", str(tmp_path / "rootfs.tar"), "localhost/catdog-sh:test")
    data, root = tmp_path / "data", tmp_path / "root"
    data.mkdir()
    (data / "photo.txt").write_text("a photo\n")
    root.mkdir(mode=0o777)
    root.chmod(0o777)
    # the sleep: a container that exits before its log stream attaches can leave podman 4.3's
    # compat logs stream open for good (seen once under load); a real step runs for seconds
    script = (f'sleep 2; read p < {data}/photo.txt; echo "$p $WHO" > {root}/out.txt; '
              f'(echo x > {data}/new) 2>/dev/null && echo writable || echo read-only')
    with container_run.podman_service(podman) as url:
        client = docker.DockerClient(base_url=url)
        # the docker SDK reads a log stream without a timeout: should the stream stick, stopping the
        # service after 2 minutes ends it, and the test fails instead of hanging the suite
        watchdog = threading.Timer(120, subprocess.run, args=(["pkill", "-f", url.removeprefix("unix://")],))
        watchdog.start()
        try:
            code = run_docker_container(client, "localhost/catdog-sh:test", ["/bin/sh", "-c", script],
                                        {str(root): {"bind": str(root), "mode": "rw"}}, user="10001:0",
                                        group_add=["0"], network_mode="host", environment={"WHO": "10001"},
                                        mounts=[DockerMount(str(data), str(data), type="bind", read_only=True)])
        finally:
            watchdog.cancel()
        client.close()
    assert code == 0
    assert (root / "out.txt").read_text() == "a photo 10001\n" and (root / "out.txt").stat().st_uid == 10001
    assert not (data / "new").exists()
    assert not Path(url.removeprefix("unix://")).exists()  # stopped and cleaned up
