"""make image-test: podman with its own store, the local Debian base, the wheelhouse, the builds."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from container_tests.common import BASE_IMAGE, CONTAINERS_CONF, DEBIAN_PACKAGES, DEFAULT_MIRROR, Failure, REPO, WHEELHOUSE, WHEELHOUSE_ARG, human, say

# -- podman -------------------------------------------------------------------------------------

class Podman:
    """podman with this test's own store under the cache, our containers.conf and runc."""

    def __init__(self, cache: Path, driver: str):
        self.root = cache / f"storage-{driver}"
        # podman wants a short runroot (under 50 characters); /run is cleared at boot, as a runroot must be
        self.runroot = Path("/run" if os.access("/run", os.W_OK) else "/tmp") / f"catdog-image-test-{driver}"
        self.driver = driver
        self.env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.root), "--runroot", str(self.runroot),
                "--storage-driver", self.driver, *args]

    def __call__(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(self.argv(*args), check=False, env=self.env, text=True, timeout=timeout,
                                capture_output=True)
        if check and result.returncode != 0:
            raise Failure(f"podman {' '.join(args[:3])} ... exited {result.returncode}:\n"
                          f"{(result.stderr or '')[-3000:]}")
        return result

    def image_exists(self, name: str) -> bool:
        return self("image", "exists", name, check=False).returncode == 0

    def image_size(self, name: str) -> int:
        return int(self("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())

    def shell_prefix(self) -> str:
        return f"CONTAINERS_CONF={shlex.quote(str(CONTAINERS_CONF))} {shlex.join(self.argv())}"


def require_tools() -> None:
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing:
        raise Failure(f"{' and '.join(missing)} not found: apt-get install podman runc debootstrap")
    if os.geteuid() != 0:
        raise Failure("run as root: the Debian base (debootstrap) and these podman settings need it")


# -- the Debian base ----------------------------------------------------------------------------

def apt_mirror(files: list[Path] | None = None) -> str:
    """The Debian mirror apt uses here (deb822 .sources or one-line .list), else deb.debian.org."""
    if files is None:
        files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        uris = [*re.findall(r"^\s*URIs:\s*(.+)$", text, re.MULTILINE),  # deb822 (.sources)
                *re.findall(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.MULTILINE)]  # one-line
        for uri in " ".join(uris).split():
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def slim_down(rootfs: Path) -> None:
    """What debian:bookworm-slim leaves out: apt's lists and caches, docs but copyrights, man pages, locales."""
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*", "usr/share/lintian/*"):
        for path in rootfs.glob(pattern):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in (rootfs / "usr/share/doc").glob("*/*"):
        if path.name != "copyright":
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def open_store(cache: Path, driver: str, mirror: str, refresh: bool = False) -> tuple[Podman, str]:
    """podman on the store of `driver` (auto: overlay when it works here, else vfs) with the Debian
    base in it; returns (podman, how the base was obtained)."""
    drivers = ["overlay", "vfs"] if driver == "auto" else [driver]
    cache.mkdir(parents=True, exist_ok=True)
    for name in drivers:
        podman = Podman(cache, name)
        try:
            return podman, ensure_base(podman, cache, mirror, refresh)
        except Failure as exc:
            if name == drivers[-1]:
                raise
            say(f"the {name} storage driver does not work here, falling back to vfs: "
                f"{str(exc).strip().splitlines()[-1][:300]}")
    raise AssertionError("unreachable")


def ensure_base(podman: Podman, cache: Path, mirror: str, refresh: bool) -> str:
    """The local stand-in for python:3.11-slim-bookworm; returns how it was obtained."""
    tarball = cache / "debian-bookworm-python3.11.tar"
    if podman.image_exists(BASE_IMAGE) and not refresh:
        return "in podman's store"
    how = "from the cached tarball"
    if refresh or not tarball.is_file():
        if shutil.which("debootstrap") is None:
            raise Failure("debootstrap not found: apt-get install debootstrap")
        rootfs = cache / "rootfs.partial"
        shutil.rmtree(rootfs, ignore_errors=True)
        say(f"debootstrap bookworm from {mirror} (about a minute)")
        result = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
                                 "bookworm", str(rootfs), mirror], check=False, capture_output=True, text=True)
        if result.returncode != 0:
            raise Failure(f"debootstrap failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        slim_down(rootfs)
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", f"{tarball}.partial", "."], check=True)
        os.replace(f"{tarball}.partial", tarball)
        shutil.rmtree(rootfs, ignore_errors=True)
        how = f"debootstrap from {mirror}"
    # like the official image: UTF-8 locale, python3 as the default command
    podman("import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', str(tarball), BASE_IMAGE)
    version = podman("run", "--rm", "--network", "none", BASE_IMAGE, "python3", "-c",
                     "import platform; print(platform.python_version())").stdout.strip()
    if not version.startswith("3.11."):
        raise Failure(f"the Debian base has Python {version}, not 3.11")
    return f"{how}, Python {version}"


# -- the wheelhouse -----------------------------------------------------------------------------

def runtime_requirements() -> list[str]:
    """pyproject.toml's runtime dependencies (the component image) and the predictor's list."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return [*deps, *serving_packages()]


def serving_packages() -> list[str]:
    """The package names serving/Dockerfile's pip step installs (after its -c constraints)."""
    text = (REPO / "serving" / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"pip install .*?-c /tmp/requirements\.lock (.*?)&&", text)
    if not match:
        raise Failure("serving/Dockerfile: no `pip install ... -c /tmp/requirements.lock <packages> &&` step")
    return match.group(1).split()


def ensure_wheelhouse(python: str) -> str:
    """Wheels of every runtime package at the lock's versions, for Debian 12's CPython 3.11 (x86_64)."""
    requirements = sorted(set(runtime_requirements()))
    lock = (REPO / "requirements.lock").read_bytes()
    digest = hashlib.sha256(lock + "\n".join(requirements).encode()).hexdigest()
    stamp = WHEELHOUSE / ".stamp"
    if stamp.is_file() and stamp.read_text().strip() == digest and any(WHEELHOUSE.glob("*.whl")):
        return f"cached ({len(list(WHEELHOUSE.glob('*.whl')))} wheels)"
    for old in WHEELHOUSE.glob("*.whl"):
        old.unlink()
    stamp.unlink(missing_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(requirements) + "\n")
    try:
        # sdist-only packages (kfp-server-api, ...) are built into wheels here: the build has no index
        result = subprocess.run([python, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                                 "-c", str(REPO / "requirements.lock"), "-r", handle.name, "-w", str(WHEELHOUSE)],
                                check=False, capture_output=True, text=True)
    finally:
        os.unlink(handle.name)
    if result.returncode != 0:
        raise Failure(f"pip wheel failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    stamp.write_text(digest + "\n")
    wheels = list(WHEELHOUSE.glob("*.whl"))
    return f"{len(wheels)} wheels, {human(sum(w.stat().st_size for w in wheels))}"


# -- builds ---------------------------------------------------------------------------------------

def build(podman: Podman, dockerfile: str, tag: str, layers: bool) -> None:
    result = podman("build", "--pull=never", "--network", "none", f"--layers={str(layers).lower()}",
                    "-f", dockerfile, "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
                    "--build-arg", f"WHEELHOUSE={WHEELHOUSE_ARG}", "-t", tag, str(REPO), check=False)
    if result.returncode != 0:
        print(result.stdout[-6000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
        raise Failure(f"podman build -f {dockerfile} failed ({result.returncode})")
