"""A model registry on a local folder or gs:// prefix: immutable numbered versions + a champion alias.

    <root>/versions/<N>/{model.keras, model.onnx, metadata.json, _COMPLETE}
    <root>/champion.json          the alias: {"version": N, ...}
    <root>/history/<time>-v<N>.run-<run id>.json   one record per champion decision, named by its run

Every decision carries the id of the pipeline run that made it (`run_id`: the app's run id, the one
`make run` makes, or the service's id of a scheduled run; pipelines/config.py), in the record and
in its file name, so "the decision of run X" is one listing and one read (`decision_of_run`), never
a guess from times. Records written before run ids existed are named <time>-v<N>.json and belong
to no run. A run id is letters, digits, '.', '_' and '-' (RUN_ID_PATTERN), so it fits a file name.

Writes are ordered so that a crash at any point leaves the previous champion whole: a version
only counts once its _COMPLETE marker exists (locally the folder is staged and renamed into
place), and the alias is one object replaced atomically (os.replace locally; a single-object
upload on GCS) after the version it names is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from catdog import storage

COMPLETE_MARKER = "_COMPLETE"
CHAMPION_ALIAS = "champion"
RUN_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_RUN_PART = ".run-"  # <time>-v<N>.run-<run id>.json: the time and version hold no "."


class RegistryError(RuntimeError):
    pass


class ModelRegistry:
    def __init__(self, uri: str):
        self.uri = str(uri).rstrip("/") if storage.is_gcs(str(uri)) else str(Path(uri).expanduser().resolve())

    # -- versions -------------------------------------------------------------------------
    def version_uri(self, version: int) -> str:
        return storage.join(self.uri, "versions", str(version))

    def versions(self) -> list[int]:
        """Complete versions, ascending."""
        found = set()
        prefix = storage.join(self.uri, "versions")
        if not storage.is_gcs(self.uri) and not Path(prefix).is_dir():
            return []
        for path in storage.list_files(prefix):
            parts = path[len(prefix):].strip("/").split("/")
            if len(parts) == 2 and parts[1] == COMPLETE_MARKER and parts[0].isdigit():
                found.add(int(parts[0]))
        return sorted(found)

    def register(self, model_dir: Path, extra_files: dict[str, str] | None = None) -> int:
        """Copy a model folder in as the next version, with `extra_files` (name -> text) beside its
        files (e.g. evaluation.json); returns its number."""
        model_dir = Path(model_dir)
        extra_files = extra_files or {}
        if storage.is_gcs(self.uri):
            version = max(self.versions(), default=0) + 1
            storage.upload_tree(model_dir, self.version_uri(version))
            for name, text in extra_files.items():
                storage.write_text(storage.join(self.version_uri(version), name), text)
            storage.write_text(storage.join(self.version_uri(version), COMPLETE_MARKER), _now())
            return version
        versions_dir = Path(self.uri, "versions")
        versions_dir.mkdir(parents=True, exist_ok=True)
        staging = versions_dir / f".staging-{uuid.uuid4().hex}"
        try:
            shutil.copytree(model_dir, staging)
            for name, text in extra_files.items():
                (staging / name).write_text(text)
            (staging / COMPLETE_MARKER).write_text(_now())
            while True:  # rename is atomic and fails if another writer took the number
                version = max(self.versions() + self._leftover_numbers(versions_dir), default=0) + 1
                try:
                    os.rename(staging, versions_dir / str(version))
                    return version
                except OSError:
                    if not (versions_dir / str(version)).exists():
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _leftover_numbers(versions_dir: Path) -> list[int]:
        """Numbered folders without a marker (a crashed GCS-style write): never reuse them."""
        return [int(p.name) for p in versions_dir.iterdir() if p.name.isdigit()]

    def fetch(self, version: int, cache_dir: Path | None = None) -> Path:
        """A local folder with the version's files (downloaded once for gs:// registries)."""
        if version not in self.versions():
            raise RegistryError(f"version {version} is not a complete version of {self.uri}")
        if not storage.is_gcs(self.uri):
            return Path(self.version_uri(version))
        base = Path(cache_dir or Path(tempfile.gettempdir()) / "catdog-registry-cache")
        local = base / storage.split_gcs(self.uri)[0] / storage.split_gcs(self.uri)[1] / str(version)
        if not (local / COMPLETE_MARKER).exists():
            # download beside the cache entry, then rename: an interrupted download never looks complete
            local.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=local.parent))
            try:
                storage.download_tree(self.version_uri(version), staging)
                if not (staging / COMPLETE_MARKER).exists():
                    raise RegistryError(f"version {version} of {self.uri} lost its {COMPLETE_MARKER} marker")
                if not (local / COMPLETE_MARKER).exists():  # versions are immutable: keep a complete copy
                    if local.exists():  # an incomplete copy: move it aside, never delete a finished one
                        stale = local.with_name(f".{version}-stale-{uuid.uuid4().hex}")
                        with contextlib.suppress(FileNotFoundError):  # another fetch moved it first
                            os.replace(local, stale)
                        shutil.rmtree(stale, ignore_errors=True)
                    try:
                        os.replace(staging, local)
                    except OSError:  # a concurrent fetch put its complete copy there first
                        if not (local / COMPLETE_MARKER).exists():
                            raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return local

    def read_json(self, version: int, name: str) -> dict | None:
        """A JSON file of a version (metadata.json, evaluation.json), None when it has none."""
        uri = storage.join(self.version_uri(version), name)
        return json.loads(storage.read_text(uri)) if storage.exists(uri) else None

    # -- champion alias -------------------------------------------------------------------
    @property
    def alias_uri(self) -> str:
        return storage.join(self.uri, f"{CHAMPION_ALIAS}.json")

    def champion(self) -> dict | None:
        if not storage.exists(self.alias_uri):
            return None
        return json.loads(storage.read_text(self.alias_uri))

    def champion_version(self) -> int | None:
        record = self.champion()
        return int(record["version"]) if record else None

    def set_champion(self, version: int, **details) -> dict:
        if version not in self.versions():
            raise RegistryError(f"cannot promote version {version}: it is not complete in {self.uri}")
        record = {"version": version, "promoted_at": _now(), **details}
        storage.write_text(self.alias_uri, json.dumps(record, indent=1))
        return record

    def resolve(self, ref: str | int) -> int:
        """'champion' or a version number -> a complete version number."""
        if str(ref) == CHAMPION_ALIAS:
            version = self.champion_version()
            if version is None:
                raise RegistryError(f"no champion in {self.uri} yet: run the pipeline first")
            return version
        if not str(ref).isdigit():
            raise RegistryError(f"expected 'champion' or a version number, got {ref!r}")
        if int(ref) not in self.versions():
            raise RegistryError(f"version {ref} not found in {self.uri} (have {self.versions()})")
        return int(ref)

    # -- decision history -----------------------------------------------------------------
    def record_decision(self, decision: dict) -> str:
        """Write one history record, whole (a temporary file and a rename locally; one object upload
        on GCS), named by its time, challenger version and run id (decision["run_id"], when set);
        returns its URI."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        run_id = decision.get("run_id")
        name = f"{stamp}-v{decision.get('challenger_version', 'x')}"
        if run_id is not None:
            name += _RUN_PART + check_run_id(run_id)
        uri = storage.join(self.uri, "history", f"{name}.json")
        storage.write_text(uri, json.dumps(decision, indent=1))
        return uri

    def _history_files(self) -> list[str]:
        """The history records' URIs, oldest first (their names start with the time)."""
        prefix = storage.join(self.uri, "history")
        if not storage.is_gcs(self.uri) and not Path(prefix).is_dir():
            return []
        return [u for u in storage.list_files(prefix) if u.endswith(".json") and not _basename(u).startswith(".")]

    def history(self) -> list[dict]:
        return [json.loads(storage.read_text(u)) for u in self._history_files()]

    def decision_of_run(self, run_id: str) -> dict | None:
        """The champion decision recorded by run `run_id` (the latest, should a run have recorded two:
        a retried step), with "history_record": its URI; None when that run recorded none."""
        check_run_id(run_id)
        mine = [u for u in self._history_files() if _basename(u).partition(_RUN_PART)[2] == f"{run_id}.json"]
        for uri in reversed(mine):
            record = json.loads(storage.read_text(uri))
            if record.get("run_id") == run_id:
                return {**record, "history_record": uri}
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def check_run_id(run_id: str) -> str:
    """`run_id` when it is a usable run id (RUN_ID_PATTERN), else RegistryError saying what one is."""
    if not isinstance(run_id, str) or not re.fullmatch(RUN_ID_PATTERN, run_id):
        raise RegistryError(f"run id {run_id!r}: give 1-128 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")
    return run_id


def decision_of_run(registry_uri: str, run_id: str) -> dict | None:
    """The champion decision run `run_id` recorded in the registry at `registry_uri` (None: none)."""
    return ModelRegistry(registry_uri).decision_of_run(run_id)


def no_decision_reason(run_id: str, registry_uri: str) -> str:
    """What a run that finished without a champion decision says (launchers, `make run`)."""
    return f"the run finished but recorded no champion decision for run {run_id} in {registry_uri}"


def describe_decision(run_id: str, registry_uri: str, decision: dict | None) -> list[str]:
    """`make run`'s lines on run `run_id`'s decision (`decision_of_run`'s answer), or that it made none."""
    if decision is None:
        return [no_decision_reason(run_id, registry_uri)]
    verdict = "PROMOTED" if decision["promoted"] else "not promoted"
    lines = [f"challenger v{decision['challenger_version']} {verdict}: {decision['reason']}",
             f"champion: v{decision['champion_version']} in {decision['registry_uri']}"]
    if decision.get("suspects_uri"):
        lines.append(f"training photos to check: {decision['suspects_uri']} (the feedback app's review queue "
                     "imports the champion's)")
    return lines



def resolve_model_dir(ref: str, registry_uri: str) -> tuple[Path, str]:
    """A model reference -> (local model folder, description).

    ref is a model folder (one holding model.onnx and metadata.json), 'champion', or a version number.
    """
    if Path(ref).is_dir():
        return Path(ref), str(ref)
    if str(ref) != CHAMPION_ALIAS and not str(ref).isdigit():
        raise RegistryError(f"model {ref!r} is neither a model folder nor 'champion' nor a version number")
    registry = ModelRegistry(registry_uri)
    version = registry.resolve(ref)
    return registry.fetch(version), f"{registry.uri} v{version}" + (" (champion)" if ref == CHAMPION_ALIAS else "")
