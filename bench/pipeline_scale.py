"""`make bench-scale N=3000,12000,25000`: the pipeline on N distinct photos: time and memory per step.

    python -m bench.pipeline_scale --source ../shared/data/cats_and_dogs --weights ...h5 --sizes 3000,12000,25000

For each N, N distinct photos are made from the source's (crops at an offset that changes with
each pass over the source, every other pass mirrored, re-encoded at a JPEG quality that varies),
into class folders; then the whole pipeline runs under kfp.local with short training (one frozen
and one fine-tuning epoch by default). A sampler thread reads, every SAMPLE_S, the memory of each
step's process tree (the step's process and its pool workers: the sum of their proportional set
sizes, so shared pages count once, as a container's memory limit sees them): the table gives
each step's wall time and peak RSS, and the size of the shards against the photos'.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil
from PIL import Image, ImageOps

from catdog import REPO_ROOT
from bench.report import machine_description, today, update_section
from bench.pipeline import step_times
from pipelines.config import build_config
from pipelines.local import absolute_local_paths, run_local
from pipelines.training_pipeline import STEPS
from pipelines.words import parse_arguments

SAMPLE_S = 0.2
SHORT_TRAINING = {"frozen_epochs": "1", "finetune_epochs": "1"}


def source_photos(source: Path) -> list[tuple[Path, str]]:
    """(photo, class) for every JPEG under source's class folders (train/ and validation/ too),
    the classes taken in turn, so that any first n photos are balanced."""
    by_class: dict[str, list[Path]] = {}
    for path in sorted(Path(source).rglob("*")):
        if path.suffix.lower() in (".jpg", ".jpeg") and path.is_file():
            by_class.setdefault(path.parent.name.rstrip("s"), []).append(path)  # cats -> cat
    if not by_class:
        raise ValueError(f"no JPEG photo under {source}")
    longest = max(len(paths) for paths in by_class.values())
    return [(paths[k], label) for k in range(longest) for label, paths in sorted(by_class.items()) if k < len(paths)]


def variant(item: tuple[int, int, Path, str, Path]) -> None:
    """Photo number i, made on pass `passes` over the sources: a crop of its source photo at an
    offset set by the pass, mirrored on odd passes, re-encoded at quality 75-94: distinct bytes
    and pixels for every i."""
    i, passes, path, label, out_dir = item
    image = Image.open(path).convert("RGB")
    w, h = image.size
    shrink = 0.02 + 0.01 * (passes % 8)
    dx, dy = int(w * shrink * ((passes // 8) % 3) / 2), int(h * shrink * ((passes // 24) % 3) / 2)
    image = image.crop((dx, dy, w - int(w * shrink) + dx, h - int(h * shrink) + dy))
    if passes % 2:
        image = ImageOps.mirror(image)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=75 + (passes * 7 + i) % 20)
    (out_dir / label / f"{label}.{i}.jpg").write_bytes(buffer.getvalue())


def make_photos(source: Path, n: int, out_dir: Path) -> int:
    """n distinct photos into out_dir/<class>/ (a process pool); returns their total bytes."""
    photos = source_photos(source)
    for label in {label for _, label in photos}:
        (out_dir / label).mkdir(parents=True, exist_ok=True)
    items = [(i, i // len(photos), *photos[i % len(photos)], out_dir) for i in range(n)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(variant, items, chunksize=64))
    return sum(p.stat().st_size for p in out_dir.rglob("*.jpg"))


class StepMemory:
    """Peak RSS of each running step's process tree, sampled in a thread."""

    def __init__(self):
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(SAMPLE_S):
            for child in me.children():
                try:
                    step = _step_of(child.cmdline())
                    if step is None:
                        continue
                    # PSS: pages shared by the step's processes (a forked pool) are counted once
                    rss = sum(p.memory_full_info().pss for p in [child, *child.children(recursive=True)])
                except psutil.Error:
                    continue
                self.peaks[step] = max(self.peaks.get(step, 0), rss)


def _step_of(cmdline: list[str]) -> str | None:
    """The step a kfp.local task process runs: its `--function_to_execute <component>` argument."""
    if "--function_to_execute" not in cmdline[:-1]:
        return None
    name = cmdline[cmdline.index("--function_to_execute") + 1].replace("_", "-")
    return name if name in STEPS else None


def run_size(n: int, args, work: Path) -> dict:
    data = work / f"photos-{n}"
    shutil.rmtree(work, ignore_errors=True)
    began = time.time()
    photo_bytes = make_photos(Path(args.source), n, data)
    print(f"N={n}: made {n} photos ({photo_bytes / 2**20:.0f} MiB) in {time.time() - began:.0f} s", flush=True)
    overrides, _ = parse_arguments(args.overrides)
    config = absolute_local_paths(build_config({"data_uri": str(data), "weights": args.weights,
                                                "registry_uri": str(work / "registry"), **SHORT_TRAINING, **overrides}))
    started = time.time()
    with StepMemory() as memory:
        run_dir = run_local(config, work / "runs")
    total = time.time() - started
    shards = sum(p.stat().st_size for p in (run_dir / "preprocess" / "dataset").glob("*.tfrecord"))
    evaluation = json.loads((run_dir / "evaluate" / "evaluation").read_text())
    return {"n": n, "photo_bytes": photo_bytes, "shard_bytes": shards, "times": step_times(run_dir, started),
            "peaks": memory.peaks, "total": total, "accuracy": evaluation["accuracy"], "config": config}


def render(results: list[dict], command: str) -> str:
    steps = [s for s in STEPS if any(s in r["times"] for r in results)]
    lines = [
        "## Scale (`make bench-scale`)",
        "",
        f"- command: `{command}`",
        f"- machine: {machine_description()}",
        f"- date: {today()}",
        "- photos: N distinct photos made from the shared 3,000 (crops, mirror images, re-encoding); "
        f"training: {SHORT_TRAINING}; peak memory: each step's process tree (pool workers included; "
        f"summed PSS, shared pages once), sampled every {SAMPLE_S} s",
        "",
        "| N | " + " | ".join(f"{s} s" for s in steps) + " | whole run s | s per 1,000 photos | photos MiB | shards MiB (ratio) |",
        "| --- | " + " | ".join("---" for _ in steps) + " | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| {r['n']:,} | " + " | ".join(f"{r['times'].get(s, 0):.0f}" for s in steps)
                     + f" | {r['total']:.0f} | {r['total'] / r['n'] * 1000:.1f} | {r['photo_bytes'] / 2**20:.0f} | "
                     f"{r['shard_bytes'] / 2**20:.0f} ({r['shard_bytes'] / r['photo_bytes']:.2f}x) |")
    lines += ["", "| N | " + " | ".join(f"{s} peak RSS MiB" for s in steps) + " | test accuracy |",
              "| --- | " + " | ".join("---" for _ in steps) + " | --- |"]
    for r in results:
        lines.append(f"| {r['n']:,} | " + " | ".join(f"{r['peaks'].get(s, 0) / 2**20:.0f}" for s in steps)
                     + f" | {r['accuracy']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="folder of labelled photos (class folders)")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--sizes", default="3000,12000,25000")
    parser.add_argument("--work", default=str(REPO_ROOT / "bench_outputs" / "scale"))
    parser.add_argument("overrides", nargs="*", help="pipeline key=value overrides")
    args = parser.parse_args(argv)
    results = []
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
        result = run_size(n, args, Path(args.work))
        results.append(result)
        print(f"N={n}: {result['total']:.0f} s, peaks {({k: round(v / 2**20) for k, v in result['peaks'].items()})} MiB",
              flush=True)
    command = "python -m bench.pipeline_scale " + " ".join(argv if argv is not None else sys.argv[1:])
    markdown = render(results, command)
    print(markdown)
    print(f"wrote {update_section('scale-bench', markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
