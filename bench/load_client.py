"""A small closed-loop HTTP/1.1 load client on asyncio, for benchmarks and tests.

`concurrency` connections (keep-alive) each send one request, wait for the answer, and send the
next, until `duration_s` has passed or `max_requests` were sent in all: every run is bounded in
time and count. Requests are prepared once (bytes on the wire), so the client spends almost no CPU
per request and the server under test gets the machine. Loopback only.

Bodies: V1 JSON (v1_body) and V2 in the binary tensor extension (v2_binary_body:
the JSON header, then the raw image bytes, its length in the Inference-Header-Content-Length
header); answers are counted by their labels, also from binary V2 answers.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def photo_files(folder: Path | str, limit: int) -> list[Path]:
    """Up to `limit` photo files, spread evenly over the folder's sorted (recursive) file list;
    the same photos for the benchmark and the load test."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise SystemExit(f"error: no .jpg/.png/.webp photos under {folder}")
    return files[:: max(1, len(files) // limit)][:limit]


LOOPBACK_HOSTS = {"localhost"}
BINARY_HEADER = "Inference-Header-Content-Length"  # the V2 binary tensor extension's JSON header length


@dataclass(frozen=True)
class PreparedRequest:
    wire: bytes  # the whole HTTP request
    expect: int  # predictions a good answer holds
    key: str = ""  # e.g. the image file, to collect labels per image


def check_loopback(url: str) -> tuple[str, int]:
    """(host, port) of an http:// URL on this machine; anything else is refused."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http":
        raise ValueError(f"{url}: only http:// URLs")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host in LOOPBACK_HOSTS
    if not loopback:
        raise ValueError(f"{url}: benchmarks and load tests only target this machine (127.0.0.1)")
    return host, parts.port or 80


def v1_body(images: list[bytes]) -> bytes:
    return orjson.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode()}} for b in images]})


def serialize_bytes(elements: list[bytes]) -> bytes:
    """A BYTES tensor in binary form: each element a 4-byte little-endian length, then its bytes."""
    return b"".join(len(e).to_bytes(4, "little") + e for e in elements)


def deserialize_bytes(data: bytes) -> list[bytes]:
    """The inverse of serialize_bytes; ValueError for truncated data."""
    elements, offset = [], 0
    while offset < len(data):
        length = int.from_bytes(data[offset:offset + 4], "little")
        if offset + 4 + length > len(data):
            raise ValueError(f"BYTES element {len(elements)} overruns the tensor's {len(data)} bytes")
        elements.append(data[offset + 4:offset + 4 + length])
        offset += 4 + length
    return elements


def v2_binary_body(images: list[bytes], binary_output: bool = True) -> tuple[bytes, int]:
    """(body, JSON header length) of a V2 request in the binary tensor extension: the images' raw
    bytes as one BYTES tensor after the JSON header; binary_output asks for binary outputs too."""
    data = serialize_bytes(images)
    header = {"inputs": [{"name": "image_bytes", "shape": [len(images)], "datatype": "BYTES",
                          "parameters": {"binary_data_size": len(data)}}]}
    if binary_output:
        header["parameters"] = {"binary_data_output": True}
    head = orjson.dumps(header)
    return head + data, len(head)


def prepare(url: str, path: str, body: bytes, expect: int = 1, key: str = "",
            header_length: int | None = None) -> PreparedRequest:
    """The request on the wire; header_length: a binary tensor extension body (v2_binary_body)."""
    host, port = check_loopback(url)
    if header_length is None:
        content = "Content-Type: application/json\r\n"
    else:
        content = f"Content-Type: application/octet-stream\r\n{BINARY_HEADER}: {header_length}\r\n"
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{content}"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n")
    return PreparedRequest(head.encode() + body, expect, key)


def prepare_v2_binary(url: str, path: str, images: list[bytes], key: str = "") -> PreparedRequest:
    """A V2 request of raw image bytes in the binary tensor extension, asking binary outputs."""
    body, header_length = v2_binary_body(images)
    return prepare(url, path, body, len(images), key, header_length)


@dataclass
class LoadResult:
    concurrency: int
    duration_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # successful requests only
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)  # key -> first label (when keys are set)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.duration_s if self.duration_s else 0.0

    def summary(self) -> dict:
        return {"concurrency": self.concurrency, "requests": self.requests, "errors": self.errors,
                "p50_ms": self.percentile(50), "p90_ms": self.percentile(90), "p99_ms": self.percentile(99),
                "rps": self.throughput, "duration_s": self.duration_s}

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(message)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed by the server")
    status = int(status_line.split(b" ", 2)[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            parts.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(parts)
    else:
        body = await reader.read()
    return status, headers, body


def answer_json(body: bytes, headers: dict[str, str]) -> dict:
    """The JSON of an answer: all of it, or the JSON header of a binary tensor extension answer;
    `headers` with lower-case names."""
    header_length = headers.get(BINARY_HEADER.lower())
    return orjson.loads(body if header_length is None else body[:int(header_length)])


def _binary_labels(body: bytes, header_length: int) -> list[str]:
    """The label output of a V2 answer in the binary tensor extension: the outputs that have a
    binary_data_size follow the JSON header, in the order of its outputs."""
    offset = header_length
    for output in orjson.loads(body[:header_length])["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if output["name"] == "label":
            if size is None:
                return output["data"]
            return [e.decode() for e in deserialize_bytes(body[offset:offset + size])]
        offset += size or 0
    raise KeyError("label")


def labels_of(body: bytes, headers: dict[str, str]) -> list[str]:
    """Labels from a V1 ({"predictions": ...}), V2 ({"outputs": ...}, JSON or binary) or feedback
    app ({"predicted_class": ...}) answer; `headers` with lower-case names."""
    if BINARY_HEADER.lower() in headers:
        return _binary_labels(body, int(headers[BINARY_HEADER.lower()]))
    data = orjson.loads(body)
    if "predicted_class" in data:
        return [data["predicted_class"]]
    if "predictions" in data:
        return [p["label"] for p in data["predictions"]]
    return next(o["data"] for o in data["outputs"] if o["name"] == "label")


async def _run(url: str, requests: list[PreparedRequest], concurrency: int, duration_s: float,
               max_requests: int, timeout_s: float) -> LoadResult:
    host, port = check_loopback(url)
    result = LoadResult(concurrency)
    sent = 0
    start = time.perf_counter()
    deadline = start + duration_s

    async def worker(offset: int) -> None:
        nonlocal sent
        cycle = itertools.islice(itertools.cycle(requests), offset, None)
        reader = writer = None
        try:
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                request = next(cycle)
                began = time.perf_counter()
                try:
                    if writer is None:
                        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
                    writer.write(request.wire)
                    status, headers, body = await asyncio.wait_for(_read_response(reader), timeout_s)
                    elapsed = (time.perf_counter() - began) * 1000
                    if headers.get("connection", "").lower() == "close":
                        writer.close()
                        reader = writer = None
                    if status != 200:
                        result.error(f"HTTP {status}: {body[:200]!r}")
                        continue
                    labels = labels_of(body, headers)
                    if len(labels) != request.expect:
                        result.error(f"{len(labels)} predictions for {request.expect} images")
                        continue
                    result.latencies_ms.append(elapsed)
                    if request.key and request.key not in result.labels:
                        result.labels[request.key] = labels[0]
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, KeyError,
                        StopIteration) as exc:
                    result.error(f"{type(exc).__name__}: {exc}")
                    if writer is not None:
                        writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    step = max(1, len(requests) // max(1, concurrency))
    await asyncio.gather(*(worker(i * step) for i in range(concurrency)))
    result.duration_s = time.perf_counter() - start
    return result


def run_load(url: str, requests: list[PreparedRequest], concurrency: int = 1, duration_s: float = 10.0,
             max_requests: int = 100_000, timeout_s: float = 30.0) -> LoadResult:
    """Closed-loop load against `url` (loopback only); bounded by duration_s and max_requests."""
    if not requests:
        raise ValueError("no requests to send")
    try:
        import uvloop

        return uvloop.run(_run(url, requests, concurrency, duration_s, max_requests, timeout_s))
    except ImportError:
        return asyncio.run(_run(url, requests, concurrency, duration_s, max_requests, timeout_s))
