"""`make bench-labels`: how many planted label flips the label-issues step finds, and at what cost.

    python -m bench.labels --data ../shared/data/cats_and_dogs --weights ...h5 [--seeds 0,1,2]

The photos are the source's train/ folder (2,000 on the shared data). For each seed, a seeded
FLIP_FRACTION of their labels is flipped in memory (the files are neither modified nor moved), and
catdog.label_issues runs on them exactly as the step does: find_issues, the JSON list, the HTML
page. A flip is caught when it is among the 2 x flips photos of lowest label quality (the list a
reviewer would get); the rest of that list are false alarms (some may be real mistakes of the
data). cleanlab's own flagged set (how many it estimates are wrong) is reported too.

Features: the frozen phase's own (catdog.train.pooled_features' extractor: the backbone's pooled
features before any training) of each photo, decoded and resized by catdog.preprocessing at the
pipeline's image size, computed once for all seeds. The pipeline's photos are re-encoded as JPEG
(quality 90) in the shards first; this skips that. "features s" is what the frozen phase pays
anyway; "step s" is the label-issues step's own time (heads, cleanlab, duplicates, outliers, page).

Writes the table to docs/BENCHMARKS.md (section label-issues-bench), the last seed's list and page
to bench_outputs/labels/, and prints one JSON object as its last line: flips, caught, listed,
recall (over all seeds), false_alarms, seconds (the step's, mean per seed), features_seconds, runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from catdog import label_issues as li
from bench.report import machine_description, today, update_section
from catdog.labels import DEFAULT_LABEL_MAP, files_below, find_class_folders, parse_label_map
from pipelines.config import PipelineConfig

FLIP_FRACTION = 0.05
SECTION = "label-issues-bench"
OUTPUT_DIR = Path("bench_outputs/labels")


def train_photos(data: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """The source's train photos (its train/ folder when it has one), their labels and class names."""
    layout, splits = find_class_folders(data)
    classes = splits["train" if layout == "train_validation" else None]
    names = parse_label_map(DEFAULT_LABEL_MAP)
    class_names = sorted(names.get(c, c) for c in classes)
    files, labels = [], []
    for folder_name, folder in classes.items():
        for path in files_below(folder):
            files.append(path)
            labels.append(class_names.index(names.get(folder_name, folder_name)))
    return files, np.asarray(labels), class_names


def features_of(files: list[Path], weights: str, config: PipelineConfig) -> np.ndarray:
    """The frozen phase's pooled features of each photo (one backbone pass)."""
    import keras

    from catdog.model import build_model
    from catdog.preprocessing import batch_to_model_input, image_to_pixels

    model = build_model(2, config.image_size, config.backbone_alpha, weights, config.dropout)
    extractor = keras.Model(model.inputs, model.get_layer("dropout").input)  # as catdog.train.pooled_features
    out = []
    for start in range(0, len(files), config.batch_size):
        pixels = [image_to_pixels(p.read_bytes(), config.image_size) for p in files[start:start + config.batch_size]]
        out.append(extractor.predict_on_batch(batch_to_model_input(pixels)))
    return np.concatenate(out)


def run_seed(features: np.ndarray, labels: np.ndarray, files: list[Path], class_names: list[str],
             data: Path, seed: int) -> tuple[dict, list[dict], str]:
    rng = np.random.default_rng(seed)
    n_flips = int(round(FLIP_FRACTION * len(labels)))
    flipped = rng.choice(len(labels), n_flips, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (noisy[flipped] + rng.integers(1, len(class_names), n_flips)) % len(class_names)
    started = time.monotonic()
    findings = li.find_issues(features, noisy, len(class_names), seed)
    photos = [li.Photo(f"file:{i}", "train", "data", str(p.relative_to(data)), str(p)) for i, p in enumerate(files)]
    entries = li.suspects(findings, noisy, photos, class_names)
    page = li.report_html(entries, lambda e: li.thumbnail_jpeg(Path(e["file"]).read_bytes()), len(photos))
    seconds = time.monotonic() - started
    listed = np.argsort(findings.quality, kind="stable")[:2 * n_flips]
    caught = len(set(listed.tolist()) & set(flipped.tolist()))
    row = {"seed": seed, "photos": len(labels), "flips": n_flips, "listed": len(listed), "caught": caught,
           "recall": caught / n_flips, "false_alarms": len(listed) - caught,
           "cleanlab_flagged": int(len(findings.label_issues)),
           "cleanlab_flagged_flips": len(set(findings.label_issues.tolist()) & set(flipped.tolist())),
           "duplicate_pairs": len(findings.duplicates), "outliers": int(len(findings.outliers)),
           "seconds": round(seconds, 1), "parts": findings.seconds}
    return row, entries, page


def table(rows: list[dict], summary: dict, command: str) -> str:
    load = os.getloadavg()[0]
    parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in rows[-1]["parts"].items())
    lines = [
        "## Label issues: planted label flips found (`make bench-labels`)", "",
        f"Command: `{command}`. Machine: {machine_description()}; load average {load:.1f} when it ended "
        f"(other work on the machine inflates the seconds). Date: {today()}.", "",
        f"{FLIP_FRACTION:.0%} of the train photos' labels flipped (seeded, in memory); the label-issues step "
        "(catdog.label_issues: out-of-fold logistic heads on the frozen backbone's pooled features, "
        f"cleanlab ranked by {li.RANKED_BY}) ranks every photo; a flip is caught when it is in the list of "
        "the 2 x flips photos of lowest label quality. False alarms are the rest of that list (some may be "
        "real mistakes of the data). cleanlab flagged: the photos cleanlab's find_label_issues itself calls "
        "wrong (its estimate of how many), and how many of them are flips.", "",
        "| seed | photos | flips | list | caught | recall | false alarms | cleanlab flagged (flips among them) "
        "| near-duplicate pairs | outliers | step s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['seed']} | {r['photos']} | {r['flips']} | {r['listed']} | {r['caught']} | {r['recall']:.1%} "
              f"| {r['false_alarms']} | {r['cleanlab_flagged']} ({r['cleanlab_flagged_flips']}) "
              f"| {r['duplicate_pairs']} | {r['outliers']} | {r['seconds']} |" for r in rows]
    lines += ["", f"Overall: {summary['caught']} of {summary['flips']} flips caught ({summary['recall']:.1%}; goal "
              f">= 80 %), {summary['false_alarms']} false alarms; the step took {summary['seconds']} s a run "
              f"(last seed: {parts}) on top of the features' "
              f"{summary['features_seconds']} s, which the frozen phase computes anyway."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    config = PipelineConfig()
    files, labels, class_names = train_photos(args.data)
    started = time.monotonic()
    features = features_of(files, args.weights, config)
    features_seconds = round(time.monotonic() - started, 1)
    print(f"features of {len(files)} photos: {features_seconds} s", flush=True)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        row, entries, page = run_seed(features, labels, files, class_names, args.data, seed)
        print(json.dumps(row), flush=True)
        rows.append(row)
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUTPUT_DIR / "suspects.json").write_text(json.dumps(entries, indent=1))
    (OUTPUT_DIR / "report.html").write_text(page)
    flips, caught = sum(r["flips"] for r in rows), sum(r["caught"] for r in rows)
    summary = {"flips": flips, "caught": caught, "listed": sum(r["listed"] for r in rows),
               "recall": round(caught / flips, 4), "false_alarms": sum(r["false_alarms"] for r in rows),
               "seconds": round(sum(r["seconds"] for r in rows) / len(rows), 1),
               "features_seconds": features_seconds, "runs": len(rows), "photos": len(files)}
    if not args.no_write:
        command = f"make bench-labels  # python -m bench.labels --data {args.data} --weights {args.weights} " \
                  f"--seeds {args.seeds}"
        print(f"wrote {update_section(SECTION, table(rows, summary, command))}", flush=True)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
