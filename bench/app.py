"""`make bench-app`: the feedback app under concurrent clients, side by side with the predictor it calls.

    python -m bench.app (--model-dir DIR | --registry URI [--model champion|N]) --images FOLDER
                             [--concurrency 1,4,16] [--duration 10] [--database-url URL] [--output FILE]

One predictor (serving.server) and one app (feedback.web.server, SQLite in a temp folder unless
--database-url) run as their own processes on 127.0.0.1. At each concurrency level the same
closed-loop client (bench.load_client) sends the same photos first straight to the predictor
(V1 :predict), then to the app (POST /api/predict, JSON base64: the app checks the photo, calls
the predictor, stores the photo and the prediction). Reported: p50/p99, requests/s, errors, and
the latency the app adds to the predictor's. Then --mixed-clients clients each upload a photo and
validate its prediction, in a loop for --duration seconds (what people on the page do), next to the
predictor alone at the same concurrency; then --validators clients validate every stored
prediction at once, and the store is checked: every prediction and verdict
there, every validated photo in its class folder.
"""

from __future__ import annotations

import argparse
import base64
import shlex
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import orjson
import requests

from bench.report import machine_description, update_section
from bench.serving import LOOPBACK, Server, free_port, load_images
from bench.load_client import LoadResult, prepare, run_load, v1_body

SECTION = "feedback-app-bench"


def app_body(data: bytes) -> bytes:
    return orjson.dumps({"image_b64": base64.b64encode(data).decode()})


def validate_all(url: str, clients: int) -> tuple[list[float], list[str]]:
    """Confirm or correct (alternately) every stored prediction with `clients` threads."""
    predictions, offset = [], 0
    while True:
        page = requests.get(f"{url}/api/predictions", params={"limit": 500, "offset": offset}, timeout=60).json()
        predictions += page["predictions"]
        offset += page["count"]
        if page["count"] < 500:
            break

    def one(item: tuple[int, dict]) -> tuple[float, str | None]:
        i, prediction = item
        label = prediction["predicted_class"] if i % 2 else ("dog" if prediction["predicted_class"] == "cat" else "cat")
        began = time.perf_counter()
        response = requests.post(f"{url}/api/predictions/{prediction['id']}/validation", json={"label": label}, timeout=60)
        return (time.perf_counter() - began) * 1000, None if response.status_code == 201 else f"HTTP {response.status_code}"

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, enumerate(predictions)))
    return [ms for ms, error in results if error is None], [error for _, error in results if error]


def upload_and_validate(url: str, images: list[tuple[str, bytes]], clients: int, duration_s: float) -> dict:
    """`clients` threads, each in a loop for duration_s: POST /api/predict, then validate it
    (confirm, or correct every third one). Returns latencies (ms) per kind, errors, rounds, seconds."""
    import threading

    upload_ms, validate_ms, errors, lock = [], [], [], threading.Lock()
    deadline = time.perf_counter() + duration_s

    def client(worker: int) -> int:
        session, rounds, i = requests.Session(), 0, worker
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            answer = session.post(f"{url}/api/predict", data=app_body(images[i % len(images)][1]),
                                  headers={"content-type": "application/json"}, timeout=60)
            uploaded = time.perf_counter()
            if answer.status_code != 200:
                with lock:
                    errors.append(f"predict HTTP {answer.status_code}")
                continue
            prediction = answer.json()
            label = prediction["predicted_class"]
            if i % 3 == 0:
                label = "dog" if label == "cat" else "cat"
            verdict = session.post(f"{url}/api/predictions/{prediction['id']}/validation", json={"label": label},
                                   timeout=60)
            done = time.perf_counter()
            with lock:
                upload_ms.append((uploaded - began) * 1000)
                if verdict.status_code == 201:
                    validate_ms.append((done - uploaded) * 1000)
                else:
                    errors.append(f"validation HTTP {verdict.status_code}")
            rounds, i = rounds + 1, i + clients
        return rounds

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        rounds = sum(pool.map(client, range(clients)))
    return {"upload_ms": upload_ms, "validate_ms": validate_ms, "errors": errors, "rounds": rounds,
            "seconds": time.perf_counter() - began, "clients": clients}


def store_check(url: str, feedback_root: Path, validated: int) -> list[str]:
    """What the store must hold after the run; returns the problems (none expected)."""
    counts = requests.get(f"{url}/api/status", timeout=30).json()["counts"]
    problems = []
    if counts["unvalidated"] != 0 or counts["confirmed"] + counts["corrected"] != validated:
        problems.append(f"verdicts: {counts}")
    files = [p for p in (feedback_root / "dataset").rglob("*") if p.is_file() and p.name != "manifest.json"]
    if len(files) != counts["photos"] or counts["unpublished"]:
        problems.append(f"{len(files)} dataset files for {counts['photos']} validated photos ({counts['unpublished']} unpublished)")
    return problems


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def render(args, model_desc: str, images, levels: list[tuple[LoadResult, LoadResult]], mixed: dict,
           mixed_direct: LoadResult, validations, problems, command: str, stored: int) -> str:
    lines = [
        "## Feedback app (`make bench-app`)",
        "",
        f"- command: `{command}`",
        f"- machine: {machine_description()}; predictor, app and client share it",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- model: {model_desc}",
        f"- images: {len(images)} photos from `{args.images}`; one photo per request; database: "
        f"{'SQLite (WAL) in a temp folder' if not args.database_url else args.database_url.split('://')[0]}",
        f"- each level {args.duration:g} s (at most {args.max_requests} requests), predictor first, then the app",
        "",
        "| clients | predictor p50 ms | app p50 ms | added p50 ms | predictor p99 ms | app p99 ms | predictor req/s | app req/s | app errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for direct, app in levels:
        d, a = direct.summary(), app.summary()
        lines.append(f"| {d['concurrency']} | {d['p50_ms']:.1f} | {a['p50_ms']:.1f} | {a['p50_ms'] - d['p50_ms']:+.1f} | "
                     f"{d['p99_ms']:.1f} | {a['p99_ms']:.1f} | {d['rps']:.1f} | {a['rps']:.1f} | {a['errors']} |")
    latencies, errors = validations
    up, val, direct = mixed["upload_ms"], mixed["validate_ms"], mixed_direct.summary()
    lines += [
        "",
        f"Upload and validate, {mixed['clients']} clients for {mixed['seconds']:.0f} s (each: predict a photo "
        "through the app, then confirm it, or correct every third), next to the predictor alone at the same "
        "concurrency in the same run:",
        "",
        "| | requests | errors | p50 ms | p99 ms | req/s |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| predictor alone, V1 :predict | {direct['requests']} | {direct['errors']} | {direct['p50_ms']:.1f} | "
        f"{direct['p99_ms']:.1f} | {direct['rps']:.1f} |",
        f"| app: upload (POST /api/predict) | {len(up)} | {sum(e.startswith('predict') for e in mixed['errors'])} | "
        f"{percentile(up, 50):.1f} | {percentile(up, 99):.1f} | {len(up) / mixed['seconds']:.1f} |",
        f"| app: validation | {len(val)} | {sum(e.startswith('validation') for e in mixed['errors'])} | "
        f"{percentile(val, 50):.1f} | {percentile(val, 99):.1f} | {len(val) / mixed['seconds']:.1f} |",
        "",
        f"- upload p50 / predictor p50 at {mixed['clients']} clients: {percentile(up, 50) / direct['p50_ms']:.2f}x "
        f"({mixed['rounds']} upload+validate rounds, {(len(up) + len(val)) / mixed['seconds']:.1f} app requests/s)",
        f"- then {args.validators} clients validated all {stored} stored predictions at once: {len(errors)} errors, "
        f"p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms per verdict "
        "(each: a transaction and a file copy into its class folder; the manifest follows in the background)",
        f"- store after the run: {'every prediction, verdict and dataset file present' if not problems else '; '.join(problems)}",
        f"- errors in all: {sum(app.errors for _, app in levels) + len(errors) + len(mixed['errors'])} (target 0)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--registry")
    parser.add_argument("--model", default="champion")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--max-images", type=int, default=200)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--mixed-clients", type=int, default=16, help="clients uploading and validating")
    parser.add_argument("--validators", type=int, default=16)
    parser.add_argument("--database-url", help="default: SQLite in a temp folder")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]

    from catdog.registry import RegistryError, resolve_model_dir

    try:
        model_dir, model_desc = (args.model_dir, str(args.model_dir)) if args.model_dir else resolve_model_dir(args.model, args.registry)
    except (RegistryError, TypeError) as exc:
        print(f"error: {exc} (`make bench` trains one; or pass --model-dir)", file=sys.stderr)
        return 2
    from catdog.model_files import load_metadata

    metadata = load_metadata(model_dir)
    model_desc += f" ({metadata['image_size']} px, classes {metadata['class_names']})"
    images = load_images(args.images, args.max_images)
    work = Path(tempfile.mkdtemp(prefix="catdog-bench-app-"))
    python = sys.executable
    predictor_port, app_port = free_port(), free_port()
    predictor_command = [python, "-m", "serving.server", "--model", str(model_dir), "--host", LOOPBACK,
                         "--port", str(predictor_port), "--reload-interval", "0", "--log-level", "warning"]
    app_command = [python, "-m", "feedback.web.server", "--port", str(app_port), "--log-level", "warning",
                   "--predictor-url", f"http://{LOOPBACK}:{predictor_port}",
                   "--database-url", args.database_url or f"sqlite:///{work}/feedback.db", "--feedback-uri", str(work / "fb"),
                   # one load client from one address: the per-client limits would measure themselves
                   "--rate-limit-writes", "off", "--rate-limit-reads", "off"]
    print(f"{len(images)} images; model {model_desc}; logs in {work}", flush=True)
    levels = []
    with Server(predictor_command, predictor_port, "/v2/health/ready", work / "predictor.log", args.startup_timeout) as predictor, \
            Server(app_command, app_port, "/ready", work / "app.log", args.startup_timeout) as app:
        direct_requests = [prepare(predictor.url, "/v1/models/catdog:predict", v1_body([d]), 1, k) for k, d in images]
        app_requests = [prepare(app.url, "/api/predict", app_body(d), 1, k) for k, d in images]
        run_load(predictor.url, direct_requests, 1, 3.0, 200)  # warm-up
        run_load(app.url, app_requests, 1, 3.0, 200)
        for concurrency in args.concurrency:
            direct = run_load(predictor.url, direct_requests, concurrency, args.duration, args.max_requests)
            served = run_load(app.url, app_requests, concurrency, args.duration, args.max_requests)
            levels.append((direct, served))
            print(f"  c={concurrency:<3} predictor p50 {direct.percentile(50):6.1f} ms  app p50 {served.percentile(50):6.1f} ms  "
                  f"app errors {served.errors}" + (f" e.g. {served.error_samples[0]}" if served.error_samples else ""), flush=True)
        mixed_direct = run_load(predictor.url, direct_requests, args.mixed_clients, args.duration, args.max_requests)
        mixed = upload_and_validate(app.url, images, args.mixed_clients, args.duration)
        print(f"  upload+validate c={args.mixed_clients}: {mixed['rounds']} rounds, {len(mixed['errors'])} errors", flush=True)
        stored = requests.get(f"{app.url}/api/status", timeout=30).json()["counts"]["predictions"]
        validations = validate_all(app.url, args.validators)
        problems = store_check(app.url, work / "fb", stored)
    command = "python -m bench.app " + shlex.join(argv if argv is not None else sys.argv[1:])
    markdown = render(args, model_desc, images, levels, mixed, mixed_direct, validations, problems, command, stored)
    print("\n" + markdown)
    if args.output:
        print(f"wrote {update_section(SECTION, markdown, args.output)}")
    failed = problems or validations[1] or mixed["errors"] or any(a.errors for _, a in levels)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
