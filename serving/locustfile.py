"""Locust load test of the predictor: real photos from a folder, V1 and V2, a few small batches.

    locust -f serving/locustfile.py --host http://127.0.0.1:8080 --images FOLDER [--headless -u 8 -t 30s]

(`make load-test` runs it through `python -m serving.load_test`.) The task mix per user:
V1 one photo (6), V2 one photo (3), V1 batch of 2-4 photos (1), V2 batch of 2-4 photos (1). Photos
come from --images (env CATDOG_IMAGES), spread over the folder; --large-fraction of them (default
0.1) are also sent re-encoded at --large-side px (default 2000) to mix in phone-sized uploads.
Every answer is checked: status 200 and one label per image; anything else counts as a failure.
"""

from __future__ import annotations

import base64
import io
import random

from locust import FastHttpUser, constant, events, task

from serving.client import photo_files

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

    def _send(self, name: str, path: str, body: dict, count: int, protocol: str):
        with self.client.post(path, json=body, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                data = response.json()
                labels = ([p["label"] for p in data["predictions"]] if protocol == "v1"
                          else next(o["data"] for o in data["outputs"] if o["name"] == "label"))
                if protocol == "v2" and not data.get("id"):
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

    @task(6)
    def v1_one(self):
        self._v1([random.choice(_photos)])

    @task(3)
    def v2_one(self):
        self._v2([random.choice(_photos)])

    @task(1)
    def v1_batch(self):
        self._v1(random.sample(_photos, min(len(_photos), random.randint(2, 4))))

    @task(1)
    def v2_batch(self):
        self._v2(random.sample(_photos, min(len(_photos), random.randint(2, 4))))
