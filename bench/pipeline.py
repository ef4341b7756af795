"""`make bench`: the whole local pipeline on real photos, once per seed, beside TensorFlow's
transfer-learning tutorial (bench/tutorial_baseline.py) on the same photos, in one run: wall
times, test accuracy, log loss and ECE per seed, and their median.

    python -m bench.pipeline --data ../shared/data/cats_and_dogs --weights ../shared/weights/...h5 [--no-baseline] [SEEDS=42,1,2] [key=value ...]

SEEDS (default 42,1,2: one run's accuracy on 1,000 test photos moves by about ±0.4 points with the
seed) are the pipeline's `seed` (split, initialisation, augmentation, shuffling); each seed's run
starts from a fresh registry, so every run ends with the same steps (its model promoted and
deployed) and the last seed's model is the champion `make bench-serving` serves. The reported
figures are the medians over the seeds; the time ratio is the median pipeline time over the baseline's.

Steps run one after another under kfp.local, so a step's wall time is the gap between the end of
the previous step (its executor_output.json) and its own; that includes the step's process start.
The baseline runs after the pipeline, in its own process, on the same machine; both are scored on
the data's validation/ folder (the pipeline's test split for a train/validation layout).
"""

from __future__ import annotations

import argparse
import json
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from catdog import REPO_ROOT
from bench.report import machine_description, today, update_section
from pipelines.config import ConfigError, build_config
from pipelines.local import absolute_local_paths, describe_outputs, run_local
from pipelines.words import parse_arguments


def step_times(run_dir: Path, started: float) -> dict[str, float]:
    ends = sorted((p.stat().st_mtime, p.parent.name) for p in run_dir.glob("*/executor_output.json"))
    times, previous = {}, started
    for end, name in ends:
        times[name] = end - previous
        previous = end
    return times


def run_baseline(data: str, weights: str) -> dict:
    """The tutorial baseline in its own process; its result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "baseline.json"
        subprocess.run([sys.executable, "-m", "bench.tutorial_baseline", "--data", data, "--weights", weights,
                        "--json", str(out)], check=True, cwd=REPO_ROOT)
        return json.loads(out.read_text())


DEFAULT_SEEDS = "42,1,2"
TEST_METRICS = ("accuracy", "log_loss", "ece", "precision", "recall", "f1", "auc")


def parse_seeds(value: str) -> list[int]:
    """'42,1,2' -> [42, 1, 2]; ConfigError for an empty list, a non-integer or a repeated seed."""
    words = [w.strip() for w in value.split(",") if w.strip()]
    try:
        seeds = [int(w) for w in words]
    except ValueError:
        raise ConfigError(f"SEEDS: expected comma-separated integers, got {value!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"SEEDS: give one or more distinct seeds, got {value!r}")
    return seeds


def median_row(runs: list[dict]) -> dict:
    """The median over the seeds' runs of each test metric and of the wall time."""
    return {key: statistics.median(run[key] for run in runs) for key in (*TEST_METRICS, "seconds")}


def report_lines(runs: list[dict], baseline: dict | None) -> list[str]:
    """The per-seed, median and baseline part of the section. runs: one dict per seed with "seed",
    "seconds", "steps" ({step: seconds}) and the TEST_METRICS; baseline: tutorial_baseline's JSON."""
    median = median_row(runs)
    seeds = [str(run["seed"]) for run in runs]
    steps = list(dict.fromkeys(step for run in runs for step in run["steps"]))
    lines = [
        "| step | " + " | ".join(f"seed {s} (s)" for s in seeds) + " |",
        "| --- |" + " --- |" * len(runs),
        *[f"| {step} | " + " | ".join(f"{run['steps'].get(step, float('nan')):.1f}" for run in runs) + " |"
          for step in steps],
        "| **whole run** | " + " | ".join(f"**{run['seconds']:.1f}**" for run in runs) + " |",
        "",
        f"Test split ({runs[0]['n']} photos never used in training or early stopping); ECE: expected "
        "calibration error, 10 equal-width confidence bins:",
        "",
        "| seed | accuracy | log loss | ECE | precision | recall | f1 | auc | wall time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *[f"| {run['seed']} | " + " | ".join(f"{run[k]:.4f}" for k in TEST_METRICS) + f" | {run['seconds']:.1f} |"
          for run in runs],
        f"| **median of {len(runs)}** | " + " | ".join(f"**{median[k]:.4f}**" for k in TEST_METRICS)
        + f" | **{median['seconds']:.1f}** |",
        "",
        *[f"Confusion matrix, seed {run['seed']} (rows true, columns predicted; {', '.join(run['class_names'])}): "
          f"{run['confusion_matrix']}  " for run in runs],
    ]
    if baseline is not None:
        lines += [
            "",
            "Beside TensorFlow's transfer-learning tutorial on the same photos, in the same run "
            "([bench/tutorial_baseline.py](../bench/tutorial_baseline.py): its recipe, 160 px, "
            f"{baseline['epochs']} epochs, the alpha 0.35 backbone; trained on train/, scored on validation/):",
            "",
            "| | wall time (s) | test accuracy | test photos |",
            "| --- | --- | --- | --- |",
            f"| this pipeline, all steps (median of {len(runs)} seeds) | {median['seconds']:.1f} | "
            f"{median['accuracy']:.4f} | {runs[0]['n']} |",
            f"| tutorial baseline | {baseline['seconds']:.1f} | {baseline['accuracy']:.4f} | {baseline['n_test']} |",
            "",
            f"- time: pipeline / baseline = **{median['seconds'] / baseline['seconds']:.2f}x** (per seed: "
            + ", ".join(f"{run['seconds'] / baseline['seconds']:.2f}x" for run in runs) + "); accuracy: "
            f"**{(median['accuracy'] - baseline['accuracy']) * 100:+.1f} points**",
        ]
    return lines


def run_seed(config, seed: int, output_root: Path) -> dict:
    """One pipeline run with `seed` from a fresh registry; its times and test metrics."""
    shutil.rmtree(config.registry_uri, ignore_errors=True)
    started = time.time()
    run_dir = run_local(config.model_copy(update={"seed": seed}), output_root / "runs")
    seconds = time.time() - started
    print(describe_outputs(run_dir))
    evaluation = json.loads((run_dir / "evaluate" / "evaluation").read_text())
    return {"seed": seed, "seconds": seconds, "steps": step_times(run_dir, started),
            "report": json.loads((run_dir / "ingest" / "report_json").read_text()),
            **{k: evaluation[k] for k in (*TEST_METRICS, "n", "class_names", "confusion_matrix")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--output-root", default=str(REPO_ROOT / "bench_outputs"))
    parser.add_argument("--no-baseline", action="store_true", help="skip the tutorial baseline")
    parser.add_argument("overrides", nargs="*", help="SEEDS=42,1,2 and pipeline key=value overrides")
    args = parser.parse_args(argv)
    overrides, settings = parse_arguments(args.overrides, {"SEEDS": DEFAULT_SEEDS})
    if "seed" in overrides:
        raise ConfigError("seed: give the seeds as SEEDS=42,1,2 (make bench runs the pipeline once per seed)")
    seeds = parse_seeds(settings["SEEDS"])
    output_root = Path(args.output_root).resolve()
    registry = output_root / "registry"  # fresh for every seed: each run's model becomes champion
    config = absolute_local_paths(build_config(
        {"data_uri": args.data, "weights": args.weights, "registry_uri": str(registry), **overrides}))
    runs = []
    for seed in seeds:
        runs.append(run_seed(config, seed, output_root))
        print(f"seed {seed}: whole run {runs[-1]['seconds']:.1f} s; accuracy {runs[-1]['accuracy']:.4f}", flush=True)
    baseline = None if args.no_baseline else run_baseline(args.data, args.weights)
    command = "make bench  # python -m bench.pipeline --data " + f"{args.data} --weights {args.weights} " + " ".join(args.overrides)
    changed = {k: v for k, v in config.model_dump().items() if k not in ("data_uri", "weights", "registry_uri", "seed")}
    report = runs[0]["report"]
    lines = [
        "## Pipeline (`make bench`)",
        "",
        f"- command: `{command.strip()}`",
        f"- machine: {machine_description()}",
        f"- date: {today()}",
        f"- data: {report['n_images']} images {report['class_counts']}, {report['n_skipped']} skipped",
        f"- seeds: {', '.join(map(str, seeds))} (one whole pipeline run each, one after another)",
        f"- parameters: `{json.dumps(changed)}`",
        "",
        *report_lines(runs, baseline),
    ]
    path = update_section("pipeline-bench", "\n".join(lines))
    median = median_row(runs)
    print(f"median of {len(runs)} seeds: whole run {median['seconds']:.1f} s; accuracy {median['accuracy']:.4f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
