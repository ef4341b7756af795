"""`make bench-serving`: our KServe predictor vs the naive Keras baseline, side by side.

    python -m bench.serving (--model-dir DIR | --registry URI [--model champion|N]) --images FOLDER
                            [--concurrency 1,4,16] [--duration 10] [--max-requests 20000]
                            [--output docs/BENCHMARKS.md] [--json results.json]

Both servers run as their own processes on 127.0.0.1 and load the same model folder (ours its
model.onnx, the baseline its model.keras). The same client (bench.load_client: asyncio, keep-alive,
closed loop, one V1 request per image, every level bounded by --duration and --max-requests) sends
the same photos at each concurrency level. Reported: p50/p99 latency, requests/s, errors, the
server's peak resident memory (VmHWM from /proc), whether it mapped TensorFlow, and whether the
labels agree with the in-process ONNX predictor that `make evaluate` uses.

Ours is also measured, in the same run and at the same levels, on V1 :explain (no overlay) and on
V2 in the binary tensor extension (raw JPEG bytes in, binary outputs back), one photo per request:
the report gives explain p50 / predict p50 (target <= 1.5x) and V2 binary / V1 JSON throughput.

The Markdown section goes between <!-- serving-bench:start/end --> markers in --output (replaced
if present, appended otherwise; bench.report.update_section).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from catdog import REPO_ROOT
from bench.report import machine_description, update_section
from bench.load_client import LoadResult, photo_files, prepare, prepare_v2_binary, run_load, v1_body

SECTION = "serving-bench"
LOOPBACK = "127.0.0.1"
TARGET_P50_MS, TARGET_SPEEDUP, TARGET_RSS_MB, TARGET_EXPLAIN_RATIO = 10.0, 10.0, 300.0, 1.5
PREDICT, EXPLAIN, V2_INFER = "/v1/models/catdog:predict", "/v1/models/catdog:explain", "/v2/models/catdog/infer"
EXPLAIN_MODE, V2_BINARY_MODE = "V1 :explain", "V2 binary"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def load_images(folder: Path, limit: int) -> list[tuple[str, bytes]]:
    """Up to `limit` decodable photos, spread evenly over the folder's sorted file list."""
    from catdog.preprocessing import InvalidImageError, read_header

    images = []
    for path in photo_files(folder, limit):
        data = path.read_bytes()
        try:
            read_header(data)
        except InvalidImageError:
            continue
        images.append((str(path.relative_to(folder)), data))
    return images


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak) of a process, in kB."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return values


def maps_tensorflow(pid: int) -> bool | None:
    try:
        return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


@dataclass
class ServerRun:
    name: str
    command: list[str]
    levels: list[LoadResult] = field(default_factory=list)
    peak_rss_mb: float = float("nan")
    startup_s: float = float("nan")
    tensorflow_loaded: bool | None = None
    labels: dict[str, str] = field(default_factory=dict)
    modes: dict[str, list[LoadResult]] = field(default_factory=dict)  # ours: explain and V2 binary levels
    v2_labels: dict[str, str] = field(default_factory=dict)
    explain_method: str = ""


class Server:
    """A server subprocess on a free loopback port, stopped on exit; its output goes to a log file."""

    def __init__(self, command: list[str], port: int, ready_path: str, log_path: Path, timeout_s: float):
        self.command, self.port, self.ready_path = command, port, ready_path
        self.log_path, self.timeout_s = log_path, timeout_s
        self.url = f"http://{LOOPBACK}:{port}"

    def __enter__(self):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
        self.log = open(self.log_path, "w")
        started = time.perf_counter()
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = started + self.timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"error: {shlex.join(self.command)} exited ({self.process.returncode}); "
                                 f"see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as response:
                    if response.status == 200:
                        self.startup_s = time.perf_counter() - started
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.__exit__(None, None, None)
        raise SystemExit(f"error: {shlex.join(self.command)} not ready after {self.timeout_s:.0f} s; see {self.log_path}")

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


def explain_method(url: str, image: bytes) -> str:
    """What :explain answers for one photo, e.g. "grad-cam 8x8" (or "occlusion 8x8" for an old export)."""
    request = urllib.request.Request(url + EXPLAIN, v1_body([image]), {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        explanation = json.loads(response.read())["predictions"][0]["explanation"]
    return f"{explanation['method']} {'x'.join(str(n) for n in explanation['grid'])}"


def load_levels(name: str, url: str, requests, args) -> list[LoadResult]:
    """A warm-up, then one closed-loop run per concurrency level, printed as it goes."""
    run_load(url, requests, 1, args.warmup, args.max_requests)  # warm-up (JIT, caches, pools)
    levels = []
    for concurrency in args.concurrency:
        result = run_load(url, requests, concurrency, args.duration, args.max_requests)
        levels.append(result)
        summary = result.summary()
        print(f"  {name:<20} c={concurrency:<3} {summary['requests']:>6} req  {summary['errors']} err  "
              f"p50 {summary['p50_ms']:7.1f} ms  p99 {summary['p99_ms']:7.1f} ms  {summary['rps']:7.1f} req/s"
              + (f"  e.g. {result.error_samples[0]}" if result.error_samples else ""), flush=True)
    return levels


def labelled(url: str, requests, args) -> dict[str, str]:
    """Each photo's label, every request sent once."""
    return run_load(url, requests, 1, max(60.0, args.duration), len(requests)).labels

def measure(run: ServerRun, server: Server, images, args, all_modes: bool) -> None:
    """V1 JSON predict levels; with all_modes also :explain and V2 binary (raw bytes) levels."""
    requests = [prepare(server.url, PREDICT, v1_body([data]), 1, key) for key, data in images]
    run.startup_s = server.startup_s
    run_load(server.url, requests, 1, args.warmup, args.max_requests)  # warm-up before the labels
    run.labels = labelled(server.url, requests, args)
    run.levels = load_levels(f"{run.name} V1 predict", server.url, requests, args)
    if all_modes:
        run.explain_method = explain_method(server.url, images[0][1])
        explain = [prepare(server.url, EXPLAIN, v1_body([data]), 1, key) for key, data in images]
        run.modes[EXPLAIN_MODE] = load_levels(f"{run.name} {EXPLAIN_MODE}", server.url, explain, args)
        binary = [prepare_v2_binary(server.url, V2_INFER, [data], key) for key, data in images]
        run.v2_labels = labelled(server.url, binary, args)
        run.modes[V2_BINARY_MODE] = load_levels(f"{run.name} {V2_BINARY_MODE}", server.url, binary, args)
    status = proc_status(server.process.pid)
    run.peak_rss_mb = status.get("VmHWM", 0) / 1024
    run.tensorflow_loaded = maps_tensorflow(server.process.pid)


def reference_labels(model_dir: Path, images) -> dict[str, str]:
    """Labels from catdog.onnx_predictor.OnnxPredictor in this process: what `make evaluate` computes."""
    from catdog.onnx_predictor import OnnxPredictor

    predictor = OnnxPredictor(model_dir)
    return {key: predictor.class_names[int(predictor.predict_bytes([data])[0].argmax())] for key, data in images}


def agreement(a: dict[str, str], b: dict[str, str]) -> str:
    keys = sorted(set(a) & set(b))
    same = sum(a[k] == b[k] for k in keys)
    return f"{same}/{len(keys)}"


def compare(levels: list[LoadResult], base_levels: list[LoadResult], value, unit: str) -> tuple[str, dict[int, float]]:
    """`value` of each level against the base's at the same concurrency: the text and the ratios."""
    parts, ratios = [], {}
    for result in levels:
        base = next((b for b in base_levels if b.concurrency == result.concurrency), None)
        if base is None or not value(base):
            continue
        ratios[result.concurrency] = value(result) / value(base)
        parts.append(f"{value(result):.1f} vs {value(base):.1f} {unit} = {ratios[result.concurrency]:.2f}x at "
                     f"{result.concurrency} client{'' if result.concurrency == 1 else 's'}")
    return "; ".join(parts), ratios


def mode_lines(ours: ServerRun) -> tuple[list[str], list[str]]:
    """The table of ours by request kind, and its checks (explain vs predict, V2 binary vs V1 JSON)."""
    lines = ["", f"Ours by request kind, one photo per request, same photos and levels (`:explain`: "
             f"{ours.explain_method}, no overlay; V2 binary: raw JPEG bytes in the binary tensor extension, "
             "binary outputs back):", "",
             "| request | clients | requests | errors | p50 ms | p99 ms | req/s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for mode, levels in {"V1 JSON predict": ours.levels, **ours.modes}.items():
        for result in levels:
            s = result.summary()
            lines.append(f"| {mode} | {s['concurrency']} | {s['requests']} | {s['errors']} | {s['p50_ms']:.1f} | "
                         f"{s['p99_ms']:.1f} | {s['rps']:.1f} |")
    text, ratios = compare(ours.modes[EXPLAIN_MODE], ours.levels, lambda r: r.percentile(50), "ms")
    missed = [c for c, ratio in ratios.items() if ratio > TARGET_EXPLAIN_RATIO]
    checks = [f"explain p50 vs predict p50: {text} (target <= {TARGET_EXPLAIN_RATIO:g}x): "
              + (f"MISSED at {', '.join(map(str, missed))} clients" if missed else "met" if ratios else "not measured")]
    text, _ = compare(ours.modes[V2_BINARY_MODE], ours.levels, lambda r: r.throughput, "req/s")
    checks.append(f"V2 binary vs V1 JSON throughput: {text}")
    checks.append(f"V2 binary labels equal V1 JSON's for {agreement(ours.v2_labels, ours.labels)} photos")
    return lines, checks


def render(args, model_desc: str, images, runs: list[ServerRun], reference: dict[str, str], command: str) -> str:
    ours = runs[0]
    baseline = runs[1] if len(runs) > 1 else None
    sizes = sorted(len(d) for _, d in images)
    lines = [
        "## Serving (`make bench-serving`)",
        "",
        f"- command: `{command}`",
        f"- machine: {machine_description()}; client and server share it",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- model: {model_desc}",
        f"- images: {len(images)} photos from `{args.images}` (median {sizes[len(sizes) // 2] / 1024:.0f} KiB), "
        "one V1 request per photo (`{\"instances\": [{\"image_bytes\": {\"b64\": ...}}]}`)",
        f"- client: `bench.load_client` (asyncio, keep-alive, closed loop); each level {args.duration:g} s "
        f"(at most {args.max_requests} requests) after a {args.warmup:g} s warm-up",
        f"- ours: `{shlex.join(ours.command[1:])}`",
    ]
    if baseline:
        lines.append(f"- baseline: `{shlex.join(baseline.command[1:])}` (FastAPI + Keras `model.predict` per request)")
    lines += ["", "| server | clients | requests | errors | p50 ms | p99 ms | req/s | peak RSS MB | TensorFlow loaded |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        for result in run.levels:
            s = result.summary()
            lines.append(f"| {run.name} | {s['concurrency']} | {s['requests']} | {s['errors']} | {s['p50_ms']:.1f} | "
                         f"{s['p99_ms']:.1f} | {s['rps']:.1f} | {run.peak_rss_mb:.0f} | "
                         f"{'yes' if run.tensorflow_loaded else 'no'} |")
    table, mode_checks = mode_lines(ours)
    lines += table + [""]
    checks = []
    first = next((r for r in ours.levels if r.concurrency == 1), None)
    if first:
        checks.append(f"p50 at 1 client {first.percentile(50):.1f} ms (target < {TARGET_P50_MS:g}): "
                      f"{'met' if first.percentile(50) < TARGET_P50_MS else 'MISSED'}")
    top = max(ours.levels, key=lambda r: r.concurrency)
    if baseline:
        base_top = next((r for r in baseline.levels if r.concurrency == top.concurrency), None)
        if base_top and base_top.throughput:
            speedup = top.throughput / base_top.throughput
            checks.append(f"throughput at {top.concurrency} clients {top.throughput:.0f} vs {base_top.throughput:.1f} "
                          f"req/s = {speedup:.1f}x the baseline (target >= {TARGET_SPEEDUP:g}x): "
                          f"{'met' if speedup >= TARGET_SPEEDUP else 'MISSED'}")
    errors = sum(r.errors for levels in [ours.levels, *ours.modes.values()] for r in levels)
    checks.append(f"errors {errors} (target 0): {'met' if errors == 0 else 'MISSED'}")
    checks.append(f"server peak RSS {ours.peak_rss_mb:.0f} MB (target < {TARGET_RSS_MB:g}): "
                  f"{'met' if ours.peak_rss_mb < TARGET_RSS_MB else 'MISSED'}")
    checks.append(f"labels served equal the ONNX predictor of `make evaluate` for {agreement(ours.labels, reference)} photos"
                  + (f"; the Keras baseline agrees on {agreement(baseline.labels, reference)}" if baseline else ""))
    lines += [f"- {c}" for c in checks + mode_checks]
    startup = f"startup to ready: ours {ours.startup_s:.1f} s"
    if baseline:
        startup += f", baseline {baseline.startup_s:.1f} s"
    lines.append(f"- {startup}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="a model folder (model.onnx, model.keras, metadata.json)")
    parser.add_argument("--registry", help="registry folder or gs:// prefix (with --model)")
    parser.add_argument("--model", default="champion", help="with --registry: 'champion' or a version number")
    parser.add_argument("--images", type=Path, required=True, help="folder of photos (searched recursively)")
    parser.add_argument("--max-images", type=int, default=200)
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    parser.add_argument("--max-requests", type=int, default=20_000, help="request cap per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up before measuring")
    parser.add_argument("--threads", type=int, help="our server's inference threads (default: its own)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--output", type=Path, help="Markdown file to write the section into")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.duration <= 0 or args.max_requests <= 0 or not args.concurrency:
        parser.error("--duration, --max-requests and --concurrency must be positive")

    from catdog.model_files import KERAS_FILE, load_metadata
    from catdog.registry import RegistryError, resolve_model_dir

    if args.model_dir:
        model_dir, model_desc = args.model_dir, str(args.model_dir)
    elif args.registry:
        try:
            model_dir, model_desc = resolve_model_dir(args.model, args.registry)
        except RegistryError as exc:
            print(f"error: {exc} (`make bench` trains one; or pass --model-dir)", file=sys.stderr)
            return 2
    else:
        parser.error("give --model-dir, or --registry (and --model)")
    if not args.images.is_dir():
        parser.error(f"--images {args.images} is not a folder")
    metadata = load_metadata(model_dir)
    model_desc += f" ({metadata.get('architecture', 'model')}, {metadata['image_size']} px, classes {metadata['class_names']})"
    images = load_images(args.images, args.max_images)
    print(f"{len(images)} images from {args.images}; model {model_desc}", flush=True)
    logs = Path(tempfile.mkdtemp(prefix="catdog-bench-serving-"))

    python = sys.executable
    ours = ServerRun("ours", [python, "-m", "serving.server", "--model", str(model_dir), "--host", LOOPBACK,
                              "--port", "{port}", "--reload-interval", "0", "--log-level", "warning"]
                     + (["--threads", str(args.threads)] if args.threads else []))
    runs = [ours]
    if not args.skip_baseline:
        if not (Path(model_dir) / KERAS_FILE).is_file():
            parser.error(f"{model_dir} has no {KERAS_FILE} for the baseline (or use --skip-baseline)")
        runs.append(ServerRun("baseline", [python, "-m", "bench.naive_server", "--model-dir", str(model_dir),
                                           "--host", LOOPBACK, "--port", "{port}"]))
    ready_paths = {"ours": "/v2/health/ready", "baseline": "/health"}
    for run in runs:
        port = free_port()
        run.command = [str(port) if part == "{port}" else part for part in run.command]
        print(f"starting {run.name}: {shlex.join(run.command)}", flush=True)
        with Server(run.command, port, ready_paths[run.name], logs / f"{run.name}.log", args.startup_timeout) as server:
            measure(run, server, images, args, all_modes=run is ours)

    reference = reference_labels(Path(model_dir), images)
    command = "python -m bench.serving " + shlex.join(argv if argv is not None else sys.argv[1:])
    markdown = render(args, model_desc, images, runs, reference, command)
    print("\n" + markdown)
    if args.output:
        print(f"wrote {update_section(SECTION, markdown, args.output)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "model": model_desc, "images": len(images), "machine": machine_description(),
            "runs": [{"name": r.name, "command": r.command, "peak_rss_mb": r.peak_rss_mb,
                      "tensorflow_loaded": r.tensorflow_loaded, "startup_s": r.startup_s,
                      "levels": [lv.summary() | {"error_samples": lv.error_samples} for lv in r.levels],
                      "modes": {mode: [lv.summary() | {"error_samples": lv.error_samples} for lv in levels]
                                for mode, levels in r.modes.items()},
                      "explain_method": r.explain_method,
                      "label_agreement_with_onnx_predictor": agreement(r.labels, reference),
                      "v2_binary_label_agreement_with_v1": agreement(r.v2_labels, r.labels) if r.v2_labels else None}
                     for r in runs],
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
