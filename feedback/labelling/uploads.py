"""Labelled photos out of an upload-data request: multipart files[] + labels[], or a zip of class folders.

Names inside a zip are only read, never used as paths (nothing is extracted to disk), so an
archive cannot write outside the store however its members are named; each member is read with
a size cap whatever its header claims, and the archive's total expanded size is bounded too.
"""

from __future__ import annotations

import io
import lzma
import zipfile
import zlib
from pathlib import PurePosixPath

from catdog.ingest import IGNORED_DIRS
from feedback.labelling.inputs import LabelledFile, UploadReport
from feedback.store.photos import PhotoRejected


def read_zip(data: bytes, labels: tuple[str, ...], label_map: dict[str, str], max_photo_bytes: int,
             max_total_bytes: int, report: UploadReport) -> list[LabelledFile]:
    """The photos of a zip whose folders are labels (cat/, dog/; or ingest's cats/, dogs/ at any
    depth); other members are listed in `report` with the reason. Raises PhotoRejected (422) for
    something that is not a zip, (413) for one that expands beyond max_total_bytes."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, NotImplementedError, OSError, EOFError) as exc:  # a damaged directory
        raise PhotoRejected(f"the archive is not a readable zip file ({type(exc).__name__}: {exc})") from None
    files, total = [], 0
    with archive:
        for info in archive.infolist():
            path = PurePosixPath(info.filename)
            if info.is_dir() or path.name.startswith(".") or any(part in IGNORED_DIRS for part in path.parts):
                continue  # folders, macOS resource forks, hidden files: not photos (as ingest skips them)
            folder = path.parent.name
            label = label_map.get(folder, folder)
            if label not in labels:
                report.reject(info.filename, f"not in a label folder ({', '.join(labels)}): {folder or 'top level'!r}")
                continue
            if info.flag_bits & 0x1:
                report.reject(info.filename, "encrypted zip member")
                continue
            if info.file_size > max_photo_bytes:
                report.reject(info.filename, f"{info.file_size:,} bytes is over the limit of {max_photo_bytes:,} "
                                             "bytes (MAX_PHOTO_BYTES)")
                continue
            total += info.file_size
            if total > max_total_bytes:
                raise PhotoRejected(f"the archive expands to more than {max_total_bytes:,} bytes "
                                    "(MAX_REQUEST_BYTES)", status=413)
            try:
                with archive.open(info) as member:
                    content = member.read(max_photo_bytes + 1)  # the header's size may lie
            except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, EOFError, ValueError, RuntimeError,
                    NotImplementedError) as exc:  # damaged data, an unsupported method or version
                report.reject(info.filename, f"unreadable zip member ({type(exc).__name__}: {exc})")
                continue
            files.append(LabelledFile(info.filename, content, label))
    return files


def pair_labels(names: list[str], labels: list[str]) -> list[str]:
    """One label per file, or one label for all of them; else PhotoRejected (422)."""
    if len(labels) == 1:
        return labels * len(names)
    if len(labels) != len(names):
        raise PhotoRejected(f"got {len(names)} file(s) but {len(labels)} label(s): send one labels[] per "
                            "files[] (in the same order), or a single label for all")
    return labels
