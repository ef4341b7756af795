"""`make bench-active`: which review order teaches the model most per label (a simulated review loop).

    python -m bench.active --data ../shared/data/cats_and_dogs --weights ...h5 [--seeds 0,1,2]
                           [--start 200] [--batch 100] [--rounds 8]

The pool is the source's train/ photos (2,000 on the shared data), the test set its validation/
photos (1,000). Each photo's pooled backbone features are computed once (bench.labels.features_of:
the frozen phase's extractor, as `make bench-labels`) and cached in bench_outputs/active/ (reused
while the data folder, weights, image size and photo lists are the same). For each seed the loop
starts from START labelled pool photos (seeded, balanced over the classes), then, for ROUNDS
rounds, fits the head on the labelled features, scores the test set, and lets each strategy pick
BATCH more pool photos whose (true) labels a reviewer then supplies. The head (head()) is the
label-issues step's: standardised features, L2 logistic regression with its REGULARISATION_C.

Strategies (STRATEGIES), each picking from the unlabelled pool:
- random: a seeded uniform draw (the baseline).
- least_confident: smallest maximum predicted probability first (the app's default review order).
- ood_first: highest out-of-distribution score first: catdog.ood's residual distance
  (fit_statistics + residual_scores), fitted on the labelled features each round, as the model's
  own score is fitted on its training features.
- diverse: as the app's order (feedback/store/queries.py): the CANDIDATES least confident, then
  k-center greedy (catdog.diversity: farthest-first, Euclidean, starting from the labelled set)
  picks BATCH of them, so a batch does not spend its labels on near-copies, in the space the app
  has: the model's embedding (catdog.model.FeatureEmbedding: the features minus the class means'
  mean on the top EMBEDDING_DIMS principal directions of the within-class covariance), fitted
  here on the labelled features each round as the model's is on its training features.
"Training suspects first" (issue 21 item 2) orders the app's queue by the label-issues step's
findings
on training photos, whose labels are given but maybe wrong; this loop has no wrong labels to find,
so it is not simulated.

Writes bench_outputs/active/accuracy.png (median test accuracy against labels used, one line per
strategy), bench_outputs/active/runs.json (every seed), the table to docs/BENCHMARKS.md (section
active-bench; --no-write skips it), and prints one JSON object as its last line:
{"labels_used": [...], "accuracy": {strategy: [median test accuracy after each round]}, "seeds",
"least_confident_minus_random": [...], "all_labelled" (the head on the whole pool), ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.report import machine_description, today, update_section
from catdog.diversity import k_center_greedy
from catdog.ood import EMBEDDING_DIMS

SECTION = "active-bench"
OUTPUT_DIR = Path("bench_outputs/active")
START, BATCH, ROUNDS, CANDIDATES = 200, 100, 8, 500
STRATEGIES = ("random", "least_confident", "ood_first", "diverse")


# -- the strategies: (pool probabilities, pool features, labelled features, labelled labels, n_classes,
#    how many, rng) -> positions in the pool ---------------------------------------------------------
def least_confident(probabilities: np.ndarray, k: int) -> np.ndarray:
    """The k rows of smallest maximum probability (ties: lower row first)."""
    return np.argsort(probabilities.max(axis=1), kind="stable")[:k]


def pick(strategy: str, probabilities: np.ndarray, pool_x: np.ndarray, labelled_x: np.ndarray,
         labelled_y: np.ndarray, n_classes: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (into the unlabelled pool) of the k photos `strategy` sends to review next."""
    k = min(k, len(pool_x))
    if strategy == "random":
        return rng.choice(len(pool_x), k, replace=False)
    if strategy == "least_confident":
        return least_confident(probabilities, k)
    if strategy == "ood_first":
        from catdog.ood import fit_statistics, residual_scores

        means, basis = fit_statistics(labelled_x, labelled_y, n_classes)
        return np.argsort(-residual_scores(pool_x, means, basis), kind="stable")[:k]
    if strategy == "diverse":
        from catdog.ood import fit_statistics

        means, basis = fit_statistics(labelled_x, labelled_y, n_classes)
        centre, basis = means.mean(axis=0), basis[:, :EMBEDDING_DIMS]
        candidates = least_confident(probabilities, max(CANDIDATES, k))
        return candidates[k_center_greedy((pool_x[candidates] - centre) @ basis, (labelled_x - centre) @ basis, k)]
    raise ValueError(f"unknown strategy {strategy!r}: one of {', '.join(STRATEGIES)}")


def balanced_start(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n pool positions, as equal a share of each class as the pool allows (seeded)."""
    classes = np.unique(labels)
    share = [n // len(classes) + (i < n % len(classes)) for i in range(len(classes))]
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), s, replace=False) for c, s in zip(classes, share)])


def head():
    """The label-issues step's head (catdog.label_issues.out_of_fold_probabilities builds the same)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from catdog.label_issues import REGULARISATION_C

    return make_pipeline(StandardScaler(), LogisticRegression(C=REGULARISATION_C, max_iter=2000))


def simulate(pool_x: np.ndarray, pool_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, strategy: str,
             seed: int, start: int = START, batch: int = BATCH, rounds: int = ROUNDS,
             make_head: Callable | None = None) -> tuple[list[int], list[float]]:
    """(labels used, test accuracy) at the start and after each round of `strategy`'s review loop."""
    make_head = make_head or head
    n_classes = int(max(pool_y.max(), test_y.max())) + 1
    rng = np.random.default_rng(seed)
    labelled = np.zeros(len(pool_y), bool)
    labelled[balanced_start(pool_y, start, rng)] = True
    used, accuracy = [], []
    for round_ in range(rounds + 1):
        model = make_head().fit(pool_x[labelled], pool_y[labelled])
        used.append(int(labelled.sum()))
        accuracy.append(float(np.mean(model.predict(test_x) == test_y)))
        if round_ == rounds or labelled.all():
            break
        rest = np.flatnonzero(~labelled)
        chosen = pick(strategy, model.predict_proba(pool_x[rest]), pool_x[rest], pool_x[labelled], pool_y[labelled],
                      n_classes, batch, rng)
        labelled[rest[chosen]] = True
    return used, accuracy


def run(pool_x, pool_y, test_x, test_y, seeds: list[int], start: int = START, batch: int = BATCH,
        rounds: int = ROUNDS, strategies=STRATEGIES) -> dict:
    """Every strategy over every seed: the summary (medians per round) with the runs in "runs"."""
    runs, used = [], None
    for seed in seeds:
        for strategy in strategies:
            used, accuracy = simulate(pool_x, pool_y, test_x, test_y, strategy, seed, start, batch, rounds)
            runs.append({"seed": seed, "strategy": strategy, "labels_used": used, "accuracy": accuracy})
            print(json.dumps(runs[-1]), flush=True)
    medians = {s: [round(float(np.median([r["accuracy"][i] for r in runs if r["strategy"] == s])), 4)
                   for i in range(len(used))] for s in strategies}
    everything = head().fit(pool_x, pool_y)  # the ceiling: every pool photo labelled
    summary = {"labels_used": used, "accuracy": medians, "seeds": seeds, "pool": len(pool_y), "test": len(test_y),
               "start": start, "batch": batch, "rounds": rounds,
               "all_labelled": round(float(np.mean(everything.predict(test_x) == test_y)), 4), "runs": runs}
    if "random" in medians and "least_confident" in medians:
        summary["least_confident_minus_random"] = [round(a - b, 4) for a, b in
                                                   zip(medians["least_confident"], medians["random"])]
    return summary


# -- the real photos --------------------------------------------------------------------------------
def photos_of(data: Path, split: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """The photos of one split folder of a train/validation source, their labels and class names."""
    from catdog.labels import DEFAULT_LABEL_MAP, files_below, find_class_folders, parse_label_map

    layout, splits = find_class_folders(data)
    if layout != "train_validation":
        raise SystemExit(f"{data}: expected train/ and validation/ folders (the pool and the test set)")
    names = parse_label_map(DEFAULT_LABEL_MAP)
    classes = splits[split]
    class_names = sorted(names.get(c, c) for c in classes)
    files, labels = [], []
    for folder_name, folder in classes.items():
        for path in files_below(folder):
            files.append(path)
            labels.append(class_names.index(names.get(folder_name, folder_name)))
    return files, np.asarray(labels), class_names


def cached_features(data: Path, weights: str, cache: Path) -> tuple[dict, float]:
    """{"pool_x", "pool_y", "test_x", "test_y"} and the seconds the features took (0 when read from
    `cache`, which holds them with the data folder, weights, image size and file lists they came from)."""
    from bench.labels import features_of
    from pipelines.config import PipelineConfig

    config = PipelineConfig()
    pool_files, pool_y, classes = photos_of(data, "train")
    test_files, test_y, test_classes = photos_of(data, "validation")
    if classes != test_classes:
        raise SystemExit(f"train/ has classes {classes}, validation/ {test_classes}")
    key = json.dumps({"data": str(data.resolve()), "weights": str(Path(weights).resolve()),
                      "image_size": config.image_size, "alpha": config.backbone_alpha,
                      "pool": [str(p) for p in pool_files], "test": [str(p) for p in test_files]})
    if cache.exists():
        stored = np.load(cache)
        if str(stored["key"]) == key:
            return {name: stored[name] for name in ("pool_x", "pool_y", "test_x", "test_y")}, 0.0
    started = time.monotonic()
    arrays = {"pool_x": features_of(pool_files, weights, config), "pool_y": pool_y,
              "test_x": features_of(test_files, weights, config), "test_y": test_y}
    seconds = round(time.monotonic() - started, 1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, key=np.asarray(key), **arrays)
    return arrays, seconds


def plot(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy, accuracy in summary["accuracy"].items():
        ax.plot(summary["labels_used"], accuracy, marker="o", label=strategy)
    ax.set_xlabel("labelled pool photos")
    ax.set_ylabel(f"test accuracy (median of {len(summary['seeds'])} seeds)")
    ax.set_title(f"Review order: {summary['pool']} pool photos, {summary['test']} test photos")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def table(summary: dict, command: str, features_seconds: float, seconds: float) -> str:
    strategies = list(summary["accuracy"])
    gains = summary.get("least_confident_minus_random", [])
    lines = [
        "## Review order: accuracy per label (`make bench-active`)", "",
        f"Command: `{command}`. Machine: {machine_description()}; load average {os.getloadavg()[0]:.1f} when it "
        f"ended. Date: {today()}. Features: {features_seconds} s (0: read from the cache), the loop {seconds} s.", "",
        f"A simulated review loop (bench/active.py): the {summary['pool']} train photos are the pool, the "
        f"{summary['test']} validation photos the test set. It starts from {summary['start']} labelled pool "
        f"photos (seeded, balanced), and each round the strategy picks {summary['batch']} more, whose true labels "
        "are added; the label-issues step's head (standardised pooled backbone features, L2 logistic regression) "
        "is refitted on the labelled features and scored on the test set. Test accuracy, median of seeds "
        f"{', '.join(map(str, summary['seeds']))}. random: seeded draw; least_confident (the app's default): "
        "smallest top probability; ood_first: highest catdog.ood residual score, fitted on the labelled features "
        f"each round; diverse (the app's order): the {CANDIDATES} least confident, then k-center greedy on the "
        f"model's {EMBEDDING_DIMS}-dimension embedding (the top principal directions of the labelled features). "
        "Training suspects first (the label-issues step's findings) is not simulated: the loop has no wrong "
        "labels to find.", "",
        "| labels used | " + " | ".join(strategies) + (" | least_confident - random |" if gains else " |"),
        "|---:|" + "---:|" * len(strategies) + ("---:|" if gains else ""),
    ]
    for i, used in enumerate(summary["labels_used"]):
        cells = [f"{summary['accuracy'][s][i]:.1%}" for s in strategies]
        if gains:
            cells.append(f"{gains[i] * 100:+.1f} points")
        lines.append(f"| {used} | " + " | ".join(cells) + " |")
    if gains:
        after = gains[1:] or gains
        lines += ["", f"least_confident minus random after the rounds (medians of the seeds): mean "
                      f"{np.mean(after) * 100:+.1f} points, at {summary['labels_used'][-1]} labels "
                      f"{gains[-1] * 100:+.1f} points; one test photo is {100 / summary['test']:.1f} points. "
                      f"Per seed, the mean over the rounds: {paired_gains(summary)}."]
    lines += ["", f"The head on all {summary['pool']} pool photos labelled: {summary['all_labelled']:.1%} (the ceiling "
                  "the strategies approach)."]
    return "\n".join(lines)


def paired_gains(summary: dict, strategy: str = "least_confident", baseline: str = "random") -> str:
    """Per seed: `strategy`'s test accuracy minus `baseline`'s, averaged over the rounds after the start,
    and in how many of those rounds it was ahead, level and behind."""
    parts = []
    for seed in summary["seeds"]:
        ours, theirs = ([r["accuracy"][1:] or r["accuracy"] for r in summary["runs"]
                         if r["seed"] == seed and r["strategy"] == name][0] for name in (strategy, baseline))
        diff = np.asarray(ours) - np.asarray(theirs)
        parts.append(f"seed {seed} {diff.mean() * 100:+.2f} points (ahead in {int((diff > 1e-9).sum())}, level "
                     f"{int((np.abs(diff) <= 1e-9).sum())}, behind {int((diff < -1e-9).sum())} of {len(diff)} rounds)")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--start", type=int, default=START)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--output", type=Path, default=OUTPUT_DIR)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    arrays, features_seconds = cached_features(args.data, args.weights, args.output / "features.npz")
    print(f"features of {len(arrays['pool_y'])} pool and {len(arrays['test_y'])} test photos: "
          f"{features_seconds} s{' (cached)' if not features_seconds else ''}", flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.monotonic()
    summary = run(arrays["pool_x"], arrays["pool_y"], arrays["test_x"], arrays["test_y"], seeds,
                  args.start, args.batch, args.rounds)
    seconds = round(time.monotonic() - started, 1)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "runs.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {plot(summary, args.output / 'accuracy.png')}", flush=True)
    if not args.no_write:
        command = (f"make bench-active  # python -m bench.active --data {args.data} --weights {args.weights} "
                   f"--seeds {args.seeds} --start {args.start} --batch {args.batch} --rounds {args.rounds}")
        print(f"wrote {update_section(SECTION, table(summary, command, features_seconds, seconds))}", flush=True)
    summary.pop("runs")
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
