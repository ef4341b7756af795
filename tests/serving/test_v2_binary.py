"""V2 with a real Open Inference Protocol client (tritonclient.http) against the app on loopback:
raw image bytes and base64 text, in JSON and in the binary tensor extension, binary and JSON
outputs; the optional gradcam output; the input-name and bad-element 400s. Labels must equal V1's."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests
import tritonclient.http as tritonclient_http  # a dev dependency (pyproject.toml)
from tritonclient.utils import InferenceServerException

from tests.serving_fixtures import make_model, photo, run_server, tiny_model_dir, v1_json

pytestmark = pytest.mark.filterwarnings("ignore::fastapi.exceptions.FastAPIDeprecationWarning")

PHOTOS = [photo(i, size=(60 + 11 * i, 48)) for i in range(6)]
OTHER_FORMATS = [photo(7, "PNG", (40, 70)), photo(8, "WEBP", (90, 60)), photo(9, "GIF", (50, 50)),
                 photo(10, "BMP", (64, 40))]
V2 = "/v2/models/catdog/infer"


@pytest.fixture(scope="module")
def server():
    with run_server(make_model(tiny_model_dir(), max_instances=8)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    client = tritonclient_http.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def reference():
    from catdog.onnx_predictor import OnnxPredictor

    return OnnxPredictor(tiny_model_dir())


def v1_labels(server, images) -> list[str]:
    response = server.post("/v1/models/catdog:predict", json=v1_json(*images))
    assert response.status_code == 200, response.text
    return [p["label"] for p in response.json()["predictions"]]


def image_input(images, raw: bool, binary: bool, name: str = "image_bytes"):
    tensor = tritonclient_http.InferInput(name, [len(images)], "BYTES")
    elements = images if raw else [base64.b64encode(i) for i in images]
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    return tensor


def output(name: str, binary: bool):
    return tritonclient_http.InferRequestedOutput(name, binary_data=binary)


def decoded(labels: np.ndarray) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else x for x in labels]


@pytest.mark.parametrize("raw, binary_input", [(True, True), (False, True), (False, False)],
                         ids=["raw-bytes-binary", "base64-binary", "base64-json"])
@pytest.mark.parametrize("binary_output", [True, False], ids=["binary-out", "json-out"])
def test_labels_equal_v1_for_every_encoding(server, client, raw, binary_input, binary_output):
    result = client.infer("catdog", [image_input(PHOTOS, raw, binary_input)], outputs=[output("label", binary_output)])
    assert decoded(result.as_numpy("label")) == v1_labels(server, PHOTOS)
    (label,) = result.get_response()["outputs"]
    assert ("data" not in label) == binary_output  # binary outputs follow the JSON header
    assert set(v1_labels(server, PHOTOS)) == {"cat", "dog"}


def test_raw_bytes_of_every_accepted_format(server, client):
    result = client.infer("catdog", [image_input(OTHER_FORMATS, raw=True, binary=True)], outputs=[output("label", True)])
    assert decoded(result.as_numpy("label")) == v1_labels(server, OTHER_FORMATS)


def test_raw_and_base64_elements_mix_in_one_tensor(server):
    from bench.load_client import serialize_bytes

    data = serialize_bytes([PHOTOS[0], base64.b64encode(PHOTOS[1])])
    head = (b'{"inputs": [{"name": "image_bytes", "shape": [2], "datatype": "BYTES", '
            b'"parameters": {"binary_data_size": %d}}]}' % len(data))
    response = server.post(V2, data=head + data, headers={"inference-header-content-length": str(len(head))})
    assert response.status_code == 200, response.text
    (label,) = [o for o in response.json()["outputs"] if o["name"] == "label"]
    assert label["data"] == v1_labels(server, PHOTOS[:2])


def test_no_outputs_named_gives_label_and_probabilities_in_binary(server, client, reference):
    result = client.infer("catdog", [image_input(PHOTOS, raw=True, binary=True)])  # binary_data_output: true
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label", "probabilities"]
    assert all("data" not in o for o in result.get_response()["outputs"])
    assert np.allclose(result.as_numpy("probabilities"), reference.predict_bytes(PHOTOS), atol=1e-6)
    assert result.as_numpy("gradcam") is None


@pytest.mark.parametrize("binary_output", [True, False], ids=["binary-out", "json-out"])
def test_gradcam_output_when_requested(server, client, reference, binary_output):
    result = client.infer("catdog", [image_input(PHOTOS, raw=True, binary=True)],
                          outputs=[output("label", binary_output), output("gradcam", binary_output)])
    labels = decoded(result.as_numpy("label"))
    assert labels == v1_labels(server, PHOTOS)
    maps = result.as_numpy("gradcam")
    grid = server.get("/v1/models/catdog/metadata").json()["explain_grid"]
    assert maps.dtype == np.float32 and maps.shape == (len(PHOTOS), *grid)
    probabilities, expected = reference.explain_pixels(np.stack([reference.pixels(p) for p in PHOTOS]))
    targets = probabilities.argmax(axis=1)
    assert np.allclose(maps, expected[np.arange(len(PHOTOS)), ..., targets], atol=1e-4)
    assert maps.min() >= 0 and maps.max() <= 1
    (gradcam,) = [o for o in result.get_response()["outputs"] if o["name"] == "gradcam"]
    assert gradcam["parameters"]["classes"] == ",".join(labels)


def test_gradcam_is_computed_only_when_requested(server, client, monkeypatch):
    from tests.serving.test_explain import CountingSession

    counting = CountingSession(server.model.current.predictor.session)
    monkeypatch.setattr(server.model.current.predictor, "session", counting)
    inputs = [image_input(PHOTOS[:3], raw=True, binary=True)]
    client.infer("catdog", inputs, outputs=[output("label", True), output("probabilities", True)])
    client.infer("catdog", inputs, outputs=[output("gradcam", True)])
    assert counting.runs == [(["probabilities"], 3), (["probabilities", "gradcam"], 3)]


def test_request_level_binary_data_output_covers_named_outputs(server):
    from bench.load_client import labels_of, v2_binary_body

    body, header_length = v2_binary_body(PHOTOS[:2], binary_output=True)
    head, data = body[:header_length], body[header_length:]
    head = head[:-1] + b', "outputs": [{"name": "label"}]}'
    response = server.post(V2, data=head + data, headers={"inference-header-content-length": str(len(head))})
    assert response.status_code == 200, response.text
    assert "inference-header-content-length" in response.headers
    assert labels_of(response.content, dict(response.headers.lower_items())) == v1_labels(server, PHOTOS[:2])


def _refusal(client, inputs) -> str:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("catdog", inputs, outputs=[output("label", True)])
    assert caught.value.status() == "400", caught.value
    return caught.value.message()


def test_wrong_input_name_is_a_400_naming_the_expected_one(client):
    message = _refusal(client, [image_input(PHOTOS[:1], raw=True, binary=True, name="images")])
    assert "'images'" in message and "'image_bytes'" in message


@pytest.mark.parametrize("element, words", [
    (b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 4, "data[1]: not a decodable image"),
    (PHOTOS[2][: len(PHOTOS[2]) // 2], "data[1]: corrupt or truncated image data"),
    (b"\x00\x01\x02binary, no image signature\xfe", "data[1]: neither an image"),
    (b"plain text, not base64!", "data[1]: invalid base64"),
], ids=["jpeg-signature-garbage", "truncated-jpeg", "binary-not-an-image", "text-not-base64"])
def test_bad_raw_element_is_a_400_naming_it(server, client, element, words):
    assert words in _refusal(client, [image_input([PHOTOS[0], element], raw=True, binary=True)])
    assert v1_labels(server, PHOTOS[:1])  # still serving


def test_binary_v2_is_counted_and_answered_by_the_load_client(server):
    from bench.load_client import prepare_v2_binary, run_load, v2_binary_body

    prepared = [prepare_v2_binary(server.url, V2, [p], f"p{i}") for i, p in enumerate(PHOTOS)]
    result = run_load(server.url, prepared, concurrency=2, duration_s=30, max_requests=len(PHOTOS) * 2)
    assert result.errors == 0, result.error_samples
    assert [result.labels[f"p{i}"] for i in range(len(PHOTOS))] == v1_labels(server, PHOTOS)
    with requests.Session() as session:  # the raw HTTP the load client sends is a valid binary request
        body, header_length = v2_binary_body(PHOTOS[:1], binary_output=False)
        answer = session.post(server.url + V2, data=body, headers={"inference-header-content-length": str(header_length)})
        assert answer.status_code == 200 and "inference-header-content-length" not in answer.headers
