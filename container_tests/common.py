"""make image-test's shared pieces: paths and names, the report (timed parts, checks), errors."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent

CONTAINERS_CONF = REPO / "container_tests" / "containers.conf"
WHEELHOUSE = REPO / "container_tests" / "wheelhouse"
WHEELHOUSE_ARG = "container_tests/wheelhouse"  # the Dockerfiles' WHEELHOUSE build argument: a folder of the context
BASE_IMAGE = "localhost/catdog-debian:bookworm-python3.11"
DEBIAN_PACKAGES = ["python3", "python3-venv", "ca-certificates", "netbase"]
PARTS = ("predictor", "components", "feedback")
USER_ID = "10001"
LOOPBACK = "127.0.0.1"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
READY_TIMEOUT_S = 180



class Failure(Exception):
    pass


# -- output -------------------------------------------------------------------------------------

TIMES: list[tuple[str, float, str]] = []  # (part, seconds, note)
RESULTS: list[tuple[str, bool, str]] = []  # (check, passed, detail)


def say(message: str) -> None:
    print(f"[image-test] {message}", flush=True)


@contextmanager
def timed(part: str, note: str = ""):
    say(f"{part} ...")
    start = time.monotonic()
    holder = {"note": note}
    try:
        yield holder
    finally:
        seconds = time.monotonic() - start
        TIMES.append((part, seconds, holder["note"]))
        say(f"{part}: {seconds:.1f} s {holder['note']}".rstrip())


def check(name: str, passed: bool, detail: str = "") -> bool:
    RESULTS.append((name, bool(passed), detail))
    print(f"  {'ok  ' if passed else 'FAIL'} {name}" + (f": {detail}" if detail and not passed else ""), flush=True)
    return bool(passed)


def human(size: float) -> str:
    """Decimal units, as podman prints sizes."""
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit != "MB" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{size:.2f} GB"


