"""`make bench`: the whole local pipeline on real photos beside TensorFlow's transfer-learning
tutorial (bench/tutorial_baseline.py) on the same photos, in one run: wall times and test accuracy.

    python -m bench.pipeline --data ../shared/data/cats_and_dogs --weights ../shared/weights/...h5 [--no-baseline] [key=value ...]

Steps run one after another under kfp.local, so a step's wall time is the gap between the end of
the previous step (its executor_output.json) and its own; that includes the step's process start.
The baseline runs after the pipeline, in its own process, on the same machine; both are scored on
the data's validation/ folder (the pipeline's test split for a train/validation layout).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from catdog import REPO_ROOT
from bench.report import machine_description, today, update_section
from pipelines.config import build_config
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--output-root", default=str(REPO_ROOT / "bench_outputs"))
    parser.add_argument("--no-baseline", action="store_true", help="skip the tutorial baseline")
    parser.add_argument("overrides", nargs="*", help="pipeline key=value overrides")
    args = parser.parse_args(argv)
    overrides, _ = parse_arguments(args.overrides)
    output_root = Path(args.output_root).resolve()
    registry = output_root / "registry"
    shutil.rmtree(registry, ignore_errors=True)  # a fresh registry: the run's model becomes champion
    config = absolute_local_paths(build_config(
        {"data_uri": args.data, "weights": args.weights, "registry_uri": str(registry), **overrides}))
    started = time.time()
    run_dir = run_local(config, output_root / "runs")
    total = time.time() - started
    print(describe_outputs(run_dir))
    times = step_times(run_dir, started)
    evaluation = json.loads((run_dir / "evaluate" / "evaluation").read_text())
    report = json.loads((run_dir / "ingest" / "report_json").read_text())
    baseline = None if args.no_baseline else run_baseline(args.data, args.weights)
    command = "make bench  # python -m bench.pipeline --data " + f"{args.data} --weights {args.weights} " + " ".join(args.overrides)
    changed = {k: v for k, v in config.model_dump().items() if k not in ("data_uri", "weights", "registry_uri")}
    lines = [
        "## Pipeline (`make bench`)",
        "",
        f"- command: `{command.strip()}`",
        f"- machine: {machine_description()}",
        f"- date: {today()}",
        f"- data: {report['n_images']} images {report['class_counts']}, {report['n_skipped']} skipped",
        f"- parameters: `{json.dumps(changed)}`",
        "",
        "| step | wall time (s) |",
        "| --- | --- |",
        *[f"| {name} | {seconds:.1f} |" for name, seconds in times.items()],
        f"| **whole run** | **{total:.1f}** ({total / 60:.1f} min) |",
        "",
        f"Test split ({evaluation['n']} photos never used in training or early stopping):",
        "",
        "| accuracy | precision | recall | f1 | auc |",
        "| --- | --- | --- | --- | --- |",
        "| " + " | ".join(f"{evaluation[k]:.4f}" for k in ("accuracy", "precision", "recall", "f1", "auc")) + " |",
        "",
        f"Confusion matrix (rows true, columns predicted; {', '.join(evaluation['class_names'])}): "
        f"{evaluation['confusion_matrix']}",
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
            f"| this pipeline, all steps | {total:.1f} | {evaluation['accuracy']:.4f} | {evaluation['n']} |",
            f"| tutorial baseline | {baseline['seconds']:.1f} | {baseline['accuracy']:.4f} | {baseline['n_test']} |",
            "",
            f"- time: pipeline / baseline = **{total / baseline['seconds']:.2f}x**; accuracy: "
            f"**{(evaluation['accuracy'] - baseline['accuracy']) * 100:+.1f} points**",
        ]
    path = update_section("pipeline-bench", "\n".join(lines))
    print(f"whole run {total:.1f} s; accuracy {evaluation['accuracy']:.4f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
