"""What `make image-test` (container_tests/image_test.py) relies on, checked without building an image: the
Dockerfiles' build arguments (PYTHON_IMAGE, WHEELHOUSE) and what they expand to in a plain and in a
wheelhouse build, the wheelhouse folder and the .dockerignores, the KFP launcher command it runs in
the component image (run here on the host, from compiled/training_pipeline.yaml), the podman
settings, the make target and CI. The builds and runs themselves are `make image-test` (in
.ci/run); the one test here that needs podman is marked needs_podman (a skip fails under CI=true).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from container_tests import build, common, component_run, image_test
from tests.container_tests.test_images import instructions, let_through, make
from tests.helpers import REPO_ROOT

BUILT = {"components": REPO_ROOT / "components" / "Dockerfile", "serving": REPO_ROOT / "serving" / "Dockerfile",
         "feedback": REPO_ROOT / "feedback" / "Dockerfile"}
WHEELHOUSE_MOUNT = "--mount=type=bind,source=${WHEELHOUSE:-container_tests/wheelhouse},target=/tmp/wheelhouse"
WHEELHOUSE_OPTIONS = "${WHEELHOUSE:+--no-index --find-links /tmp/wheelhouse}"


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """The instructions before the first FROM, then one list per stage (its FROM first)."""
    result: list[list[tuple[str, str]]] = [[]]
    for step in instructions(dockerfile):
        if step[0] == "FROM":
            result.append([])
        result[-1].append(step)
    return result


def pip_step(dockerfile: Path) -> str:
    (run,) = [rest for kind, rest in instructions(dockerfile) if kind == "RUN" and "pip install" in rest]
    return run


@pytest.mark.parametrize("name", BUILT)
def test_dockerfile_takes_the_base_image_and_a_wheelhouse_as_build_arguments(name):
    preamble, build, final = stages(BUILT[name])
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm") in preamble  # the default base is unchanged
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build") and final[0] == ("FROM", "${PYTHON_IMAGE}")
    assert ("ARG", "WHEELHOUSE=") in build  # empty by default: a plain build uses the package index
    run = pip_step(BUILT[name])
    assert run.startswith(WHEELHOUSE_MOUNT + " ")  # mounted for the pip step only, never copied in
    assert f"/opt/venv/bin/pip install --no-compile {WHEELHOUSE_OPTIONS} " in run
    # python3, not python: a Debian base (make image-test's) has no `python` command
    assert "python3 -m venv /opt/venv" in run and not re.search(r"(^|&& )python ", run)
    assert "__pycache__" in run  # why --no-compile changes nothing in the image


def expand(words: str, wheelhouse: str) -> list[str]:
    """The words after the shell's expansion, with WHEELHOUSE set as a build argument sets it."""
    script = f'set -f; for word in {words}; do printf "%s\\n" "$word"; done'
    result = subprocess.run(["sh", "-c", script], env={"PATH": os.environ["PATH"], "WHEELHOUSE": wheelhouse},
                            capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


@pytest.mark.parametrize("name", BUILT)
def test_a_plain_build_uses_the_index_and_a_wheelhouse_build_the_wheels_alone(name):
    run = pip_step(BUILT[name])
    (install,) = re.findall(r"/opt/venv/bin/pip install (.*?) &&", run)
    plain, offline = expand(install, ""), expand(install, "container_tests/wheelhouse")
    assert "--no-index" not in plain and "--find-links" not in plain and "-c" in plain
    assert offline[:4] == ["--no-compile", "--no-index", "--find-links", "/tmp/wheelhouse"]
    assert offline[4:] == plain[1:]  # the same requirements and constraints either way


def test_the_wheelhouse_folder_exists_and_keeps_its_wheels_out_of_git():
    folder = REPO_ROOT / "container_tests" / "wheelhouse"
    assert folder.is_dir()  # the pip step mounts it in every build, plain ones too
    rules = [line.strip() for line in (folder / ".gitignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules == ["*", "!.gitignore"]


@pytest.mark.parametrize("name", BUILT)
def test_dockerignore_lets_the_wheelhouse_through_and_nothing_else_of_images(name):
    dockerignore = BUILT[name].with_name("Dockerfile.dockerignore")
    assert let_through(dockerignore, "container_tests/wheelhouse/")
    assert let_through(dockerignore, "container_tests/wheelhouse/tensorflow_cpu-2.21.0-cp311-cp311-linux.whl")
    assert not let_through(dockerignore, "container_tests/image_test.py")
    assert not let_through(dockerignore, "container_tests/containers.conf")


def test_the_wheelhouse_covers_both_images():
    lock = {re.split(r"[=<>\[ ]", line, maxsplit=1)[0].lower().replace("_", "-")
            for line in (REPO_ROOT / "requirements.lock").read_text().splitlines() if "==" in line}
    serving = build.serving_packages()
    assert {"kserve", "onnxruntime", "google-cloud-storage"} <= set(serving)
    assert set(serving) <= lock  # so `pip wheel -c requirements.lock` pins every one
    runtime = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert set(runtime) | set(serving) == set(build.runtime_requirements())


def test_the_feedback_image_installs_locked_packages_only():
    """Its pip list is constrained by the lock; the wheelhouse (pyproject's runtime set) must hold them."""
    install = re.search(r"-c /tmp/requirements\.lock (.*?) &&", pip_step(BUILT["feedback"])).group(1)
    names = {re.split(r"[\[=<>]", word.strip('"'))[0].lower() for word in install.split()}
    lock = {line.split("==")[0].lower() for line in (REPO_ROOT / "requirements.lock").read_text().splitlines()
            if "==" in line}
    assert {"fastapi", "uvicorn", "alembic", "kfp"} <= names and names <= lock, names - lock


def test_launcher_command_is_the_compiled_executor_with_its_placeholders_filled(tmp_path):
    image, command, executor_input = component_run.launcher_command("ingest", {"data_uri": "/data/photos"},
                                                                 str(tmp_path))
    assert image == "catdog-components:0.1.0"
    assert command[:2] == ["sh", "-ec"] and "python3 -m kfp.dsl.executor_main" in command[2]
    assert command[-2:] == ["--function_to_execute", "ingest"]
    passed = json.loads(command[command.index("--executor_input") + 1])
    assert passed == executor_input
    values = passed["inputs"]["parameterValues"]
    assert values["data_uri"] == "/data/photos" and values["feedback_uri"] == ""
    assert values["min_image_side"] == 32 and isinstance(values["min_image_side"], int)  # the pipeline's defaults
    for artifact in ("dataset", "report", "report_json"):
        assert passed["outputs"]["artifacts"][artifact]["artifacts"][0]["uri"].startswith(str(tmp_path) + "/")
    assert passed["outputs"]["outputFile"].startswith(str(tmp_path) + "/")
    assert not any("{{$" in word for word in command)


def test_launcher_command_refuses_a_parameter_the_component_lacks(tmp_path):
    with pytest.raises(ValueError, match="no parameters"):
        component_run.launcher_command("ingest", {"data_uri": "x", "epochs": 3}, str(tmp_path))


def test_launcher_command_runs_ingest_here_as_in_the_container(tmp_path):
    """The same command image-test runs in the component image, with this environment's python3."""
    data = component_run.synthetic_dataset(tmp_path / "data")
    _, command, executor_input = component_run.launcher_command("ingest", {"data_uri": str(data)},
                                                             str(tmp_path / "root"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "kept 16 images" in result.stdout
    written = json.loads(Path(executor_input["outputs"]["outputFile"]).read_text())
    metadata = written["artifacts"]["dataset"]["artifacts"][0]["metadata"]
    assert metadata["n_images"] == 16 and metadata["n_skipped"] == 2


def test_apt_mirror_is_read_from_deb822_and_one_line_sources(tmp_path):
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\n"
                      "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n")
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n")
    security_only = tmp_path / "security.list"
    security_only.write_text("deb http://security.example/debian-security bookworm-security main\n")
    assert build.apt_mirror([deb822]) == "http://mirror.example/debian"
    assert build.apt_mirror([security_only, one_line]) == "http://other.example/debian"
    assert build.apt_mirror([tmp_path / "missing.list", security_only]) == common.DEFAULT_MIRROR


def test_podman_settings():
    conf = tomllib.loads((REPO_ROOT / "container_tests" / "containers.conf").read_text())
    assert conf["containers"]["default_ulimits"] == []
    assert conf["engine"]["runtime"] == "runc"


def test_unknown_parts_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        image_test.main(["ingest"])
    assert exit_info.value.code == 2
    assert "any of predictor, components, feedback" in capsys.readouterr().err


def test_make_image_test_runs_the_script():
    out = make("-n", "image-test").stdout
    assert re.search(r"^IMAGE_CACHE=\S+ IMAGE_STORAGE_DRIVER=auto \.venv/bin/python container_tests/image_test\.py "
                     r"predictor components feedback$", out, re.MULTILINE), out
    out = make("-n", "image-test", "IMAGE_TEST=predictor").stdout  # (under make test: make[1] lines too)
    assert re.search(r"container_tests/image_test\.py predictor$", out, re.MULTILINE), out
    help_text = re.sub(r"\x1b\[[0-9;]*m", "", make("-s", "help").stdout)
    assert re.search(r"^\s+image-test\s+\S", help_text, re.MULTILINE)


def test_ci_installs_podman_runs_image_test_and_times_each_part():
    script = (REPO_ROOT / ".ci" / "run").read_text()
    packages = re.search(r"^for pkg in (.*); do$", script, re.MULTILINE).group(1).split()
    assert {"podman", "runc", "debootstrap"} <= set(packages)
    commands = [line.strip() for line in script.splitlines()]
    assert commands.index("make test") < commands.index('"${sudo[@]}" make image-test')
    parts = re.findall(r'^start_part "([^"]+)"$', script, re.MULTILINE)
    assert parts[:3] == ["system packages", "make install", "make test"] and parts[-1] == "make image-test"
    assert "trap report_times EXIT" in script


def minimal_rootfs(root: Path) -> Path:
    """/bin/sh (the host's dash) and the libraries it links: enough for `podman run --rootfs`."""
    shell = Path(shutil.which("dash") or "/bin/sh").resolve()
    (root / "bin").mkdir(parents=True)
    shutil.copy(shell, root / "bin" / "sh")
    ldd = subprocess.run(["ldd", str(shell)], check=True, capture_output=True, text=True).stdout
    libraries = re.findall(r"(/\S+) \(0x", ldd)
    for library in libraries:
        target = root / library.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(library, target)
    return root


@pytest.mark.needs_podman
def test_podman_runs_a_container_with_these_settings(tmp_path, request):
    """runc, no ulimits, host network, a read-only mount and uid 10001, as image-test runs the images."""
    missing = [tool for tool in ("podman", "runc", "ldd") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install podman runc debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("make image-test's podman settings are for root")
    podman = build.Podman(tmp_path, "vfs")
    podman.runroot = Path(tempfile.mkdtemp(prefix="podman-", dir="/tmp"))  # under 50 characters
    request.addfinalizer(lambda: shutil.rmtree(podman.runroot, ignore_errors=True))
    models = tmp_path / "models"
    models.mkdir()
    (models / "model.txt").write_text("a model\n")
    script = ('read m < /mnt/models/model.txt; echo "$m"; '
              'while read key value rest; do [ "$key" = Uid: ] && echo "uid $value"; done < /proc/self/status; '
              '(echo x > /mnt/models/new) 2>/dev/null && echo writable || echo read-only')
    result = podman("run", "--rm", "--network", "host", "--user", "10001:10001", "-v", f"{models}:/mnt/models:ro",
                    "--rootfs", str(minimal_rootfs(tmp_path / "rootfs")), "/bin/sh", "-c", script, timeout=120)
    assert result.stdout.splitlines() == ["a model", "uid 10001", "read-only"], result.stderr
