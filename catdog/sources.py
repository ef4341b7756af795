"""Data sources: a data URI made into a local folder (archives and URLs downloaded and extracted once).

A source is a local folder, a .zip/.tar.gz/.tgz/.tar archive given as a path, http(s) URL or gs://
object, or a gs:// prefix laid out like a folder. Downloads and extractions live in a cache:
$CATDOG_CACHE, else $XDG_CACHE_HOME/catdog, else ~/.cache/catdog.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

from catdog import storage

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
# the pipeline's default data: 2,000 train + 1,000 validation photos in cats/ and dogs/ folders
CATS_AND_DOGS_FILTERED_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
DOWNLOAD_TIMEOUT_S = 60


class IngestError(RuntimeError):
    """The source cannot yield a usable dataset; the message says why."""


def default_cache_dir() -> Path:
    if os.environ.get("CATDOG_CACHE"):
        return Path(os.environ["CATDOG_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "catdog"


def is_archive(uri: str) -> bool:
    return uri.lower().endswith(ARCHIVE_SUFFIXES)


def download_path(uri: str, cache_dir: Path) -> Path:
    """Where the cache keeps the download of `uri` (a copy put there is used as is)."""
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return cache_dir / "downloads" / f"{key}-{uri.rstrip('/').rsplit('/', 1)[-1]}"


def download_once(uri: str, cache_dir: Path) -> Path:
    """Fetch an http(s) or gs:// archive into the cache unless it is already there."""
    target = download_path(uri, cache_dir)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    try:
        if storage.is_gcs(uri):
            tmp.write_bytes(storage.read_bytes(uri))
        else:
            with urllib.request.urlopen(uri, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
    except Exception as exc:  # HTTP errors, unreachable hosts (offline), missing gs:// objects
        tmp.unlink(missing_ok=True)
        raise IngestError(
            f"cannot download {uri}: {exc}. Offline? Pass DATA=path/to/class-folders (one sub-folder per "
            f"class) or DATA=path/to/archive.zip (or .tar.gz), or put a copy of the archive at {target}"
        ) from None
    os.replace(tmp, target)
    return target


def extract_once(archive: Path, cache_dir: Path) -> Path:
    """Extract into the cache (keyed by the archive's content hash), refusing unsafe paths."""
    digest = hashlib.sha256()
    with open(archive, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    target = cache_dir / "extracted" / digest.hexdigest()[:16]
    complete = target.with_name(f"{target.name}.complete")  # beside the files, so never one of them
    if complete.exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                root = target.resolve()
                for name in zf.namelist():
                    if not (target / name).resolve().is_relative_to(root):
                        raise IngestError(f"archive {archive} has an unsafe member path: {name}")
                zf.extractall(target)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(target, filter="data")  # refuses absolute paths, '..' and devices
        else:
            raise IngestError(f"{archive} is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise IngestError(f"cannot extract {archive}: {exc}") from None
    complete.touch()
    return target


def materialize_source(uri: str, cache_dir: Path, scratch: Path) -> Path:
    """Return a local folder with the source's files (archives cached, gs:// prefixes in scratch)."""
    if is_archive(uri):
        archive = download_once(uri, cache_dir) if "://" in uri else Path(uri)
        if not archive.is_file():
            raise IngestError(f"archive not found: {uri}")
        return extract_once(archive, cache_dir)
    if storage.is_gcs(uri):
        local = storage.download_tree(uri, scratch / "gcs")
        if not any(local.rglob("*")):
            raise IngestError(f"no objects under {uri}")
        return local
    if "://" in uri:
        raise IngestError(f"unsupported data URI {uri!r}: use a folder, an archive or gs://")
    path = Path(uri)
    if not path.is_dir():
        raise IngestError(f"data folder not found: {uri}")
    return path
