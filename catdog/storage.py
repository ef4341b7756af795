"""Local paths and gs:// URIs behind one small interface (google-cloud-storage for gs://).

Tests point google-cloud-storage at gcp-storage-emulator with STORAGE_EMULATOR_HOST.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

GCS_SCHEME = "gs://"


def is_gcs(uri: str) -> bool:
    return str(uri).startswith(GCS_SCHEME)


def split_gcs(uri: str) -> tuple[str, str]:
    """'gs://bucket/a/b' -> ('bucket', 'a/b')."""
    if not is_gcs(uri):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, blob = uri[len(GCS_SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"gs:// URI without a bucket: {uri!r}")
    return bucket, blob


@lru_cache(maxsize=1)
def gcs_client():
    """One storage client per process; honours STORAGE_EMULATOR_HOST (anonymous, project 'test')."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="test", credentials=AnonymousCredentials())
    return storage.Client()


def join(base: str, *parts: str) -> str:
    if is_gcs(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(base).joinpath(*parts))


def exists(uri: str) -> bool:
    if is_gcs(uri):
        bucket, blob = split_gcs(uri)
        return gcs_client().bucket(bucket).blob(blob).exists()
    return Path(uri).exists()


def read_bytes(uri: str) -> bytes:
    if is_gcs(uri):
        bucket, blob = split_gcs(uri)
        return gcs_client().bucket(bucket).blob(blob).download_as_bytes()
    return Path(uri).read_bytes()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object. Local writes go through a temporary file and a rename (atomic)."""
    if is_gcs(uri):
        bucket, blob = split_gcs(uri)
        gcs_client().bucket(bucket).blob(blob).upload_from_string(data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")  # unique per writer (threads too)
    os.close(fd)
    tmp = Path(name)
    try:
        tmp.write_bytes(data)
        tmp.chmod(0o644)  # mkstemp creates 0600; keep the usual permissions of a written file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a successful rename; removed after a failure


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def copy(source: str, target: str) -> None:
    """Copy one object or file (server-side on GCS when both are gs://); the target appears whole."""
    if is_gcs(source) and is_gcs(target):
        (src_bucket, src_blob), (dst_bucket, dst_blob) = split_gcs(source), split_gcs(target)
        client = gcs_client()
        client.bucket(src_bucket).copy_blob(client.bucket(src_bucket).blob(src_blob), client.bucket(dst_bucket), dst_blob)
        return
    write_bytes(target, read_bytes(source))


def delete(uri: str) -> bool:
    """Remove one object or file; False when it was not there."""
    if is_gcs(uri):
        from google.api_core.exceptions import NotFound

        bucket, blob = split_gcs(uri)
        try:
            gcs_client().bucket(bucket).blob(blob).delete()
        except NotFound:
            return False
        return True
    try:
        Path(uri).unlink()
    except FileNotFoundError:
        return False
    return True


def list_files(uri: str) -> list[str]:
    """Every file below a folder or gs:// prefix, as full URIs/paths, sorted."""
    if is_gcs(uri):
        bucket, prefix = split_gcs(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        return sorted(
            f"{GCS_SCHEME}{bucket}/{b.name}"
            for b in gcs_client().list_blobs(bucket, prefix=prefix)
            if not b.name.endswith("/")
        )
    return sorted(str(p) for p in Path(uri).rglob("*") if p.is_file())


def download_tree(uri: str, local_dir: Path) -> Path:
    """Copy a gs:// prefix (or local folder) to local_dir, keeping relative paths."""
    local_dir = Path(local_dir)
    if not is_gcs(uri):
        shutil.copytree(uri, local_dir, dirs_exist_ok=True)
        return local_dir
    bucket, prefix = split_gcs(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    for blob in gcs_client().list_blobs(bucket, prefix=prefix):
        if blob.name.endswith("/"):
            continue
        target = local_dir / blob.name[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))
    return local_dir


def upload_tree(local_dir: Path, uri: str) -> None:
    """Copy a local folder to a gs:// prefix (or another local folder)."""
    local_dir = Path(local_dir)
    if not is_gcs(uri):
        shutil.copytree(local_dir, uri, dirs_exist_ok=True)
        return
    bucket_name, prefix = split_gcs(uri)
    bucket = gcs_client().bucket(bucket_name)
    for path in sorted(local_dir.rglob("*")):
        if path.is_file():
            name = "/".join(filter(None, [prefix.rstrip("/"), path.relative_to(local_dir).as_posix()]))
            bucket.blob(name).upload_from_filename(str(path))
