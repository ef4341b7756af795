"""The three Dockerfiles (components, serving, feedback) and `make images`, checked without Docker: base
image, non-root user, every COPY source present in the repo and let through its .dockerignore.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess

import pytest
import yaml

from components import BASE_IMAGE
from pipelines.compile import PIPELINE_YAML
from tests.helpers import REPO_ROOT

DOCKERFILES = [REPO_ROOT / "components" / "Dockerfile", REPO_ROOT / "serving" / "Dockerfile",
               REPO_ROOT / "feedback" / "Dockerfile"]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, result = "", []
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") and not joined:
            continue
        if line.endswith("\\"):
            joined += line[:-1] + " "
            continue
        text, joined = (joined + line).strip(), ""
        if text:
            keyword, _, rest = text.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def build_args(steps: list[tuple[str, str]]) -> dict[str, str]:
    return dict(rest.split("=", 1) for kind, rest in steps if kind == "ARG" and "=" in rest)


def copy_sources(steps: list[tuple[str, str]]) -> list[str]:
    """Sources of COPY from the build context (not --from=<stage>)."""
    sources = []
    for kind, rest in steps:
        if kind != "COPY":
            continue
        words = rest.split()
        if any(w.startswith("--from=") for w in words):
            continue
        sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def let_through(dockerignore: Path, source: str) -> bool:
    """True when the last matching .dockerignore rule for `source` is an exception (!)."""
    allowed = True
    for rule in dockerignore.read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(source.rstrip("/"), pattern) or source.startswith(pattern + "/"):
            allowed = negate
    return allowed


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_base_user_and_copies(dockerfile):
    assert dockerfile.is_file()
    steps = instructions(dockerfile)
    args = build_args(steps)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0]) for k, rest in steps if k == "FROM"]
    assert bases and all(b.startswith("python:3.11-slim") for b in bases), bases
    users = [rest for kind, rest in steps if kind == "USER"]
    assert users, "the image must drop root"
    final_user = users[-1].split(":")[0]
    assert final_user not in ("root", "0")
    assert [k for k, _ in steps].index("USER") > max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    dockerignore = dockerfile.with_name("Dockerfile.dockerignore")
    assert dockerignore.is_file()
    for source in copy_sources(steps):
        assert (REPO_ROOT / source).exists(), f"{dockerfile}: COPY {source} is not in the repo"
        assert let_through(dockerignore, source), f"{dockerignore.name} excludes {source}"


def test_components_image_holds_the_code_the_components_import():
    steps = instructions(DOCKERFILES[0])
    sources = copy_sources(steps)
    for package in ("catdog/", "components/", "pipelines/", "manifests/", "requirements.lock", "pyproject.toml"):
        assert package in sources
    env = " ".join(rest for kind, rest in steps if kind == "ENV")
    assert "PYTHONPATH=/app" in env and "PATH=/opt/venv/bin:$PATH" in env
    run = " ".join(rest for kind, rest in steps if kind == "RUN")
    assert "-c /tmp/build/requirements.lock" in run  # pinned by the lock
    assert "pip install" in run and "pytest" not in run


def test_compiled_pipeline_uses_the_placeholder_image():
    spec = yaml.safe_load(PIPELINE_YAML.read_text())
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {BASE_IMAGE}


def make(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGE_REGISTRY", "IMAGE_TAG")}
    env["MAKEFLAGS"] = ""
    return subprocess.run(["make", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env)


def test_make_images_needs_a_registry():
    result = make("-s", "images", "IMAGE_REGISTRY=")  # the command line beats an exported IMAGE_REGISTRY
    assert result.returncode != 0
    assert "set IMAGE_REGISTRY=" in result.stderr
    assert "docker build" not in result.stdout


def test_make_images_builds_and_pushes_all_three_images():
    result = make("-n", "images", "IMAGE_REGISTRY=europe-docker.pkg.dev/p/r", "IMAGE_TAG=abc1234")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    components, predictor, feedback = (f"europe-docker.pkg.dev/p/r/catdog-{name}:abc1234"
                                       for name in ("components", "predictor", "feedback"))
    assert f"-f components/Dockerfile -t {components} ." in out
    assert f"-f serving/Dockerfile -t {predictor} ." in out
    assert f"-f feedback/Dockerfile -t {feedback} ." in out
    for image in (components, predictor, feedback):
        assert f"docker push {image}" in out
    assert f"IMAGE={components}" in out


def test_make_images_default_tag_is_the_git_sha():
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    if sha.returncode != 0:
        pytest.skip("not a git checkout")
    out = make("-n", "images", "IMAGE_REGISTRY=reg.example/x").stdout
    assert f"reg.example/x/catdog-components:{sha.stdout.strip()}" in out


def test_make_help_lists_the_new_targets():
    out = re.sub(r"\x1b\[[0-9;]*m", "", make("-s", "help").stdout)
    for target in ("images", "schedule", "unschedule", "app", "up"):
        assert re.search(rf"^\s+{target}\s+\S", out, re.M), target
