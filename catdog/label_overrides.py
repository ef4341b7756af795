"""Label overrides: people's verdicts on training photos, which the next ingest applies.

The feedback app reviews the photos the label-issues step flagged (catdog/label_issues.py) and
publishes the verdicts as ONE file, <feedback_uri>/label-overrides.json (OVERRIDES_FILE; written
whole: a temporary file and a rename locally, one object upload on GCS):

    {"format": 1, "written_at": "<UTC ISO time>",
     "overrides": [{"sha256": "...", "source": "cat/cat.12.jpg", "given_label": "cat",
                    "label": "dog" | "<another class>" | "neither",
                    "reviewers": [{"by": "ana", "label": "dog", "at": "..."}],
                    "flagged_by_run": "<run id>", "updated_at": "..."}]}

Ingest (catdog.ingest.ingest_dataset, when feedback_uri is set) reads it and applies each override
by sha256 to the photo it kept: another class relabels the photo IN THE SNAPSHOT (its copy moves
from images/<given>/ to images/<label>/; the user's data files are never modified or moved),
"neither" leaves the photo out, the given label itself changes nothing (counted as confirmed).
apply_overrides returns what it did for the dataset report: counts, each photo (source, given ->
new label or left out), and the overrides that matched no kept photo (the photo is gone from the
data, was skipped, or the file names another data set) or whose label is no class of the data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from catdog import storage
from catdog.ingest_manifest import ImageRecord

OVERRIDES_FILE = "label-overrides.json"
FORMAT = 1
NEITHER = "neither"  # the verdict "neither a cat nor a dog" (the feedback app's NEITHER)


class OverridesError(ValueError):
    """A label-overrides file that cannot be read: names the file and what is wrong."""


@dataclass(frozen=True)
class Override:
    sha256: str
    label: str
    source: str = ""
    given_label: str = ""
    flagged_by_run: str | None = None


def overrides_uri(feedback_uri: str) -> str:
    return storage.join(feedback_uri, OVERRIDES_FILE)


def write_overrides(feedback_uri: str, entries: list[dict]) -> str:
    """Write the file whole (catdog.storage.write_text: atomic locally); returns its URI."""
    document = {"format": FORMAT, "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "overrides": entries}
    uri = overrides_uri(feedback_uri)
    storage.write_text(uri, json.dumps(document, indent=1))
    return uri


def parse_overrides(text: str, where: str = OVERRIDES_FILE) -> dict[str, Override]:
    """sha256 -> Override; OverridesError when the text is not such a file."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OverridesError(f"{where} is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("overrides"), list):
        raise OverridesError(f'{where}: expected {{"overrides": [...]}}')
    found: dict[str, Override] = {}
    for i, entry in enumerate(document["overrides"]):
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and isinstance(entry.get("label"), str)
                and len(entry["sha256"]) == 64 and entry["label"]):
            raise OverridesError(f"{where}: override {i} needs a 64-character sha256 and a label")
        found[entry["sha256"]] = Override(entry["sha256"], entry["label"], str(entry.get("source") or ""),
                                          str(entry.get("given_label") or ""), entry.get("flagged_by_run"))
    return found


def read_overrides(feedback_uri: str) -> tuple[str, dict[str, Override]]:
    """(the file's URI, its overrides); no overrides when the file does not exist (yet)."""
    uri = overrides_uri(feedback_uri)
    if not storage.exists(uri):
        return uri, {}
    return uri, parse_overrides(storage.read_text(uri), uri)


def apply_overrides(images: list[ImageRecord], output_dir: Path, overrides: dict[str, Override],
                    class_names: list[str], uri: str) -> tuple[list[ImageRecord], dict]:
    """The kept photos with the overrides applied (files moved or removed inside output_dir, the
    snapshot), and the report (module docstring)."""
    kept: list[ImageRecord] = []
    photos: list[dict] = []
    matched: set[str] = set()
    for record in images:
        override = overrides.get(record.sha256)
        if override is None:
            kept.append(record)
            continue
        matched.add(record.sha256)
        item = {"sha256": record.sha256, "source": record.source, "given_label": record.label, "label": override.label,
                "flagged_by_run": override.flagged_by_run}
        if override.label == NEITHER:
            (Path(output_dir) / record.file).unlink()
            photos.append({**item, "outcome": "left out"})
        elif override.label == record.label:
            kept.append(record)
            photos.append({**item, "outcome": "confirmed"})
        elif override.label in class_names:
            file = f"images/{override.label}/{Path(record.file).name}"
            (Path(output_dir) / file).parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(output_dir) / record.file, Path(output_dir) / file)
            kept.append(replace(record, label=override.label, file=file))
            photos.append({**item, "outcome": "relabelled"})
        else:
            kept.append(record)
            photos.append({**item, "outcome": f"not applied: {override.label!r} is not a class of the data"})
    unmatched = [{"sha256": o.sha256, "source": o.source, "given_label": o.given_label, "label": o.label}
                 for sha, o in sorted(overrides.items()) if sha not in matched]
    counts = {outcome: sum(p["outcome"] == outcome for p in photos) for outcome in ("relabelled", "left out", "confirmed")}
    report = {"uri": uri, "n_overrides": len(overrides), **{k.replace(" ", "_"): v for k, v in counts.items()},
              "not_applied": len(photos) - sum(counts.values()), "unmatched": unmatched,
              "photos": sorted(photos, key=lambda p: p["source"])}
    return kept, report


def overrides_markdown(report: dict) -> list[str]:
    """The dataset report's section on the overrides applied (lines of markdown)."""
    lines = ["", f"## Label overrides ({report['n_overrides']})", "",
             f"From `{report['uri']}`: {report['relabelled']} relabelled, {report['left_out']} left out (neither), "
             f"{report['confirmed']} confirmed, {report['not_applied']} not applied, "
             f"{len(report['unmatched'])} matched no photo.", ""]
    if report["photos"]:
        lines += ["| photo | given | now |", "| --- | --- | --- |"]
        lines += [f"| `{p['source']}` | {p['given_label']} | "
                  f"{p['label'] if p['outcome'] in ('relabelled', 'confirmed') else p['outcome']} |" for p in report["photos"]]
    if report["unmatched"]:
        lines += ["", "Overrides that matched no photo kept by this ingest:", "", "| photo | sha256 | label |",
                  "| --- | --- | --- |"]
        lines += [f"| `{u['source']}` | `{u['sha256'][:16]}` | {u['label']} |" for u in report["unmatched"]]
    return lines
