"""Per-client rate limits (feedback/web/rate_limit.py) on a real uvicorn server: 429 with Retry-After
and the app's JSON error, reads and writes counted apart, exempt paths, one client's limit not
touching another's (two loopback source addresses), "off", X-Forwarded-For trusted only from
TRUSTED_PROXIES, and a typo'd setting refused at start-up. Small limits (a few a minute), no sleeps."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

import httpx
import pytest

from feedback.settings import SettingsError, load_settings
from tests.feedback_fixtures import FakePredictor, feedback_settings, photo, running_app, unused_url
from tests.helpers import REPO_ROOT, uvicorn_in_thread


@contextmanager
def limited_app(tmp_path, **limits):
    """The app with FakePredictor as its predictor and these settings (rate_limit_writes=...)."""
    with running_app(feedback_settings(tmp_path, unused_url(), **limits), predictor=FakePredictor()) as client:
        yield client


def predict(client: httpx.Client, url: str, seed: int) -> httpx.Response:
    return client.post(f"{url}/api/predict", files={"image": ("photo.jpg", photo(seed), "image/jpeg")})


def assert_limited(response: httpx.Response, setting: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/json"
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, retry_after  # a 1-minute window
    detail = response.json()["detail"]
    assert setting in detail and f"retry in {retry_after} s" in detail, detail


def test_writes_over_the_limit_are_429_with_retry_after_and_are_not_stored(tmp_path):
    with limited_app(tmp_path, rate_limit_writes="3/minute", rate_limit_reads="off") as app, httpx.Client() as client:
        assert [predict(client, app.url, seed).status_code for seed in range(3)] == [200] * 3
        for seed in (3, 4):  # refused ones are not counted as stored, nor do they reach the predictor
            assert_limited(predict(client, app.url, seed), "RATE_LIMIT_WRITES")
        assert response_json(client, f"{app.url}/api/predictions")["count"] == 3
        assert app.service.predictor.calls == 3
        # the security headers still wrap the 429 (the limiter sits inside them)
        assert predict(client, app.url, 5).headers["x-content-type-options"] == "nosniff"


def response_json(client: httpx.Client, url: str) -> dict:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return response.json()


def test_reads_have_their_own_higher_limit(tmp_path):
    with limited_app(tmp_path, rate_limit_writes="2/minute", rate_limit_reads="5/minute") as app, \
            httpx.Client() as client:
        assert [predict(client, app.url, seed).status_code for seed in range(2)] == [200, 200]
        assert_limited(predict(client, app.url, 2), "RATE_LIMIT_WRITES")
        # writes spent: reads still have their 5
        assert [client.get(f"{app.url}/api/predictions").status_code for _ in range(5)] == [200] * 5
        assert_limited(client.get(f"{app.url}/api/predictions"), "RATE_LIMIT_READS")


def test_health_checks_metrics_and_the_logger_sink_are_exempt(tmp_path):
    with limited_app(tmp_path, rate_limit_writes="1/minute", rate_limit_reads="1/minute") as app, \
            httpx.Client() as client:
        for _ in range(5):
            assert client.get(f"{app.url}/health").status_code == 200
            assert client.get(f"{app.url}/ready").status_code != 429
            assert client.get(f"{app.url}/metrics").status_code != 429
            assert client.post(f"{app.url}/api/events/inference", content=b"{}").status_code != 429
        # the exempt requests took nothing from the client's budgets
        assert client.get(f"{app.url}/api/predictions").status_code == 200
        assert_limited(client.get(f"{app.url}/api/predictions"), "RATE_LIMIT_READS")
        assert predict(client, app.url, 0).status_code == 200
        assert_limited(predict(client, app.url, 1), "RATE_LIMIT_WRITES")
        assert_limited(client.get(f"{app.url}/healthz"), "RATE_LIMIT_READS")  # /health exempts itself, not a prefix


def test_one_noisy_client_does_not_affect_another(tmp_path):
    """Client A (127.0.0.1) runs out; client B (127.0.0.2: all of 127.0.0.0/8 is loopback) is served."""
    noisy = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.1"))
    quiet = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with limited_app(tmp_path, rate_limit_writes="3/minute") as app, noisy, quiet:
        assert [predict(noisy, app.url, seed).status_code for seed in range(3)] == [200] * 3
        for seed in range(3, 8):
            assert_limited(predict(noisy, app.url, seed), "RATE_LIMIT_WRITES")
        assert "127.0.0.1" in predict(noisy, app.url, 8).json()["detail"]  # the key is the peer address
        assert [predict(quiet, app.url, seed).status_code for seed in range(10, 13)] == [200] * 3
        assert_limited(predict(quiet, app.url, 13), "RATE_LIMIT_WRITES")  # B has a limit of its own


@pytest.mark.parametrize("off", ["off", "0", "OFF"])
def test_limits_off_never_answer_429(tmp_path, off):
    with limited_app(tmp_path, rate_limit_writes=off, rate_limit_reads=off) as app, httpx.Client() as client:
        # more than the default 100 writes a minute: validations of an unknown prediction (404, cheap)
        statuses = {client.post(f"{app.url}/api/predictions/nope/validation", json={"label": "cat"}).status_code
                    for _ in range(110)}
        assert statuses == {404}
        assert {client.get(f"{app.url}/api/predictions").status_code for _ in range(20)} == {200}


def test_the_default_write_limit_is_100_a_minute(tmp_path):
    with limited_app(tmp_path) as app, httpx.Client() as client:
        statuses = [client.post(f"{app.url}/api/predictions/nope/validation", json={"label": "cat"}).status_code
                    for _ in range(101)]
        assert statuses[:100] == [404] * 100 and statuses[100] == 429


@pytest.mark.parametrize("trusted", [False, True])
def test_forwarded_for_names_the_client_only_behind_trusted_proxies(tmp_path, trusted):
    """uvicorn_options (what `make app` serves with): without TRUSTED_PROXIES, X-Forwarded-For is ignored
    (a client cannot pick a fresh key per request); listing the proxy makes each forwarded client its own."""
    from feedback.labelling.service import FeedbackService
    from feedback.web.app import create_app
    from feedback.web.server import uvicorn_options

    settings = feedback_settings(tmp_path, unused_url(), rate_limit_writes="2/minute",
                                 trusted_proxies=("127.0.0.1",) if trusted else ())
    service = FeedbackService(settings, predictor=FakePredictor())
    service.start()
    try:
        with uvicorn_in_thread(create_app(service), **uvicorn_options(settings)) as url, httpx.Client() as client:
            statuses = [client.post(f"{url}/api/predictions/nope/validation", json={"label": "cat"},
                                    headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(4)]
            assert statuses == ([404] * 4 if trusted else [404, 404, 429, 429])
            if trusted:  # one forwarded client is limited as any other
                same = [client.post(f"{url}/api/predictions/nope/validation", json={"label": "cat"},
                                    headers={"X-Forwarded-For": "198.51.100.7"}).status_code for _ in range(3)]
                assert same == [404, 404, 429]
    finally:
        service.close()


@pytest.mark.parametrize("environ, words", [
    ({"RATE_LIMIT_WRITES": "100/minit"}, "RATE_LIMIT_WRITES: invalid rate limit '100/minit'"),
    ({"RATE_LIMIT_READS": "fast"}, "RATE_LIMIT_READS: invalid rate limit 'fast'"),
    ({"RATE_LIMIT_WRITES": "0/minute"}, "RATE_LIMIT_WRITES: .* a count must be 1 or more"),
    ({"RATE_LIMIT_EXEMPT": "health"}, "RATE_LIMIT_EXEMPT: paths must start with '/'"),
    ({"TRUSTED_PROXIES": "proxy.internal"}, "TRUSTED_PROXIES: 'proxy.internal' is not an IP address"),
])
def test_bad_rate_limit_settings_name_the_variable(environ, words):
    with pytest.raises(SettingsError, match=words):
        load_settings(environ)


def test_rate_limit_settings_from_the_environment_and_flags():
    settings = load_settings({"RATE_LIMIT_WRITES": " 10/second;100/minute ", "RATE_LIMIT_READS": "Off",
                              "RATE_LIMIT_EXEMPT": "/health, /ready", "TRUSTED_PROXIES": "10.0.0.0/8,::1"},
                             rate_limit_reads=None)
    assert settings.rate_limit_writes == "10/second;100/minute" and settings.rate_limit_reads == "off"
    assert settings.rate_limit_exempt == ("/health", "/ready") and settings.trusted_proxies == ("10.0.0.0/8", "::1")
    defaults = load_settings({})
    assert (defaults.rate_limit_writes, defaults.rate_limit_reads) == ("100/minute", "600/minute")
    assert defaults.rate_limit_exempt == ("/health", "/ready", "/metrics", "/api/events/")
    assert defaults.trusted_proxies == ()


def server(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "feedback.web.server", *args], cwd=REPO_ROOT, env=environment,
                          capture_output=True, text=True, timeout=60)


def test_a_typo_in_a_rate_limit_flag_stops_the_server_at_start():
    result = server("--rate-limit-writes", "100/minit")
    assert result.returncode == 2, result.stderr
    assert "RATE_LIMIT_WRITES: invalid rate limit '100/minit'" in result.stderr
    result = server(env={"RATE_LIMIT_READS": "lots"})
    assert result.returncode == 2 and "RATE_LIMIT_READS: invalid rate limit 'lots'" in result.stderr
