"""The predictor's latency with its payload logger on and off, at one client, in one run.

    python -m bench.payload_logger --model MODEL_DIR|champion|N [--registry DIR] --images PHOTO_DIR [--requests 200]
    make bench-logger   (the model of make bench: bench_outputs/registry's champion)

Starts, as `make up` does, three processes on loopback: the predictor without a logger, the same
predictor with --logger-url pointing at the feedback app's sink, and the feedback app (a fresh
store in a temporary folder). One client sends V1 :predict requests of one photo each, alternating
between the two predictors (so drift of the machine hits both alike), after a warm-up; prints p50
and p90 of each and, last, one JSON line with the predictor's logger counts (queued, sent, dropped:
the queue was full, failed) and the app sink's. The app stores every logged photo meanwhile, as it would.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from catdog import REPO_ROOT as ROOT


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready within {timeout:g} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder, or with --registry: champion or a version")
    parser.add_argument("--registry", help="the registry --model names a version of")
    parser.add_argument("--images", required=True, help="a folder of photos (searched recursively)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per predictor")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)

    photos = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise SystemExit(f"no photos under {args.images}")
    bodies = [json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(p.read_bytes()).decode()}}]})
              for p in photos[:100]]
    off_port, on_port, app_port = free_port(), free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "APP_TOKEN": "bench-token", "LOGGER_URL": ""}
    with tempfile.TemporaryDirectory() as store:
        server = [sys.executable, "-m", "serving.server", "--model", args.model, "--host", "127.0.0.1",
                  "--log-level", "warning", *(["--registry", args.registry] if args.registry else [])]
        processes = [
            subprocess.Popen([*server, "--port", str(off_port)], env=env),
            subprocess.Popen([*server, "--port", str(on_port), "--logger-url",
                              f"http://127.0.0.1:{app_port}/api/events/inference"], env=env),
            subprocess.Popen([sys.executable, "-m", "feedback.web.server", "--host", "127.0.0.1", "--port", str(app_port)],
                             env={**env, "PREDICTOR_URL": f"http://127.0.0.1:{off_port}", "FEEDBACK_URI": store,
                                  "DATABASE_URL": f"sqlite:///{store}/feedback.db", "RUNS_DIR": f"{store}/runs"},
                             cwd=store, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        try:
            for port in (off_port, on_port):
                wait(f"http://127.0.0.1:{port}/v2/health/ready")
            wait(f"http://127.0.0.1:{app_port}/health")
            session = requests.Session()
            urls = {name: f"http://127.0.0.1:{port}/v1/models/catdog:predict"
                    for name, port in (("off", off_port), ("on", on_port))}
            times: dict[str, list[float]] = {"off": [], "on": []}
            headers = {"Content-Type": "application/json"}
            for i in range(args.warmup + args.requests):
                for name in ("off", "on") if i % 2 else ("on", "off"):
                    start = time.perf_counter()
                    response = session.post(urls[name], data=bodies[i % len(bodies)], headers=headers, timeout=30)
                    elapsed = time.perf_counter() - start
                    response.raise_for_status()
                    if i >= args.warmup:
                        times[name].append(elapsed * 1000)
            time.sleep(2)  # the last events reach the app
            sink = session.get(f"http://127.0.0.1:{app_port}/api/events/inference", timeout=10).json()
            metrics = session.get(f"http://127.0.0.1:{on_port}/metrics", timeout=10).text
            sent = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith("catdog_logger_events_total{")}
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
    result = {}
    for name, values in times.items():
        values.sort()
        result[name] = {"p50_ms": round(statistics.median(values), 2),
                        "p90_ms": round(values[int(0.9 * (len(values) - 1))], 2), "n": len(values)}
        print(f"logging {name:3}: p50 {result[name]['p50_ms']:.2f} ms, p90 {result[name]['p90_ms']:.2f} ms "
              f"({len(values)} requests)")
    result["predictor_logger"], result["sink"] = sent, sink["counts"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
