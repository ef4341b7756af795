"""The naive baseline for `make bench-serving`: the server most tutorials ship.

One small FastAPI app that loads the saved Keras model (model.keras) and calls `model.predict` on
every request, with TensorFlow's default threading and FastAPI's default thread pool. It accepts
the same V1 request as our server and uses the same preprocessing (catdog.preprocessing), so the
same client and images measure both, and only the serving stack differs.

    python -m bench.naive_server --model-dir DIR [--host 127.0.0.1] [--port 8090]

Not hardened and not for production: it exists to be measured against.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path


def create_app(model_dir: Path):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    from fastapi import FastAPI, HTTPException

    from catdog.model import load_keras_model
    from catdog.model_files import input_size, load_metadata
    from catdog.preprocessing import InvalidImageError, image_to_pixels

    metadata = load_metadata(model_dir)
    class_names, size = metadata["class_names"], input_size(metadata)
    model = load_keras_model(model_dir)
    app = FastAPI(title="naive Keras baseline")

    @app.get("/health")
    def health():
        return {"ready": True}

    @app.post("/v1/models/{name}:predict")
    def predict(name: str, body: dict):
        try:
            images = [base64.b64decode(i["image_bytes"]["b64"]) for i in body["instances"]]
            pixels = np.stack([image_to_pixels(b, size) for b in images]).astype(np.float32)
        except (KeyError, TypeError, ValueError, InvalidImageError) as exc:
            raise HTTPException(400, str(exc))
        # the exported model's outputs: probabilities first, then the Grad-CAM maps (and the OOD score of
        # models exported since it came; unpacking two broke the baseline on those)
        probabilities = model.predict(pixels, verbose=0)[0]
        return {"predictions": [
            {"label": class_names[int(row.argmax())], "probabilities": dict(zip(class_names, map(float, row)))}
            for row in probabilities
        ]}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    import uvicorn

    app = create_app(args.model_dir)
    print(json.dumps({"baseline": "ready", "port": args.port}), flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
