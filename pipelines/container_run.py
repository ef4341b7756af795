"""`make run RUNNER=container`: the compiled pipeline, every step in the component image, under
kfp.local's DockerRunner.

Contract:
- What runs is compiled/training_pipeline.yaml (the file Kubeflow and Vertex execute), loaded with
  kfp's YAML loader, its executors' image set to IMAGE in a temporary copy; not the Python function.
- IMAGE: an image the engine has or can pull. Without IMAGE, the component image is built with
  podman as `make image-test` builds it (local Debian base, wheelhouse, container_tests/build.py) and tagged
  localhost/catdog-components:src-<hash of the files it copies>: reused while they are unchanged,
  older src-* tags removed after a new build. That needs podman, runc and root.
- The engine: the Docker API at DOCKER_HOST, else /var/run/docker.sock when it answers, else a
  podman API service started here on a socket of its own (image-test's store and containers.conf)
  and stopped at the end. Without IMAGE, always that podman service (the image is in its store).
- Local paths (DATA, REGISTRY, WEIGHTS, feedback_uri, the download cache, OUTPUT_ROOT) are bind
  mounted at the same paths (inputs read-only); gs:// paths are read in the containers with the
  host's credentials file (GOOGLE_APPLICATION_CREDENTIALS or gcloud's ADC file, mounted read-only)
  or STORAGE_EMULATOR_HOST. The steps use the host's network (the emulator on loopback, GCS).
- The steps run as the caller's uid:gid with group 0 added (how OpenShift runs an arbitrary uid;
  the image's HOME and artifact folders are group-0 writable), so what they write is the caller's,
  as with the subprocess runner. run_pipeline(user=...) overrides it (image-test: 10001:0).
- Every error a user can make (no engine, no podman, image missing, a path that cannot be mounted
  or written) raises ContainerRunError before the first step, naming what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from catdog import REPO_ROOT
from catdog.sources import default_cache_dir, is_archive
from pipelines.config import PipelineConfig
from pipelines.remote import PIPELINE_YAML

DOCKERFILE = REPO_ROOT / "components" / "Dockerfile"
IMAGE_NAME = "localhost/catdog-components"
DOCKER_SOCKET = Path("/var/run/docker.sock")
SERVICE_READY_TIMEOUT_S = 60
# make run's settings of this runner (pipelines/words.py), with their defaults
CONTAINER_SETTINGS = {"RUNNER": "subprocess", "IMAGE_CACHE": "", "IMAGE_STORAGE_DRIVER": ""}
RUNNERS = ("subprocess", "container")
PASSED_ENVIRONMENT = ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT", "NO_GCE_CHECK")


class ContainerRunError(RuntimeError):
    """A problem found before any step ran; the message says what to do."""


@dataclass(frozen=True)
class Mount:
    path: str
    read_only: bool


def note(message: str) -> None:
    """A line for the person waiting: in the run's log, and on the terminal when pipelines.run has
    moved sys.stdout to its log file for the run (a build takes minutes: say so where it is seen)."""
    print(message, flush=True)
    if sys.stdout is not sys.__stdout__ and sys.__stdout__ is not None:
        print(message, file=sys.__stdout__, flush=True)


# -- what the steps need mounted -------------------------------------------------------------------

def planned_mounts(config: PipelineConfig, output_root: Path) -> list[Mount]:
    """The host paths the steps read or write, each mounted at the same path (a path inside another
    mount of the same or a wider mode is left to that one)."""
    wanted: list[Mount] = [Mount(str(output_root), False)]
    data = config.data_uri
    if "://" not in data:
        wanted.append(Mount(data, True))
    elif is_archive(data):  # the host downloaded it into the cache (pipelines/local.py); ingest reads it there
        wanted.append(Mount(str(default_cache_dir().resolve()), True))
    if config.feedback_uri and "://" not in config.feedback_uri and Path(config.feedback_uri).exists():
        wanted.append(Mount(config.feedback_uri, True))
    if "://" not in config.registry_uri:
        wanted.append(Mount(config.registry_uri, False))
    if "://" not in config.weights and config.weights.lower() not in ("imagenet", "none"):
        wanted.append(Mount(config.weights, True))
    mounts: list[Mount] = []
    for mount in sorted(wanted, key=lambda m: (len(Path(m.path).parts), m.read_only)):
        covered = any(Path(mount.path).is_relative_to(m.path) and (mount.read_only or not m.read_only)
                      for m in mounts)
        if not covered:
            mounts.append(mount)
    return mounts


def check_mounts(mounts: list[Mount], user: str) -> None:
    """Each path can be bind mounted, and read (or written) by the steps' user when that is the caller."""
    for mount in mounts:
        if any(char in mount.path for char in ":,"):
            raise ContainerRunError(f"{mount.path}: a path with ':' or ',' cannot be bind mounted; "
                                    "move it or pass another path")
        path = Path(mount.path)
        if not path.exists():
            raise ContainerRunError(f"{path} does not exist: a path the steps use must exist to be mounted")
        need = os.R_OK if mount.read_only else os.R_OK | os.W_OK
        if user == default_user() and not os.access(path, need):
            raise ContainerRunError(f"{path} is not {'readable' if mount.read_only else 'writable'} by you "
                                    f"(uid {os.getuid()}), who the steps run as")


def credentials(config: PipelineConfig) -> tuple[dict[str, str], list[Mount]]:
    """Environment and read-only mounts that let the steps reach gs:// as the host does."""
    env = {key: os.environ[key] for key in PASSED_ENVIRONMENT if os.environ.get(key)}
    uses_gcs = any(value.startswith("gs://") for value in
                   (config.data_uri, config.feedback_uri, config.registry_uri, config.weights))
    if not uses_gcs or "STORAGE_EMULATOR_HOST" in env:
        return env, []
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or str(
        Path.home() / ".config" / "gcloud" / "application_default_credentials.json")
    if not Path(key_file).is_file():
        note("note: gs:// paths and no credentials file (GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth "
             "application-default login`): the steps can only use a GCE metadata server")
        return env, []
    key_file = str(Path(key_file).resolve())
    return {**env, "GOOGLE_APPLICATION_CREDENTIALS": key_file}, [Mount(key_file, True)]


# -- the image -------------------------------------------------------------------------------------

def copied_paths(dockerfile: Path = DOCKERFILE) -> list[str]:
    """The build-context paths the Dockerfile's COPY instructions take (not those --from a stage)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    paths: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0].upper() == "COPY" and not any(w.startswith("--from") for w in words):
            paths += [w for w in words[1:-1] if not w.startswith("--")]
    return paths


def source_hash(dockerfile: Path = DOCKERFILE, repo: Path = REPO_ROOT) -> str:
    """12 hex digits over the Dockerfile and every file its COPY lines take (caches left out)."""
    digest = hashlib.sha256(dockerfile.read_bytes())
    for copied in sorted(copied_paths(dockerfile)):
        root = repo / copied
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def require_podman() -> None:
    """podman and runc, as root (image-test's settings), or ContainerRunError."""
    from container_tests.build import require_tools
    from container_tests.common import Failure

    if shutil.which("podman") is None or shutil.which("runc") is None:
        raise ContainerRunError("neither DOCKER_HOST, a Docker daemon nor podman here: install Docker and "
                                "give IMAGE=<image>, or apt-get install podman runc debootstrap and run as root")
    try:
        require_tools()
    except Failure as exc:
        raise ContainerRunError(f"podman: {exc} (sudo make run RUNNER=container ...), or give IMAGE= "
                                "an image of a Docker engine (DOCKER_HOST)") from None


def store_settings(settings: dict[str, str]) -> tuple[Path, str]:
    """(IMAGE_CACHE, IMAGE_STORAGE_DRIVER): make run's settings, else the environment, else image-test's."""
    cache = Path(settings.get("IMAGE_CACHE") or os.environ.get("IMAGE_CACHE")
                 or Path.home() / ".cache" / "catdog-images")
    return cache, settings.get("IMAGE_STORAGE_DRIVER") or os.environ.get("IMAGE_STORAGE_DRIVER") or "auto"


def local_image(settings: dict[str, str]):
    """(podman, tag) of the component image built from this checkout, built now when missing."""
    from container_tests.build import apt_mirror, build, ensure_wheelhouse, open_store
    from container_tests.common import Failure

    require_podman()
    cache, driver = store_settings(settings)
    tag = f"{IMAGE_NAME}:src-{source_hash()}"
    try:
        podman, _ = open_store(cache, driver, os.environ.get("DEBIAN_MIRROR") or apt_mirror())
        if podman.image_exists(tag):
            note(f"component image {tag}: built from these sources before, reused")
            return podman, tag
        note(f"building the component image {tag} with podman (the sources it copies changed; a few minutes)")
        start = time.monotonic()
        ensure_wheelhouse(sys.executable)
        build(podman, str(DOCKERFILE.relative_to(REPO_ROOT)), tag, layers=False)
    except Failure as exc:
        raise ContainerRunError(f"building the component image: {exc}") from None
    old = [line for line in podman("images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_NAME).stdout.split()
           if line.startswith(f"{IMAGE_NAME}:src-") and line != tag]
    for stale in old:
        podman("rmi", stale, check=False)
    note(f"built {tag} in {time.monotonic() - start:.0f} s" + (f"; removed {', '.join(old)}" if old else ""))
    return podman, tag


# -- the engine ------------------------------------------------------------------------------------

def ping(base_url: str):
    import docker

    try:
        client = docker.DockerClient(base_url=base_url, timeout=10)
        client.ping()
        return client
    except Exception:  # noqa: BLE001 (docker raises requests', urllib3's and its own errors here)
        return None


@contextlib.contextmanager
def podman_service(podman) -> Iterator[str]:
    """`podman system service` on a socket of its own, stopped on exit; yields its DOCKER_HOST."""
    folder = Path(tempfile.mkdtemp(prefix="catdog-podman-"))
    url = f"unix://{folder / 'podman.sock'}"
    log = open(folder / "service.log", "w+")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(podman.argv("system", "service", "--time=0", url), env=podman.env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVICE_READY_TIMEOUT_S
        while ping(url) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise ContainerRunError(f"podman's API service did not start ({url}):\n{log.read()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def engine(settings: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(DOCKER_HOST url, image) of the engine the steps run on, its image checked (or pulled) now."""
    image = settings.get("IMAGE", "")
    host = os.environ.get("DOCKER_HOST", "")
    if image and (host or DOCKER_SOCKET.exists()):
        url = host or f"unix://{DOCKER_SOCKET}"
        if not url.startswith("unix://"):
            raise ContainerRunError(f"DOCKER_HOST={url}: the steps bind mount local folders, so the engine must "
                                    "run on this machine (a unix:// socket)")
        client = ping(url)
        if client is None:
            raise ContainerRunError(f"no Docker engine answers at {url}: start it, or unset DOCKER_HOST "
                                    "(with podman installed the target starts podman's API service itself)")
        require_image(client, image, url)
        yield url, image
        return
    if host:
        raise ContainerRunError(f"DOCKER_HOST={host} and no IMAGE: give IMAGE=<an image that engine has or can "
                                "pull>, or unset DOCKER_HOST to build the image with podman here")
    if image:
        require_podman()
        from container_tests.build import Podman

        cache, driver = store_settings(settings)
        if driver == "auto":  # the store image-test chose (open_store), without building a base
            driver = "overlay" if (cache / "storage-overlay").is_dir() or not (cache / "storage-vfs").is_dir() else "vfs"
        podman = Podman(cache, driver)
    else:
        podman, image = local_image(settings)
    with podman_service(podman) as url:
        import docker

        client = docker.DockerClient(base_url=url, timeout=60)
        require_image(client, image, f"podman's store in {podman.root}")
        yield url, image


def require_image(client, image: str, where: str) -> None:
    """The image is there, or pulled now (DockerRunner would pull it at the first step)."""
    import docker

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    note(f"pulling {image}")
    try:
        client.images.pull(image)
    except docker.errors.APIError as exc:
        raise ContainerRunError(f"IMAGE={image} is not in {where} and could not be pulled ({exc.explanation}): "
                                "give an image it has (make image-test --keep-images leaves "
                                "localhost/catdog-components:image-test), or leave IMAGE out to build one") from None


# -- the run ---------------------------------------------------------------------------------------

def default_user() -> str:
    return f"{os.getuid()}:{os.getgid()}"


def run_pipeline(config: PipelineConfig, settings: dict[str, str], output_root: Path,
                 user: str | None = None, progress=None, errors=None) -> Path:
    """Run the compiled pipeline with every step in the component image; return the run's folder.

    `config`'s local paths are absolute (pipelines.local.absolute_local_paths). Raises
    ContainerRunError before any step for what the caller can fix. progress, errors: as
    pipelines.local.run_local's (the step events; the steps write theirs to the progress file,
    mounted with its folder).
    """
    from kfp import components, local

    from pipelines.remote import substitute_image

    if not PIPELINE_YAML.is_file():
        raise ContainerRunError(f"{PIPELINE_YAML} is missing: run make compile")
    user = user or default_user()
    output_root.mkdir(parents=True, exist_ok=True)
    if "://" not in config.registry_uri:
        Path(config.registry_uri).mkdir(parents=True, exist_ok=True)
    environment, key_mounts = credentials(config)
    if "://" in config.data_uri and is_archive(config.data_uri):
        environment["CATDOG_CACHE"] = str(default_cache_dir().resolve())
    extra = list(key_mounts)
    if progress is not None and progress.path:
        from catdog.progress import ENV_VAR

        environment[ENV_VAR] = str(Path(progress.path).resolve())
        extra.append(Mount(str(Path(progress.path).resolve().parent), False))
    mounts = [m for m in planned_mounts(config, output_root) + extra
              if m == Mount(str(output_root), False) or not Path(m.path).is_relative_to(output_root)]
    check_mounts(mounts, user)
    with engine(settings) as (url, image), tempfile.TemporaryDirectory(prefix="catdog-container-run-") as tmp:
        from docker.types import Mount as DockerMount

        package = Path(tmp) / PIPELINE_YAML.name
        substitute_image(PIPELINE_YAML, image, package)
        pipeline = components.load_component_from_file(str(package))
        note(f"running {PIPELINE_YAML.relative_to(REPO_ROOT)} with every step in {image} ({url}), as {user}; "
             f"mounted: {', '.join(m.path + (' (ro)' if m.read_only else '') for m in mounts)}")
        # kfp's DockerRunner calls docker.from_env(): the engine chosen above
        previous = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = url
        try:
            runner = local.DockerRunner(
                user=user, group_add=["0"], network_mode="host", environment=environment,
                mounts=[DockerMount(m.path, m.path, type="bind", read_only=m.read_only)
                        for m in mounts if m.path != str(output_root)])  # DockerRunner mounts the root itself
            before = set(output_root.iterdir())
            local.init(runner=runner, pipeline_root=str(output_root))
            if progress is None:
                pipeline(**config.pipeline_arguments())
            else:  # the same step events as the subprocess runner's (pipelines/local_run.py)
                from pipelines.local_run import ErrorLines, step_events
                from pipelines.training_pipeline import STEPS

                progress.emit("run", steps=list(STEPS))
                with step_events(progress, errors or ErrorLines()):
                    pipeline(**config.pipeline_arguments())
        finally:
            if previous is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = previous
    new = sorted(set(output_root.iterdir()) - before - {output_root / "logs"}, key=lambda p: p.stat().st_mtime)
    if not new:
        raise RuntimeError(f"the container run wrote nothing under {output_root}")
    return new[-1]
