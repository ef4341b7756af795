"""`make load-test`: locust, headless and time-bounded, against a running server; CSV + HTML report.

    python -m bench.load_test [--host http://127.0.0.1:8080] --images FOLDER [--users 8]
                                [--spawn-rate 8] [--duration 30] [--out load_test_reports]

Starts no server: run `make serve` first (the host must be on this machine). Writes
OUT/locust_stats.csv, locust_stats_history.csv, locust_failures.csv, locust_exceptions.csv and
OUT/report.html, prints a summary, and exits non-zero when any request failed.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from catdog import REPO_ROOT
from bench.load_client import check_loopback

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


def summarise(stats_csv: Path) -> list[dict]:
    with open(stats_csv, newline="") as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load_test", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="http://127.0.0.1:8080", help="the running server (loopback only)")
    parser.add_argument("--images", type=Path, required=True, help="folder of photos (recursive)")
    parser.add_argument("--users", type=int, default=8, help="concurrent simulated clients")
    parser.add_argument("--spawn-rate", type=float, default=8, help="users started per second")
    parser.add_argument("--duration", type=int, default=30, help="seconds of load (hard bound)")
    parser.add_argument("--max-images", type=int, default=200)
    parser.add_argument("--model-name", default="catdog")
    parser.add_argument("--out", type=Path, default=Path("load_test_reports"), help="report folder")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.users <= 0:
        parser.error("--duration and --users must be positive")
    try:
        check_loopback(args.host)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.images.is_dir():
        parser.error(f"--images {args.images} is not a folder")
    try:
        with urllib.request.urlopen(f"{args.host.rstrip('/')}/v2/health/ready", timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        print(f"error: no ready server at {args.host} ({exc}); start one with `make serve`", file=sys.stderr)
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", args.host,
        "--users", str(args.users), "--spawn-rate", str(args.spawn_rate), "--run-time", f"{args.duration}s",
        "--stop-timeout", "10", "--csv", str(args.out / "locust"), "--html", str(args.out / "report.html"),
        "--only-summary", "--exit-code-on-error", "1", "--loglevel", "WARNING",
        "--images", str(args.images), "--max-images", str(args.max_images), "--model-name", args.model_name,
    ]
    print(" ".join(command), flush=True)
    try:
        # the locustfile imports bench.load_client: the repository root on the path, from any working folder
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        completed = subprocess.run(command, timeout=args.duration + 120, env={**os.environ, "PYTHONPATH": path})
    except subprocess.TimeoutExpired:
        print("error: locust did not finish in time", file=sys.stderr)
        return 3
    stats = args.out / "locust_stats.csv"
    if stats.exists():
        print(f"\n{'request':<22}{'requests':>9}{'failures':>9}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'req/s':>8}")
        for row in summarise(stats):
            print(f"{row['Name']:<22}{row['Request Count']:>9}{row['Failure Count']:>9}{row['50%']:>8}"
                  f"{row['95%']:>8}{row['99%']:>8}{float(row['Requests/s']):>8.1f}")
    print(f"\nreport: {args.out / 'report.html'} (CSV: {args.out}/locust_*.csv)")
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
