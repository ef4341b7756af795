"""Reading the bodies that KServe's payload logger forwards: the photos of an inference request and
the predictions of its response, V1 and V2 (JSON, and the binary tensor extension).

    request_images(body, metadata) -> list[bytes]      the raw photos, in the batch's order
    response_predictions(body) -> list[Prediction]     one per photo, in the same order

Shapes (those the predictor accepts, serving/requests.py and serving/model.py):
- V1 (and Vertex) request {"instances": [{"image_bytes": {"b64": ...}} or {"b64": ...}, ...]};
  response {"predictions": [{"label", "probabilities": {class: p}[, "ood_score", "neither"]}]}.
- V2 JSON request: one BYTES input "image_bytes" whose elements are base64 text; response
  {"model_name", "model_version", "outputs": [label BYTES [n], probabilities FP32 [n, k] with
  parameters.class_names "a,b", ood_score FP32 [n], neither BOOL [n]]}.
- V2 binary tensor extension, request or response: a JSON header, then the bytes of every tensor
  that has parameters.binary_data_size (BYTES: each element a 4-byte little-endian length, then
  its bytes; FP32 little-endian; BOOL one byte each). The logger's event does not carry the
  Inference-Header-Content-Length header (unless the InferenceService's logger.metadataHeaders
  propagates it: then `metadata` gives it); without it the header's end is where its JSON ends.
A BYTES element that starts with an image signature is the raw photo, any other base64 text (the
predictor's rule). Written here rather than imported from serving/: the app's image has no KServe.
Every problem raises Unreadable with the reason.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

import numpy as np

from catdog.v2_binary import bytes_elements

HEADER_LENGTH = "inference-header-content-length"
V2_INPUT = "image_bytes"
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
DTYPES = {"FP32": "<f4", "FP64": "<f8", "BOOL": "?", "INT32": "<i4", "INT64": "<i8"}


class Unreadable(ValueError):
    """A body this sink cannot read; the message says why."""


class NotInference(Unreadable):
    """A body that is no inference at all (KServe's logger also forwards metadata and health calls)."""


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]
    ood_score: float | None = None
    neither: bool | None = None
    model_name: str | None = None  # V2 answers name the model and its version; V1 answers do not
    model_version: str | None = None


def _split_binary(body: bytes, metadata: dict | None) -> tuple[dict, bytes]:
    """(the JSON header, the bytes after it) of a body that may use the binary tensor extension."""
    length = None
    for name, values in (metadata or {}).items():
        if name.lower() == HEADER_LENGTH and values:
            length = values[0] if isinstance(values, list) else values
    try:
        if length is not None:
            return json.loads(body[:int(length)]), body[int(length):]
        text = body.decode("utf-8", errors="surrogateescape")
        header, end = json.JSONDecoder().raw_decode(text)
    except (ValueError, TypeError) as exc:
        raise Unreadable(f"the body is not JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    return header, text[end:].encode("utf-8", errors="surrogateescape")


def _object(body: bytes, metadata: dict | None) -> tuple[dict, bytes]:
    if not body.strip():
        raise NotInference("the body is empty")
    header, rest = _split_binary(body, metadata)
    if not isinstance(header, dict):
        raise Unreadable(f"expected a JSON object, got {type(header).__name__}")
    return header, rest



def _tensors(tensors, rest: bytes, what: str) -> dict[str, list]:
    """name -> flat list of values of V2 `tensors`, reading binary data from `rest` in order."""
    if not isinstance(tensors, list):
        raise Unreadable(f"'{what}' must be a list")
    values, offset = {}, 0
    for tensor in tensors:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise Unreadable(f"every element of '{what}' must be a tensor object with a name")
        name, datatype = tensor["name"], tensor.get("datatype")
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if "data" in tensor and tensor["data"] is not None:
            values[name] = _flat(tensor["data"])
        elif isinstance(size, int) and 0 <= size <= len(rest) - offset:
            chunk = rest[offset:offset + size]
            offset += size
            if datatype == "BYTES":
                try:
                    values[name] = bytes_elements(chunk, name)
                except ValueError as exc:
                    raise Unreadable(str(exc)) from None
            elif datatype in DTYPES:
                values[name] = np.frombuffer(chunk, dtype=DTYPES[datatype]).tolist()
            else:
                raise Unreadable(f"tensor {name!r}: datatype {datatype!r} is not read here")
        else:
            raise Unreadable(f"tensor {name!r}: no data, and no binary_data_size that the body holds")
    if offset != len(rest):
        raise Unreadable(f"{len(rest) - offset} bytes after the JSON header and the tensors' binary data")
    return values


def _flat(data) -> list:
    if isinstance(data, list):
        return [item for element in data for item in _flat(element)]
    return [data]


def _base64(text, where: str) -> bytes:
    if not isinstance(text, str):
        raise Unreadable(f"{where}: expected base64 text, got {type(text).__name__}")
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Unreadable(f"{where}: invalid base64 ({exc})") from None


def _is_image(data: bytes) -> bool:
    return data.startswith(IMAGE_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def request_images(body: bytes, metadata: dict | None = None) -> list[bytes]:
    """The photos of a V1 or V2 inference request body."""
    payload, rest = _object(body, metadata)
    if "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise Unreadable("'instances' must be a non-empty list")
        images = []
        for i, instance in enumerate(instances):
            value = instance.get("image_bytes", instance) if isinstance(instance, dict) else None
            if not isinstance(value, dict) or "b64" not in value:
                raise Unreadable(f'instances[{i}]: expected {{"image_bytes": {{"b64": ...}}}}')
            images.append(_base64(value["b64"], f"instances[{i}]"))
        return images
    if "inputs" in payload:
        tensors = _tensors(payload["inputs"], rest, "inputs")
        if V2_INPUT not in tensors:
            raise Unreadable(f"no input {V2_INPUT!r} among {sorted(tensors)}")
        images = []
        for i, item in enumerate(tensors[V2_INPUT]):
            if isinstance(item, (bytes, bytearray)) and _is_image(item):
                images.append(bytes(item))
            else:
                text = item.decode("ascii", errors="replace") if isinstance(item, (bytes, bytearray)) else item
                images.append(_base64(text, f"{V2_INPUT}[{i}]"))
        if not images:
            raise Unreadable(f"input {V2_INPUT!r} holds no element")
        return images
    raise NotInference("neither 'instances' (V1) nor 'inputs' (V2): not an inference request")


def _probabilities(value, where: str) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise Unreadable(f"{where}: probabilities must be an object of class -> probability")
    result = {}
    for name, p in value.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p):
            raise Unreadable(f"{where}: probability of {name!r} is not a finite number")
        result[str(name)] = float(p)
    return result


def _checked(prediction: Prediction, where: str) -> Prediction:
    if prediction.label not in prediction.probabilities:
        raise Unreadable(f"{where}: label {prediction.label!r} is not among the probabilities")
    if prediction.ood_score is not None and not math.isfinite(prediction.ood_score):
        raise Unreadable(f"{where}: ood_score is not a finite number")
    if prediction.neither is not None and not isinstance(prediction.neither, bool):
        raise Unreadable(f"{where}: neither is not true or false")
    return prediction


def response_predictions(body: bytes, metadata: dict | None = None) -> list[Prediction]:
    """The predictions of a V1 or V2 inference response body, in the batch's order."""
    payload, rest = _object(body, metadata)
    if "predictions" in payload:
        rows = payload["predictions"]
        if not isinstance(rows, list) or not rows:
            raise Unreadable("'predictions' must be a non-empty list")
        result = []
        for i, row in enumerate(rows):
            where = f"predictions[{i}]"
            if not isinstance(row, dict) or not isinstance(row.get("label"), str):
                raise Unreadable(f"{where}: expected an object with a label and probabilities")
            score = row.get("ood_score")
            if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
                raise Unreadable(f"{where}: ood_score is not a number")
            result.append(_checked(Prediction(row["label"], _probabilities(row.get("probabilities"), where),
                                              None if score is None else float(score), row.get("neither")), where))
        return result
    if "outputs" in payload:
        tensors = _tensors(payload["outputs"], rest, "outputs")
        names = {t.get("name"): t for t in payload["outputs"]}
        if "label" not in tensors or "probabilities" not in tensors:
            raise Unreadable("a V2 answer needs the outputs 'label' and 'probabilities'")
        labels = [v.decode() if isinstance(v, (bytes, bytearray)) else v for v in tensors["label"]]
        classes = str(((names["probabilities"].get("parameters") or {}).get("class_names") or "")).split(",")
        flat = tensors["probabilities"]
        if not labels or classes == [""] or len(flat) != len(labels) * len(classes):
            raise Unreadable(f"probabilities hold {len(flat)} values for {len(labels)} label(s) and classes {classes}")
        scores, flags = tensors.get("ood_score"), tensors.get("neither")
        for extra, values in (("ood_score", scores), ("neither", flags)):
            if values is not None and len(values) != len(labels):
                raise Unreadable(f"output {extra!r} holds {len(values)} values for {len(labels)} label(s)")
        version = payload.get("model_version")
        result = []
        for i, label in enumerate(labels):
            row = flat[i * len(classes):(i + 1) * len(classes)]
            where = f"outputs[{i}]"
            result.append(_checked(Prediction(
                str(label), _probabilities(dict(zip(classes, row)), where),
                None if scores is None else float(scores[i]), None if flags is None else bool(flags[i]),
                payload.get("model_name"), None if version is None else str(version)), where))
        return result
    raise NotInference("neither 'predictions' (V1) nor 'outputs' (V2): not an inference answer")
