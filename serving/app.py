"""The FastAPI application: KServe's V1 and V2 routes around CatDogModel, hardened.

Routes (model name `catdog` by default):
- GET  /, /v2/health/live                      liveness (200 while the process serves)
- GET  /v2/health/ready, /v2/models/catdog/ready, /v1/models/catdog
                                               readiness: 503 until a model version is loaded
- POST /v1/models/catdog:predict               V1: {"instances": [{"image_bytes": {"b64": ...}}]}
- POST /v1/models/catdog:explain               V1 + a Grad-CAM map per image ("overlay": true: + a PNG)
- POST /v2/models/catdog/infer                 V2 / Open Inference Protocol, one BYTES input image_bytes;
                                               JSON, or the binary tensor extension (raw image bytes)
- GET  /v2/models/catdog, /v1/models/catdog/metadata
                                               metadata: class names, input size, model version
- GET  /metrics                                Prometheus (catdog_* metrics carry model_version)
- Vertex AI: POST $AIP_PREDICT_ROUTE (Vertex's {"instances": [...]} format), GET $AIP_HEALTH_ROUTE

V2 binary tensor extension (header Inference-Header-Content-Length: the JSON header's length):
decoded here, not by KServe's InferRequest.from_bytes, which turns every BYTES element into UTF-8
text and so refuses raw images. Each BYTES element (4-byte little-endian length, then its bytes)
stays bytes; serving.kserve_model decides per element between a raw image and base64 text.

Hardening: bodies over `max_body_bytes` get 413 before they are parsed (catdog.body_limit: Content-Length, or
counted while streaming when chunked), bodies slower than `body_timeout_s` 408 (connection closed;
serving.server adds the header deadline); anything the request decoding raises is a 400 with the
reason; the model repository load/unload routes are not exposed; unexpected server errors are
500s with a logged traceback (none is expected from any input; the tests check).
"""

from __future__ import annotations

import logging
import warnings
from typing import Optional, Union

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.exceptions import FastAPIDeprecationWarning
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
    UnsupportedProtocol,
)
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import metrics_handler
from kserve.protocol.rest.v1_endpoints import V1Endpoints, register_v1_endpoints
from kserve.protocol.rest.v2_datamodels import InferenceRequest, RequestInput
from kserve.protocol.rest.v2_endpoints import V2Endpoints, register_v2_endpoints

from catdog.body_limit import BODY_TIMEOUT_S, BodyLimitMiddleware
from catdog.v2_binary import bytes_elements
from serving import metrics
from serving.kserve_model import CatDogModel
from serving.payload_logger import PayloadLogger, PayloadLoggingMiddleware

logger = logging.getLogger("catdog.serving")
# KServe's V1 route answers with fastapi's ORJSONResponse, deprecated in this FastAPI: one warning
# per request otherwise.
warnings.filterwarnings("ignore", category=FastAPIDeprecationWarning)

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024


class _BinaryInput(RequestInput):
    data: Optional[list] = None  # absent when the tensor's bytes follow the JSON header


class _BinaryHeader(InferenceRequest):
    inputs: list[_BinaryInput]



def decode_binary_request(body: bytes, header_length: str) -> InferenceRequest:
    """A V2 body in the binary tensor extension: `header_length` bytes of JSON, then the bytes of each
    input that has parameters.binary_data_size instead of data, in the order of the inputs."""
    try:
        json_length = int(header_length)
    except ValueError:
        raise InvalidInput(f"malformed request: {INFERENCE_CONTENT_LENGTH_HEADER} must be the JSON header's "
                           f"length in bytes, got {header_length!r}") from None
    if not 0 < json_length <= len(body):
        raise InvalidInput(f"malformed request: {INFERENCE_CONTENT_LENGTH_HEADER} is {json_length}, "
                           f"the body has {len(body)} bytes")
    try:
        header = _BinaryHeader.model_validate_json(body[:json_length])
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc.errors())) from None
    offset = json_length
    for tensor in header.inputs:
        if tensor.data is not None:
            continue
        size = (tensor.parameters or {}).get("binary_data_size")
        if not isinstance(size, int) or size < 0:
            raise InvalidInput(f"input {tensor.name!r}: no 'data' and no binary_data_size (a byte count) in its "
                               "parameters")
        if tensor.datatype != "BYTES":
            raise InvalidInput(f"input {tensor.name!r}: datatype must be BYTES (images), got {tensor.datatype}")
        if offset + size > len(body):
            raise InvalidInput(f"input {tensor.name!r}: binary_data_size {size}, but {len(body) - offset} bytes follow")
        try:
            tensor.data = bytes_elements(body[offset:offset + size], tensor.name)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        offset += size
    if offset != len(body):
        raise InvalidInput(f"malformed request: {len(body) - offset} bytes after the JSON header and the inputs' "
                           "binary_data_size bytes")
    return header


class CatDogDataPlane(DataPlane):
    """KServe's DataPlane, with readiness tied to the model and request decoding errors as 400s."""

    async def ready(self) -> bool:
        models = self.model_registry.get_models().values()
        return bool(models) and all([await m.healthy() for m in models])

    def metadata(self) -> dict:
        return {**super().metadata(), "extensions": []}  # no model repository extension

    async def model_metadata(self, model_name: str) -> dict:
        metadata = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        if isinstance(model, CatDogModel):
            info = model.describe()
            if info["model_version"]:
                metadata["versions"] = [info["model_version"]]
            metadata["parameters"] = {
                k: info[k] for k in ("model_version", "class_names", "input_size", "image_size", "source", "loaded_at",
                                     "explain_method", "explain_grid")
            }
            if info.get("ood"):  # the out-of-distribution method and threshold (models since the score)
                metadata["parameters"]["ood"] = info["ood"]
        return metadata

    def decode_inference_request(self, body, headers, model_name):
        """V2 bytes: the binary tensor extension with its header (decode_binary_request), else a JSON
        body sent without a JSON content type."""
        if isinstance(body, (bytes, bytearray)):
            header_length = (headers or {}).get(INFERENCE_CONTENT_LENGTH_HEADER)
            if header_length is not None:
                body = decode_binary_request(bytes(body), header_length)
            else:
                try:
                    body = InferenceRequest.model_validate(orjson.loads(body))
                except orjson.JSONDecodeError as exc:
                    raise InvalidInput(f"request body is not valid JSON ({exc})") from None
                except ValidationError as exc:
                    raise InvalidInput(_validation_message(exc.errors())) from None
        return super().decode_inference_request(body, headers, model_name)

    def decode(self, body, headers, *args, **kwargs):
        try:
            return super().decode(body, headers, *args, **kwargs)
        except InvalidInput as exc:
            prefix = "Unrecognized request format: "
            if str(exc).startswith(prefix):
                raise InvalidInput(f"request body is not valid JSON ({str(exc)[len(prefix):]})") from None
            raise
        except KeyError as exc:
            raise InvalidInput(f"malformed request: missing field {exc}") from None
        except Exception as exc:  # TypeError/ValueError/InferenceError... from a malformed body
            raise InvalidInput(f"malformed request ({type(exc).__name__}: {str(exc)[:200]})") from None


# -- response accounting (the body limit is catdog.body_limit's, shared with the feedback app) -----
def _count_status(status: int) -> None:
    metrics.HTTP_RESPONSES.labels(str(status)).inc()
    if 400 <= status < 500:
        metrics.REJECTED.labels(str(status)).inc()


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


# -- exception handlers: short JSON answers; tracebacks only for real server errors ----------------
def _json_error(status: int, message: str) -> JSONBody:
    return JSONBody(status_code=status, content={"error": message})


async def _invalid_input(request: Request, exc: InvalidInput):
    logger.info("400 %s %s: %s", request.method, request.url.path, exc)
    return _json_error(400, str(exc))


def _validation_message(errors) -> str:
    parts = []
    for error in list(errors)[:5]:
        location = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "InferenceRequest"))
        if location == "bytes" or error.get("type") == "json_invalid":
            continue  # the body also failed the "raw bytes" branch of the route's union: noise
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    json_errors = [e for e in errors if e.get("type") == "json_invalid"]
    if json_errors:
        parts.insert(0, f"not valid JSON ({json_errors[0].get('ctx', {}).get('error', 'parse error')})")
    return "invalid request body: " + ("; ".join(parts) or "unexpected structure")


async def _request_validation(request: Request, exc: RequestValidationError):
    message = _validation_message(exc.errors())
    logger.info("400 %s %s: %s", request.method, request.url.path, message)
    return _json_error(400, message)


async def _http_exception(request: Request, exc: StarletteHTTPException):
    """Starlette/FastAPI's own errors (404 route, 405 method, unparseable body) in our {"error"} shape."""
    message = str(exc.detail)
    if exc.status_code == 400 and "parsing the body" in message:
        message = "request body is not valid JSON (could not be parsed)"
    return JSONBody(status_code=exc.status_code, content={"error": message}, headers=getattr(exc, "headers", None))


async def _not_found(request: Request, exc: ModelNotFound):
    return _json_error(404, str(exc))


async def _not_ready(request: Request, exc: Exception):
    return _json_error(503, str(exc))


async def _unsupported(request: Request, exc: Exception):
    return _json_error(400, str(exc))


async def _server_error(request: Request, exc: Exception):
    # Starlette answers unhandled errors from outside our middleware: count the 500 here
    metrics.HTTP_RESPONSES.labels("500").inc()
    logger.error("500 %s %s", request.method, request.url.path, exc_info=exc)
    return _json_error(500, f"internal error ({type(exc).__name__}); see the server log")


def create_app(
    model: CatDogModel,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    vertex_predict_route: Optional[str] = None,
    vertex_health_route: Optional[str] = None,
    body_timeout_s: Optional[float] = BODY_TIMEOUT_S,
    payload_logger: Optional[PayloadLogger] = None,
) -> FastAPI:
    """A new app serving `model` (call model.start() or model.load() to load it); with a started
    `payload_logger`, inference requests and answers are also sent to it (serving.payload_logger)."""
    repository = ModelRepository()
    repository.update(model)
    dataplane = CatDogDataPlane(model_registry=repository)
    extension = ModelRepositoryExtension(model_registry=repository)
    v1 = V1Endpoints(dataplane, extension)
    v2 = V2Endpoints(dataplane, extension)

    app = FastAPI(title="catdog predictor (KServe)", docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=JSONBody)
    app.state.model = model

    def check_version(model_name: str, model_version: str) -> None:
        current = model.current
        if model_name == model.name and (current is None or current.version != model_version):
            raise ModelNotFound(f"{model_name} version {model_version} (serving "
                                f"{current.version if current else 'nothing yet'})")

    # Our routes first: they take precedence over KServe's for the same paths.
    async def v2_metadata(model_name: str):
        return await dataplane.model_metadata(model_name)

    async def v2_metadata_version(model_name: str, model_version: str):
        check_version(model_name, model_version)
        return await dataplane.model_metadata(model_name)

    async def v2_ready_version(model_name: str, model_version: str):
        check_version(model_name, model_version)
        return await v2.model_ready(model_name)

    async def v2_infer_version(raw_request: Request, raw_response: Response, model_name: str, model_version: str,
                               request_body: Union[InferenceRequest, bytes]):
        check_version(model_name, model_version)
        return await v2.infer(raw_request, raw_response, model_name, request_body)

    async def v1_metadata(model_name: str):
        dataplane.get_model_from_registry(model_name)  # 404 for unknown names
        return model.describe()

    app.add_api_route("/v2/models/{model_name}", v2_metadata, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}", v2_metadata_version, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/ready", v2_ready_version, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/infer", v2_infer_version,
                      methods=["POST"], response_model=None)
    app.add_api_route("/v1/models/{model_name}/metadata", v1_metadata, methods=["GET"])

    if vertex_predict_route:
        async def vertex_predict(request: Request):
            return await v1.predict(model.name, request)

        app.add_api_route(vertex_predict_route, vertex_predict, methods=["POST"], response_model=None)
    if vertex_health_route:
        async def vertex_health():
            if not model.ready:
                raise ModelNotReady(model.name, model.last_error or "loading")
            return {"ready": True, "model_version": model.current.version}

        app.add_api_route(vertex_health_route, vertex_health, methods=["GET"])

    app.add_api_route("/", dataplane.live, methods=["GET"])
    app.add_api_route("/metrics", metrics_handler, methods=["GET"])
    async def repository_disabled(model_name: str):
        # Loading/unloading models over HTTP would let any client take the service down.
        return _json_error(403, "the model repository extension (load/unload over HTTP) is disabled")

    async def use_post(model_name: str):
        return _json_error(405, "use POST with a JSON body")

    for verb in ("predict", "explain"):
        app.add_api_route(f"/v1/models/{{model_name}}:{verb}", use_post, methods=["GET"])
    for action in ("load", "unload"):
        app.add_api_route(f"/v2/repository/models/{{model_name}}/{action}", repository_disabled, methods=["POST"])
    register_v1_endpoints(app, dataplane, extension)
    register_v2_endpoints(app, dataplane, extension)

    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(ModelNotFound, _not_found)
    app.add_exception_handler(ModelNotReady, _not_ready)
    app.add_exception_handler(ServerNotReady, _not_ready)
    app.add_exception_handler(ServerNotLive, _not_ready)
    app.add_exception_handler(UnsupportedProtocol, _unsupported)
    app.add_exception_handler(Exception, _server_error)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes, setting="--max-body-bytes",
                       on_status=_count_status, body_timeout_s=body_timeout_s)
    if payload_logger is not None:  # outermost: sees only bodies the limits let through
        app.add_middleware(PayloadLoggingMiddleware, payload_logger=payload_logger,
                           extra_routes=(vertex_predict_route or "",))
    return app
