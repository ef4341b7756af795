"""`make image-test`: build the three images with podman and run them for real.

No container registry is needed: the base is a local Debian 12 root (debootstrap, Python 3.11 from
Debian) imported into podman in place of python:3.11-slim-bookworm, and pip installs from a local
wheelhouse (container_tests/wheelhouse, `pip wheel` of the lock's runtime packages) with no index and no
network (`podman build --network none`). The needed images are built first (feedback needs the
predictor's), then, with one GCS emulator on loopback for all parts (STORAGE_EMULATOR_HOST):

components the compiled pipeline with every step in the component image (container_tests/pipeline_run.py,
           through pipelines/container_run.py: kfp.local's DockerRunner on podman's Docker API),
           as uid 10001: on gs:// (promoted, deploy runs), then on local folders (champion kept).
           Its champion is the model the other parts serve (without this part: the tiny test
           model of tests/serving_fixtures.py, built here).
predictor  serving/Dockerfile's image twice, on the host's loopback (--network host, 127.0.0.1):
           - KServe: the model mounted read-only at /mnt/models (where KServe's storage initializer
             puts it), the container args of manifests/base/inferenceservice.yaml;
           - Vertex AI: no args, AIP_HTTP_PORT / AIP_HEALTH_ROUTE / AIP_PREDICT_ROUTE /
             AIP_STORAGE_URI (the same model on the emulator);
           each: readiness, the model served is the one given (x-model-version), V1 and V2 (and
           Vertex) predictions, bad requests (4xx, never 5xx), the server runs as uid 10001.
feedback   feedback/Dockerfile's image beside a predictor container (container_tests/feedback_run.py): a
           named volume at /data, migrations at start, uid 10001, /ready, one photo predicted and
           validated through the API, then a fresh container on the same volume keeps them.

Each part's time and each image's size are printed at the end. The Debian root is cached as a
tarball in --cache (IMAGE_CACHE, default ~/.cache/catdog-images) and the wheelhouse in
container_tests/wheelhouse (git-ignored) until requirements.lock changes; podman's storage lives in
--cache too (its own store: nothing else of podman's is touched). Built images are removed at the
end unless --keep-images. Needs root, podman and runc (apt-get install podman runc debootstrap),
debootstrap and the Debian mirror apt uses the first time. Run with the project's .venv python.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)  # = container_tests.common.REPO, not importable yet
if _ROOT not in sys.path:  # run as a script: container_tests/ and the project import from the repository
    sys.path.insert(0, _ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the test model is built with TensorFlow here

from container_tests.common import BASE_IMAGE, CONTAINERS_CONF, REPO, Failure, PARTS, RESULTS, TIMES, human, say, timed  # noqa: E402
from container_tests.build import Podman, apt_mirror, build, ensure_wheelhouse, open_store, require_tools  # noqa: E402
from container_tests.predictor_run import run_predictor  # noqa: E402
from container_tests.feedback_run import run_feedback  # noqa: E402
from container_tests.pipeline_run import run_pipelines  # noqa: E402
from container_tests.predictor_run import gcs_emulator, world_readable_copy  # noqa: E402


# -- main -----------------------------------------------------------------------------------------

def summary(podman_sizes: dict[str, int]) -> None:
    print("\n[image-test] times", flush=True)
    for part, seconds, note in TIMES:
        print(f"  {part:<66} {seconds:7.1f} s  {note}".rstrip())
    print(f"  {'total':<66} {sum(t for _, t, _ in TIMES):7.1f} s")
    for image, size in podman_sizes.items():
        print(f"[image-test] image {image}: {human(size)}")
    failed = [name for name, passed, _ in RESULTS if not passed]
    print(f"[image-test] checks: {len(RESULTS) - len(failed)} passed, {len(failed)} failed"
          + "".join(f"\n  FAILED {name}" for name in failed), flush=True)


def test_model(work: Path) -> tuple[Path, str]:
    """Without the pipeline part: tests/serving_fixtures' tiny model, here and on the GCS emulator."""
    from catdog import storage
    from tests.serving_fixtures import tiny_model_dir

    with timed("test model (tiny_model_dir, built here)"):
        model = world_readable_copy(tiny_model_dir(), work / "model")
        uri = "gs://catdog-image-test/vertex/model"
        storage.upload_tree(model, uri)
    return model, uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=list(PARTS), help=f"any of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("IMAGE_CACHE") or
                                                            Path.home() / ".cache" / "catdog-images"),
                        help="the Debian root tarball and podman's store (env IMAGE_CACHE)")
    parser.add_argument("--storage-driver", default=os.environ.get("IMAGE_STORAGE_DRIVER") or "auto",
                        choices=("auto", "overlay", "vfs"), help="podman storage driver (env IMAGE_STORAGE_DRIVER); "
                        "auto: overlay when it works here, else vfs (slower, works anywhere)")
    parser.add_argument("--mirror", default=os.environ.get("DEBIAN_MIRROR") or apt_mirror(),
                        help="Debian mirror for debootstrap (env DEBIAN_MIRROR; default: apt's)")
    parser.add_argument("--tag", default="image-test", help="tag of the built images (localhost/catdog-*:TAG)")
    parser.add_argument("--layers", action="store_true", help="podman build --layers (cache each step; "
                        "slower from scratch, above all with vfs)")
    parser.add_argument("--refresh-base", action="store_true", help="debootstrap again")
    parser.add_argument("--keep-images", action="store_true", help="leave the built images in the store")
    parser.add_argument("--wheelhouse-only", action="store_true", help="only fill container_tests/wheelhouse (for an "
                        "offline build with --build-arg WHEELHOUSE=container_tests/wheelhouse); needs neither root nor podman")
    options = parser.parse_args(argv)
    if options.wheelhouse_only:
        try:
            say(f"container_tests/wheelhouse: {ensure_wheelhouse(sys.executable)}")
        except Failure as exc:
            print(f"[image-test] error: {exc}", file=sys.stderr)
            return 1
        return 0
    parts = [p for part in options.parts for p in part.replace(",", " ").split()]
    if not parts or set(parts) - set(PARTS):
        parser.error(f"parts: any of {', '.join(PARTS)}, got {parts}")

    sizes: dict[str, int] = {}
    podman = Podman(options.cache, "overlay" if options.storage_driver == "auto" else options.storage_driver)
    images = {"components": ("components/Dockerfile", f"localhost/catdog-components:{options.tag}"),
              "predictor": ("serving/Dockerfile", f"localhost/catdog-predictor:{options.tag}"),
              "feedback": ("feedback/Dockerfile", f"localhost/catdog-feedback:{options.tag}")}
    # the feedback app is checked against the predictor image
    builds = [name for name in images if name in parts or (name == "predictor" and "feedback" in parts)]
    try:
        require_tools()
        options.cache.mkdir(parents=True, exist_ok=True)
        say(f"podman {podman('--version').stdout.split()[-1]}, runtime runc, "
            f"CONTAINERS_CONF={CONTAINERS_CONF.relative_to(REPO)}, cache {options.cache}")
        with timed("Debian base image") as part:
            podman, how = open_store(options.cache, options.storage_driver, options.mirror, options.refresh_base)
            part["note"] = f"storage {podman.driver}, {how}"
        sizes[BASE_IMAGE] = podman.image_size(BASE_IMAGE)
        with timed("wheelhouse") as part:
            part["note"] = ensure_wheelhouse(sys.executable)
        with tempfile.TemporaryDirectory(prefix="catdog-image-test-") as tmp, gcs_emulator() as emulator:
            work = Path(tmp)
            work.chmod(0o755)
            os.environ["STORAGE_EMULATOR_HOST"] = emulator  # this process and the pipeline's steps
            for name in builds:
                dockerfile, tag = images[name]
                with timed(f"build {name} image ({dockerfile})") as part:
                    build(podman, dockerfile, tag, options.layers)
                    sizes[tag] = podman.image_size(tag)
                    part["note"] = human(sizes[tag])
            if "components" in parts:  # its champion is the model the other parts serve
                model, uri = run_pipelines(podman, images["components"][1], work / "pipeline", emulator)
            else:
                model, uri = test_model(work)
            if "predictor" in parts:
                run_predictor(podman, images["predictor"][1], model, uri, emulator)
            if "feedback" in parts:
                from serving.source import content_version

                run_feedback(podman, images["feedback"][1], images["predictor"][1], model, content_version(model))
    except Failure as exc:
        print(f"[image-test] error: {exc}", file=sys.stderr, flush=True)
        RESULTS.append(("image-test ran to the end", False, str(exc)))
    finally:
        if not options.keep_images and shutil.which("podman"):
            for _, tag in images.values():
                podman("rmi", "-f", tag, check=False)
        elif options.keep_images:
            say(f"images kept; run them with: {podman.shell_prefix()} run ...")
        summary(sizes)
    return 0 if RESULTS and all(passed for _, passed, _ in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
