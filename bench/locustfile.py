"""Locust load test of the predictor: real photos from a folder, V1 and V2, a few small batches.

    locust -f bench/locustfile.py --host http://127.0.0.1:8080 --images FOLDER [--headless -u 8 -t 30s]

(`make load-test` runs it through `python -m bench.load_test`.) The task mix per user:
V1 one photo (6), V2 one photo (3), V2 binary one photo (2: raw bytes in the binary tensor
extension, binary outputs), V1 batch of 2-4 photos (1), V2 batch of 2-4 photos (1). Photos
come from --images (env CATDOG_IMAGES), spread over the folder; --large-fraction of them (default
0.1) are also sent re-encoded at --large-side px (default 2000) to mix in phone-sized uploads.
Every answer is checked: status 200 and one label per image; anything else counts as a failure.
"""

from __future__ import annotations

import base64
import io
import random

from locust import FastHttpUser, constant, events, task

from bench.load_client import BINARY_HEADER, answer_json, labels_of, photo_files, v2_binary_body

_photos: list[str] = []  # base64 strings


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--images", env_var="CATDOG_IMAGES", default="", help="folder of photos (recursive)")
    parser.add_argument("--max-images", type=int, env_var="CATDOG_MAX_IMAGES", default=200)
    parser.add_argument("--large-fraction", type=float, default=0.1, help="share of photos also sent upscaled")
    parser.add_argument("--large-side", type=int, default=2000, help="long side of the upscaled photos, px")
    parser.add_argument("--model-name", default="catdog")


def load_photos(folder: str, limit: int, large_fraction: float, large_side: int) -> list[str]:
    from PIL import Image

    photos = [p.read_bytes() for p in photo_files(folder, limit)]
    rng = random.Random(0)
    for data in rng.sample(photos, max(0, min(len(photos), round(len(photos) * large_fraction)))):
        with Image.open(io.BytesIO(data)) as image:
            scale = large_side / max(image.size)
            big = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)))
        buffer = io.BytesIO()
        big.save(buffer, "JPEG", quality=90)
        photos.append(buffer.getvalue())
    return [base64.b64encode(p).decode() for p in photos]


@events.test_start.add_listener
def _load(environment, **_):
    options = environment.parsed_options
    if not _photos and options is not None:
        _photos.extend(load_photos(options.images, options.max_images, options.large_fraction, options.large_side))
        print(f"locustfile: {len(_photos)} photos from {options.images}")


class PredictorUser(FastHttpUser):
    wait_time = constant(0)  # closed loop: each user sends its next request when the answer arrives

    def on_start(self):
        if not _photos:  # e.g. a worker process: load here
            options = self.environment.parsed_options
            _photos.extend(load_photos(options.images, options.max_images, options.large_fraction, options.large_side))
        self.model = self.environment.parsed_options.model_name

    def _send(self, name: str, path: str, body: dict | bytes, count: int, protocol: str, headers: dict | None = None):
        kwargs = {"data": body, "headers": headers} if isinstance(body, bytes) else {"json": body}
        with self.client.post(path, name=name, catch_response=True, **kwargs) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                answer_headers = {k.lower(): v for k, v in response.headers.items()}
                labels = labels_of(response.content, answer_headers)
                if protocol == "v2" and not answer_json(response.content, answer_headers).get("id"):
                    raise ValueError("V2 answer without an id")
            except Exception as exc:  # noqa: BLE001 - any malformed answer is a failure
                response.failure(f"bad answer: {exc}")
                return
            if len(labels) != count:
                response.failure(f"{len(labels)} labels for {count} images")
            else:
                response.success()

    def _v1(self, photos: list[str]):
        body = {"instances": [{"image_bytes": {"b64": p}} for p in photos]}
        self._send(f"V1 {len(photos)} image(s)", f"/v1/models/{self.model}:predict", body, len(photos), "v1")

    def _v2(self, photos: list[str]):
        body = {"inputs": [{"name": "image_bytes", "shape": [len(photos)], "datatype": "BYTES", "data": photos}]}
        self._send(f"V2 {len(photos)} image(s)", f"/v2/models/{self.model}/infer", body, len(photos), "v2")

    def _v2_binary(self, photo: str):
        body, header_length = v2_binary_body([base64.b64decode(photo)])
        self._send("V2 binary 1 image(s)", f"/v2/models/{self.model}/infer", body, 1, "v2",
                   {BINARY_HEADER: str(header_length), "Content-Type": "application/octet-stream"})

    @task(6)
    def v1_one(self):
        self._v1([random.choice(_photos)])

    @task(3)
    def v2_one(self):
        self._v2([random.choice(_photos)])

    @task(2)
    def v2_binary_one(self):
        self._v2_binary(random.choice(_photos))

    @task(1)
    def v1_batch(self):
        self._v1(random.sample(_photos, min(len(_photos), random.randint(2, 4))))

    @task(1)
    def v2_batch(self):
        self._v2(random.sample(_photos, min(len(_photos), random.randint(2, 4))))
