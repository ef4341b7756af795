"""Bad input over real HTTP: always a 4xx that says what was wrong, never a 5xx, and the server
keeps serving afterwards (each case is followed by a good request)."""

from __future__ import annotations

import base64
import json
import threading

import pytest
import requests

from tests.helpers import png_header_only
from tests.serving_fixtures import b64, make_model, metric_value, photo, run_server, tiny_model_dir, v1_json, v2_json

pytestmark = pytest.mark.filterwarnings("ignore::fastapi.exceptions.FastAPIDeprecationWarning")

MAX_BODY = 200_000
MAX_INSTANCES = 4
V1 = "/v1/models/catdog:predict"
V2 = "/v2/models/catdog/infer"
GOOD = photo(0)


@pytest.fixture(scope="module")
def server():
    model = make_model(tiny_model_dir(), max_instances=MAX_INSTANCES)
    with run_server(model, max_body_bytes=MAX_BODY) as running:
        yield running


def _truncated_jpeg() -> bytes:
    data = photo(5, size=(400, 300))
    return data[: len(data) // 3]


def _v2_raw(body: dict, binary: bytes) -> tuple[bytes, dict]:
    """A V2 request using the binary tensor extension."""
    head = json.dumps(body).encode()
    return head + binary, {"inference-header-content-length": str(len(head)), "content-type": "application/octet-stream"}


def _v2_binary(elements: list[bytes], size_delta: int = 0, trailing: bytes = b"", datatype: str = "BYTES"):
    """requests kwargs of a V2 binary-extension request whose input holds `elements` (length-prefixed);
    size_delta skews the declared binary_data_size, trailing is appended after the tensor."""
    data = b"".join(len(e).to_bytes(4, "little") + e for e in elements)
    body, headers = _v2_raw({"inputs": [{"name": "image_bytes", "shape": [len(elements)], "datatype": datatype,
                                         "parameters": {"binary_data_size": len(data) + size_delta}}]}, data + trailing)
    return {"data": body, "headers": headers}


_overrun = _v2_binary([GOOD])
_overrun["data"] = _overrun["data"].replace(len(GOOD).to_bytes(4, "little"), (len(GOOD) + 10).to_bytes(4, "little"), 1)
_no_size = dict(zip(("data", "headers"), _v2_raw({"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES"}]}, b"")))

# (case id, method, path, requests kwargs, expected status, words the error must contain)
BAD_REQUESTS = [
    ("v1-malformed-json", "post", V1, {"data": b'{"instances": [', "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ("v1-json-not-object", "post", V1, {"json": [1, 2, 3]}, 400, "expected a JSON object"),
    ("v1-empty-body", "post", V1, {"data": b"", "headers": {"content-type": "application/json"}}, 400, "JSON"),
    ("v1-missing-instances", "post", V1, {"json": {"images": []}}, 400, "missing field 'instances'"),
    ("v1-v2-body-on-v1", "post", V1, {"json": v2_json(GOOD)}, 400, "/v2/models"),
    ("v1-instances-not-list", "post", V1, {"json": {"instances": "abc"}}, 400, "must be a list"),
    ("v1-instance-not-object", "post", V1, {"json": {"instances": ["abc"]}}, 400, "instances[0]"),
    ("v1-missing-b64", "post", V1, {"json": {"instances": [{"image_bytes": {"data": "x"}}]}}, 400, "instances[0].image_bytes"),
    ("v1-b64-not-string", "post", V1, {"json": {"instances": [{"image_bytes": {"b64": 12345}}]}}, 400, "expected a base64 string"),
    ("v1-invalid-base64", "post", V1, {"json": {"instances": [{"image_bytes": {"b64": "not base64!!"}}]}}, 400, "invalid base64"),
    ("v1-not-an-image", "post", V1, {"json": {"instances": [{"b64": b64(b"hello, I am text, not a photo" * 20)}]}}, 400, "not a decodable image"),
    ("v1-empty-image", "post", V1, {"json": {"instances": [{"b64": ""}]}}, 400, "empty file"),
    ("v1-truncated-jpeg", "post", V1, {"json": v1_json(_truncated_jpeg())}, 400, "instances[0]"),
    ("v1-decompression-bomb", "post", V1, {"json": v1_json(png_header_only(30_000, 30_000))}, 400, "decompression bomb"),
    ("v1-bad-image-among-good", "post", V1, {"json": v1_json(GOOD, b"\x89PNG\r\n\x1a\nbroken", GOOD)}, 400, "instances[1]"),
    ("v1-empty-instances", "post", V1, {"json": {"instances": []}}, 400, "empty"),
    ("v1-too-many-instances", "post", V1, {"json": v1_json(*[GOOD] * (MAX_INSTANCES + 1))}, 400, f"at most {MAX_INSTANCES}"),
    ("v1-body-over-limit", "post", V1, {"json": {"instances": [{"b64": "A" * MAX_BODY}]}}, 413, "over the limit"),
    ("v1-chunked-body-over-limit", "post", V1, {"data": (b"x" * 50_000 for _ in range(6))}, 413, "over the limit"),
    ("v1-text-plain-garbage", "post", V1, {"data": b"\x00\xff garbage", "headers": {"content-type": "text/plain"}}, 400, "not valid JSON"),
    ("v1-cloudevent-garbage", "post", V1, {"data": b"{}", "headers": {"ce-specversion": "1.0", "ce-id": "1"}}, 400, ""),
    ("v1-unknown-model", "post", "/v1/models/nope:predict", {"json": v1_json(GOOD)}, 404, "nope"),
    ("v1-get-on-predict", "get", V1, {}, 405, "use POST"),
    ("v2-malformed-json", "post", V2, {"data": b'{"inputs": [', "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ("v2-deeply-nested-json", "post", V2, {"data": b"[" * 100_000 + b"]" * 100_000, "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ("v1-deeply-nested-json", "post", V1, {"data": b"[" * 100_000 + b"]" * 100_000, "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ("unknown-route", "get", "/v3/nothing", {}, 404, "Not Found"),
    ("v2-missing-inputs", "post", V2, {"json": {"id": "1"}}, 400, "inputs"),
    ("v2-inputs-not-list", "post", V2, {"json": {"inputs": 3}}, 400, "inputs"),
    ("v2-missing-data", "post", V2, {"json": {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES"}]}}, 400, "data"),
    ("v2-wrong-datatype", "post", V2, {"json": {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "FP32", "data": [1.0]}]}}, 400, "datatype must be BYTES"),
    ("v2-wrong-input-name", "post", V2, {"json": {"inputs": [{**v2_json(GOOD)["inputs"][0], "name": "images"}]}}, 400, "input 'images': this model's input is 'image_bytes'"),
    ("v2-two-inputs", "post", V2, {"json": {"inputs": v2_json(GOOD)["inputs"] * 2}}, 400, "one input tensor"),
    ("v2-shape-mismatch", "post", V2, {"json": v2_json(GOOD, GOOD, shape=[3])}, 400, "does not match"),
    ("v2-invalid-base64", "post", V2, {"json": {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]}}, 400, "invalid base64"),
    ("v2-number-in-bytes", "post", V2, {"json": {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [7]}]}}, 400, "base64 string"),
    ("v2-not-an-image", "post", V2, {"json": {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [b64(b"text" * 50)]}]}}, 400, "not a decodable image"),
    ("v2-decompression-bomb", "post", V2, {"json": v2_json(png_header_only(30_000, 30_000))}, 400, "decompression bomb"),
    ("v2-empty-data", "post", V2, {"json": {"inputs": [{"name": "image_bytes", "shape": [0], "datatype": "BYTES", "data": []}]}}, 400, "empty"),
    ("v2-too-many", "post", V2, {"json": v2_json(*[GOOD] * (MAX_INSTANCES + 1))}, 400, f"at most {MAX_INSTANCES}"),
    ("v2-fp16", "post", V2, {"json": {"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "FP16", "data": [1.0]}]}}, 400, "FP16"),
    ("v2-binary-raw-not-an-image", "post", V2, _v2_binary([GOOD, b"\xff\xd8\xffjunk"]), 400, "data[1]: not a decodable image"),
    ("v2-binary-raw-truncated", "post", V2, _v2_binary([_truncated_jpeg()]), 400, "data[0]: corrupt or truncated"),
    ("v2-binary-raw-bomb", "post", V2, _v2_binary([png_header_only(30_000, 30_000)]), 400, "data[0]: decompression bomb"),
    ("v2-binary-neither-image-nor-base64", "post", V2, _v2_binary([b"\x00\x9f binary"]), 400, "data[0]: neither an image"),
    ("v2-binary-size-over-body", "post", V2, _v2_binary([GOOD], size_delta=100), 400, "binary_data_size"),
    ("v2-binary-trailing-bytes", "post", V2, _v2_binary([GOOD], trailing=b"extra"), 400, "5 bytes after"),
    ("v2-binary-element-overrun", "post", V2, _overrun, 400, "binary element 0 claims"),
    ("v2-binary-no-size", "post", V2, _no_size, 400, "no 'data' and no binary_data_size"),
    ("v2-binary-fp32", "post", V2, _v2_binary([b"\x00" * 4], datatype="FP32"), 400, "datatype must be BYTES"),
    ("v2-binary-bad-header", "post", V2, {"data": b"{}", "headers": {"inference-header-content-length": "abc"}}, 400, "malformed request"),
    ("v2-binary-header-past-body", "post", V2, {"data": b"{}", "headers": {"inference-header-content-length": "99"}}, 400, "the body has 2 bytes"),
    ("v2-binary-header-not-json", "post", V2, {"data": b"{x", "headers": {"inference-header-content-length": "2"}}, 400, "not valid JSON"),
    ("v2-binary-no-inputs", "post", V2, {"data": b"{}", "headers": {"inference-header-content-length": "2"}}, 400, "inputs: Field required"),
    ("v2-unknown-output", "post", V2, {"json": {**v2_json(GOOD), "outputs": [{"name": "nope"}]}}, 400, "nope"),
    ("v2-unknown-version", "post", "/v2/models/catdog/versions/99/infer", {"json": v2_json(GOOD)}, 404, "99"),
    ("v2-repository-unload", "post", "/v2/repository/models/catdog/unload", {}, 403, "disabled"),
    ("explain-not-an-image", "post", "/v1/models/catdog:explain", {"json": v1_json(b"nope" * 10)}, 400, "instances[0]"),
]


def _still_serves(server) -> None:
    response = server.predict(GOOD)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] in ("cat", "dog")


@pytest.mark.parametrize("case, method, path, kwargs, status, words", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_a_clear_4xx_and_the_server_keeps_serving(server, case, method, path, kwargs, status, words):
    response = getattr(requests, method)(server.url + path, timeout=30, **kwargs)
    assert response.status_code == status, f"{case}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json")
    message = response.json().get("error")
    assert message, response.text
    assert words in message, f"{case}: {message!r} lacks {words!r}"
    _still_serves(server)


@pytest.mark.parametrize("raw", [
    b"POST /v1/models/catdog:predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /v1/models/catdog:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{}",
    b"NONSENSE\r\n\r\n",
    b"POST /v1/models/catdog:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
], ids=["content-length-not-a-number", "content-length-huge", "not-http", "broken-chunking"])
def test_broken_http_gets_a_4xx_or_a_closed_connection(server, raw):
    """Requests no client library would send, over a raw socket."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if answer:  # an HTTP answer must be a 4xx (an empty answer means the connection was closed)
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:300]
    _still_serves(server)


def test_chunked_body_under_the_limit_is_served(server):
    body = json.dumps(v1_json(GOOD)).encode()
    response = requests.post(server.url + V1, data=(body[i:i + 1000] for i in range(0, len(body), 1000)),
                             headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 200, response.text


def test_base64_variants_are_accepted(server):
    """URL-safe alphabet, missing padding and wrapped lines all decode to the same image."""
    standard = base64.b64encode(GOOD).decode()
    wrapped = "\n".join(standard[i:i + 76] for i in range(0, len(standard), 76))
    urlsafe = base64.urlsafe_b64encode(GOOD).decode().rstrip("=")
    for text in (wrapped, urlsafe):
        response = server.post(V1, json={"instances": [{"b64": text}]})
        assert response.status_code == 200, response.text


def test_bad_and_good_requests_at_once_lose_nothing(server):
    """Concurrent good and bad requests: every good one answered 200, every bad one 4xx."""
    outcomes: list[tuple[str, int]] = []
    lock = threading.Lock()

    def client(kind: str, n: int) -> None:
        session = requests.Session()
        for i in range(n):
            if kind == "good":
                response = session.post(server.url + V1, json=v1_json(photo(i), photo(i + 1)), timeout=30)
            else:
                response = session.post(server.url + V1, json=v1_json(b"junk" * (i + 1)), timeout=30)
            with lock:
                outcomes.append((kind, response.status_code))

    threads = [threading.Thread(target=client, args=(kind, 15)) for kind in ("good", "bad") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 90
    assert {code for kind, code in outcomes if kind == "good"} == {200}
    assert {code for kind, code in outcomes if kind == "bad"} == {400}


def test_no_server_errors_were_counted(server):
    """After everything above, /metrics shows 4xx answers but no 500."""
    text = server.get("/metrics").text
    assert metric_value(text, "catdog_http_responses_total", code="400") > 0
    assert metric_value(text, "catdog_http_responses_total", code="413") > 0
    assert metric_value(text, "catdog_http_responses_total", code="500") == 0


def _raw_answer(url: str, data: bytes) -> bytes:
    """Send `data` on a raw connection; everything the server sends until it closes the connection."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_slow_clients_are_dropped_after_the_header_and_body_deadlines():
    """serving.server's protocol: headers that never finish, a connection that sends nothing, and a
    body that trickles (408, connection closed) all end; the server keeps serving."""
    from catdog.body_limit import header_timeout_protocol
    from serving.app import create_app
    from tests.helpers import uvicorn_in_thread

    model = make_model(tiny_model_dir())
    model.start()
    try:
        with uvicorn_in_thread(create_app(model, body_timeout_s=0.5), lifespan="off",
                               http=header_timeout_protocol(0.5)) as url:
            assert _raw_answer(url, b"POST " + V1.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Le") == b""
            assert _raw_answer(url, b"") == b""
            trickled = _raw_answer(url, b"POST " + V1.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                   b"application/json\r\nContent-Length: 500\r\n\r\n{\"instances\": [")
            assert trickled.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 0.5 s" in trickled
            assert b"connection: close" in trickled.lower()
            assert requests.get(url + "/v2/health/live", timeout=10).status_code == 200
    finally:
        model.stop()
