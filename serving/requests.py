"""Request decoding: V1/Vertex bodies and V2 InferRequests -> a Batch of raw image bytes.

Every problem is an InvalidInput (HTTP 400) naming the instance or element and what was wrong.
A V2 BYTES element that starts with an image signature (JPEG, PNG, WebP, GIF, BMP) is the raw
image (the binary tensor extension carries such bytes); any other element is base64 text. No
base64 text of an image starts with those bytes, so the rule never misreads a valid element.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import orjson

from serving.kserve_import import kserve  # noqa: F401 (first: keeps kserve from parsing our command line)
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, RequestedOutput

V2_INPUT_NAME = "image_bytes"
# gradcam only when requested by name; ood_score and neither for a model with the neither score
# embedding only when requested by name (a model trained since 2026-12-04 has it)
V2_OUTPUTS = ("label", "probabilities", "gradcam", "ood_score", "neither", "embedding")
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")  # + RIFF....WEBP
V1_FORMAT_HINT = '{"instances": [{"image_bytes": {"b64": "<base64 JPEG/PNG/WebP>"}}, ...]}'


@dataclass
class Batch:
    images: list[bytes]
    where: list[str]  # how to name each image in an error message
    protocol: str  # "v1" (also Vertex) or "v2"
    request: InferRequest | None = None
    overlay: bool = False  # V1 :explain: also a PNG of each map over its photo
    outputs: frozenset[str] = frozenset()  # V2 outputs named in the request (none: label and probabilities)
    embedding: bool = False  # V1/Vertex "parameters": {"embedding": true}, or V2's output "embedding" named


def decode_base64(text: Any, where: str) -> bytes:
    """Standard or URL-safe base64, with or without padding or line breaks; else InvalidInput."""
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{where}: invalid base64 ({exc})") from None


def _v1_instance_image(instance: Any, where: str) -> bytes:
    if isinstance(instance, dict):
        value = instance.get("image_bytes", instance)
        if isinstance(value, dict) and "b64" in value:
            return decode_base64(value["b64"], f"{where}.image_bytes.b64" if "image_bytes" in instance else f"{where}.b64")
        if "image_bytes" in instance:
            raise InvalidInput(f'{where}.image_bytes: expected {{"b64": "<base64>"}}')
    raise InvalidInput(f"{where}: expected an object with image_bytes.b64, e.g. {V1_FORMAT_HINT}")


def _has_image_signature(data: bytes) -> bool:
    """Whether `data` starts like a JPEG, PNG, GIF, BMP or WebP file (the formats we decode)."""
    return data.startswith(IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _v2_element_image(item: Any, where: str) -> bytes:
    """A V2 BYTES element: raw image bytes when it starts with an image signature, else base64 text."""
    if isinstance(item, (bytes, bytearray)):
        if _has_image_signature(item):
            return bytes(item)
        try:
            item = item.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidInput(f"{where}: neither an image (no JPEG/PNG/WebP/GIF/BMP signature in its first "
                               "bytes) nor base64 text") from None
    return decode_base64(item, where)


def requested_outputs(request: InferRequest) -> list[RequestedOutput] | None:
    """The named outputs, binary when they say so or, saying nothing, when the request asks
    binary_data_output (KServe's InferResponse.to_rest reads only the per-output flag)."""
    if not request.request_outputs:
        return None
    default = request.use_binary_outputs
    return [output if output.binary_data is not None
            else RequestedOutput(output.name, {**(output.parameters or {}), "binary_data": default})
            for output in request.request_outputs]


def _flatten(data: Any) -> list:
    if isinstance(data, (list, tuple)):
        return [item for element in data for item in _flatten(element)]
    return [data]


def check_count(count: int, what: str, max_instances: int) -> None:
    if count == 0:
        raise InvalidInput(f"{what} is empty: send at least one image")
    if count > max_instances:
        raise InvalidInput(
            f"{what} has {count} images; at most {max_instances} per request (--max-instances)"
        )


def parse_v1(payload: Any, max_instances: int) -> Batch:
    """A V1 (or Vertex) body: {"instances": [...]}, and for :explain an optional "overlay": true;
    "parameters" (Vertex's field for request options) may hold "embedding": true."""
    if isinstance(payload, (bytes, bytearray, str)):  # a non-JSON content type reaches us raw
        try:
            payload = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"request body is not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise InvalidInput(f"expected a JSON object like {V1_FORMAT_HINT}, got {type(payload).__name__}")
    if "instances" not in payload:
        hint = "; V2 requests go to /v2/models/<name>/infer" if "inputs" in payload else ""
        raise InvalidInput(f"missing field 'instances': expected {V1_FORMAT_HINT}{hint}")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f"'instances' must be a list, got {type(instances).__name__}")
    check_count(len(instances), "'instances'", max_instances)
    overlay = payload.get("overlay", False)
    if not isinstance(overlay, bool):
        raise InvalidInput(f"'overlay' must be true or false, got {type(overlay).__name__}")
    parameters = payload.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"'parameters' must be an object, got {type(parameters).__name__}")
    embedding = parameters.get("embedding", False)
    if not isinstance(embedding, bool):
        raise InvalidInput(f"'parameters.embedding' must be true or false, got {type(embedding).__name__}")
    where = [f"instances[{i}]" for i in range(len(instances))]
    images = [_v1_instance_image(instance, w) for instance, w in zip(instances, where)]
    return Batch(images, where, "v1", overlay=overlay, embedding=embedding)


def parse_v2(request: InferRequest, max_instances: int) -> Batch:
    """A V2 request: one BYTES tensor named image_bytes, shape [n] or [n, 1]; outputs by name."""
    if len(request.inputs) != 1:
        raise InvalidInput(
            f"expected one input tensor ({V2_INPUT_NAME!r}, BYTES, images), got {len(request.inputs)}"
        )
    tensor = request.inputs[0]
    name = f"input {tensor.name!r}"
    if tensor.name != V2_INPUT_NAME:
        raise InvalidInput(f"{name}: this model's input is {V2_INPUT_NAME!r} (BYTES, images)")
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"{name}: datatype must be BYTES (images), got {tensor.datatype}")
    data = _flatten(tensor.data if tensor.data is not None else [])
    try:
        shape = [int(d) for d in tensor.shape]
    except (TypeError, ValueError):
        raise InvalidInput(f"{name}: shape must be a list of integers, got {tensor.shape!r}") from None
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or math.prod(shape) != len(data):
        raise InvalidInput(f"{name}: shape {shape} does not match {len(data)} element(s); use [n] or [n, 1]")
    check_count(len(data), f"{name} data", max_instances)
    outputs = frozenset(o.name for o in request.request_outputs or [])
    unknown = sorted(outputs - set(V2_OUTPUTS))
    if unknown:
        raise InvalidInput(f"unknown output {unknown[0]!r}: the outputs are {', '.join(V2_OUTPUTS)}")
    where = [f"{name} data[{i}]" for i in range(len(data))]
    images = [_v2_element_image(item, w) for item, w in zip(data, where)]
    return Batch(images, where, "v2", request, outputs=outputs, embedding="embedding" in outputs)
