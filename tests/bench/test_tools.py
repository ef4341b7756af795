"""The measuring tools: the load client, `make bench-serving` (bench.serving), the Keras baseline
app, and `make load-test` (bench.load_test + bench/locustfile.py), on the tiny model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT, make_class_folders
from tests.serving_fixtures import make_model, photo, run_server, tiny_model, v1_json  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::fastapi.exceptions.FastAPIDeprecationWarning")


@pytest.fixture(scope="module")
def server(tiny_model):
    with run_server(make_model(tiny_model, max_instances=8)) as running:
        yield running


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.mark.parametrize("url", ["http://example.com:8080", "http://10.0.0.1:80", "https://127.0.0.1:8080"])
def test_client_only_targets_this_machine(url):
    from bench.load_client import check_loopback

    with pytest.raises(ValueError):
        check_loopback(url)


def test_client_accepts_loopback_addresses():
    from bench.load_client import check_loopback

    assert check_loopback("http://127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert check_loopback("http://localhost:9000")[1] == 9000


def test_load_client_is_bounded_and_counts_errors(server):
    from bench.load_client import prepare, run_load, v1_body

    good = [prepare(server.url, "/v1/models/catdog:predict", v1_body([photo(i)]), 1, f"p{i}") for i in range(3)]
    result = run_load(server.url, good, concurrency=2, duration_s=30, max_requests=7)
    assert result.requests == 7 and result.errors == 0
    assert set(result.labels) == {"p0", "p1", "p2"} and set(result.labels.values()) <= {"cat", "dog"}
    assert result.percentile(50) > 0 and result.throughput > 0

    timed = run_load(server.url, good, concurrency=1, duration_s=0.3, max_requests=100_000)
    assert 0.3 <= timed.duration_s < 5

    bad = [prepare(server.url, "/v1/models/catdog:predict", b'{"instances": []}', 1)]
    failed = run_load(server.url, bad, concurrency=1, duration_s=30, max_requests=3)
    assert failed.errors == 3 and "HTTP 400" in failed.error_samples[0]


def test_bytes_tensor_framing_round_trips_and_refuses_truncation():
    from bench.load_client import deserialize_bytes, serialize_bytes

    elements = [b"", b"\xff\xd8\xff raw", b"abc" * 100]
    data = serialize_bytes(elements)
    assert data[:4] == b"\x00\x00\x00\x00" and deserialize_bytes(data) == elements
    for cut in (len(data) - 1, 6):
        with pytest.raises(ValueError, match="overruns"):
            deserialize_bytes(data[:cut])


def test_write_section_replaces_or_appends(tmp_path):
    from bench.report import update_section

    target = tmp_path / "BENCHMARKS.md"
    update_section("serving-bench", "## Serving\nfirst", target)
    assert target.read_text().endswith("\n<!-- serving-bench:start -->\n## Serving\nfirst\n<!-- serving-bench:end -->\n")
    target.write_text("# Benchmarks\n\n<!-- other:start -->\nx\n<!-- other:end -->\n" + target.read_text())
    update_section("serving-bench", "## Serving\nsecond", target)
    text = target.read_text()
    assert "second" in text and "first" not in text and "<!-- other:start -->" in text
    assert text.count("serving-bench:start") == 1


def test_bench_end_to_end_without_baseline(tmp_path, tiny_model):
    images = make_class_folders(tmp_path / "images", {"cat": 3, "dog": 3})
    output, raw = tmp_path / "bench.md", tmp_path / "bench.json"
    command = [sys.executable, "-m", "bench.serving", "--model-dir", str(tiny_model), "--images", str(images),
               "--concurrency", "1,2", "--duration", "0.5", "--warmup", "0.2", "--max-requests", "500",
               "--skip-baseline", "--output", str(output), "--json", str(raw)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = output.read_text()
    assert "<!-- serving-bench:start -->" in text and "## Serving (`make bench-serving`)" in text
    for words in ("- command: `python -m bench.serving", "- machine: ", "- date: ", "| ours | 1 |", "| ours | 2 |",
                  "errors 0 (target 0): met", "equal the ONNX predictor of `make evaluate` for 6/6 photos",
                  "(`:explain`: grad-cam 1x1, no overlay;", "| V1 JSON predict | 1 |", "| V1 :explain | 2 |",
                  "| V2 binary | 2 |", "explain p50 vs predict p50: ", "x at 2 clients (target <= 1.5x): ",
                  "V2 binary vs V1 JSON throughput: ", "V2 binary labels equal V1 JSON's for 6/6 photos"):
        assert words in text, words
    import json

    runs = json.loads(raw.read_text())["runs"]
    assert runs[0]["tensorflow_loaded"] is False and 0 < runs[0]["peak_rss_mb"] < 1000
    modes = runs[0]["modes"]
    assert [level["concurrency"] for level in modes["V2 binary"]] == [1, 2]
    assert all(level["errors"] == 0 and level["requests"] > 0 for levels in modes.values() for level in levels)


def test_baseline_app_serves_the_same_labels(tiny_model):
    from fastapi.testclient import TestClient

    from catdog.onnx_predictor import OnnxPredictor
    from bench.naive_server import create_app

    images = [photo(i) for i in range(4)]
    client = TestClient(create_app(tiny_model))
    response = client.post("/v1/models/catdog:predict", json=v1_json(*images))
    assert response.status_code == 200, response.text
    reference = OnnxPredictor(tiny_model)
    expected = [reference.class_names[i] for i in reference.predict_bytes(images).argmax(axis=1)]
    assert [p["label"] for p in response.json()["predictions"]] == expected
    assert client.post("/v1/models/catdog:predict", json={"nope": 1}).status_code == 400


@pytest.mark.slow
def test_load_test_writes_a_report(tmp_path, server):
    images = make_class_folders(tmp_path / "images", {"cat": 4, "dog": 4}, size=(120, 90))
    out = tmp_path / "report"
    command = [sys.executable, "-m", "bench.load_test", "--host", server.url, "--images", str(images),
               "--users", "2", "--spawn-rate", "2", "--duration", "3", "--out", str(out)]
    result = subprocess.run(command, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "report.html").stat().st_size > 1000
    stats = (out / "locust_stats.csv").read_text()
    assert "V1 1 image(s)" in stats and "V2 1 image(s)" in stats and "V2 binary 1 image(s)" in stats
    from bench.load_test import summarise

    total = next(row for row in summarise(out / "locust_stats.csv") if row["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0


def test_load_test_refuses_remote_hosts_and_missing_servers(tmp_path):
    images = make_class_folders(tmp_path / "images", {"cat": 1, "dog": 1})
    remote = subprocess.run([sys.executable, "-m", "bench.load_test", "--host", "http://example.com",
                             "--images", str(images)], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert remote.returncode == 2 and "127.0.0.1" in remote.stderr
    from tests.helpers import free_port

    missing = subprocess.run([sys.executable, "-m", "bench.load_test", "--host", f"http://127.0.0.1:{free_port()}",
                              "--images", str(images)], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "make serve" in missing.stderr
