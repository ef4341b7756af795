"""The training-recipe sweep behind the pipeline's defaults (docs/BENCHMARKS.md, "recipe-sweep").

An experiment, not a pipeline step: it reuses catdog.model, catdog.augment and
catdog.preprocessing, but trains with Keras' torch backend on a GPU machine that had no
TensorFlow, from numpy arrays rather than the pipeline's TFRecords. Layout it expects beside
itself: data/{train,validation}/{cats,dogs}/*.jpg (the shared photos, re-encoded at most 288 px,
JPEG q85, to fit the transfer limit) and the MobileNetV2 alpha-0.35 .h5 weights.

    python recipe_sweep.py prep 256; python recipe_sweep.py prep 288
    for w in 0 1 2 3; do python recipe_sweep.py run $w 4 400 r$w.jsonl & done; wait
"""
import json
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
DATA = HERE / "data"
WEIGHTS = str(next(HERE.glob("*.h5")))


def _load(args):
    path, size = args
    from catdog.preprocessing import image_to_pixels
    return image_to_pixels(Path(path).read_bytes(), size)


def prep(size):
    files, labels, part = [], [], []
    for p, sub in enumerate(("train", "validation")):
        for c, cls in enumerate(("cats", "dogs")):
            fs = sorted((DATA / sub / cls).glob("*.jpg"))
            files += fs; labels += [c] * len(fs); part += [p] * len(fs)
    with Pool(int(os.environ.get("NPROC", 16))) as pool:
        x = pool.map(_load, [(str(f), size) for f in files], chunksize=32)
    import numpy as np
    np.savez(f"/tmp/arr_{size}.npz", x=np.stack(x), y=np.array(labels), part=np.array(part))


BASE = dict(size=256, aug="flip,rotation,zoom,contrast", frozen=4, ft=8, lr=2e-3, ftlr=5e-5, layers=100,
            dropout=0.2, patience=4, smoothing=0.0, batch=32)
CONFIGS = {
    "A_base": {},
    "B_brightness": dict(aug="flip,rotation,zoom,contrast,brightness"),
    "C_smooth": dict(smoothing=0.1),
    "D_ft12": dict(ft=12),
    "E_all_layers": dict(layers=200),
    "F_288": dict(size=288),
    "G_ftlr1e-4": dict(ftlr=1e-4),
    "H_ft12_smooth_bright": dict(ft=12, smoothing=0.1, aug="flip,rotation,zoom,contrast,brightness"),
}


def run_one(name, seed):
    import keras
    import numpy as np
    from catdog.augment import build_augmentation
    from catdog.model import build_model, unfreeze_top

    cfg = {**BASE, **CONFIGS[name]}
    d = np.load(f"/tmp/arr_{cfg['size']}.npz")
    x, y, part = d["x"], d["y"], d["part"]
    rng = np.random.default_rng(seed)
    tr_idx = np.where(part == 0)[0]
    val_idx = []
    for c in (0, 1):
        idx = tr_idx[y[tr_idx] == c]
        val_idx += list(rng.choice(idx, size=222, replace=False))
    val_idx = np.array(val_idx)
    train_idx = np.setdiff1d(tr_idx, val_idx)
    test_idx = np.where(part == 1)[0]
    xt, yt = x[train_idx].astype("float32"), y[train_idx]
    xv, yv = x[val_idx].astype("float32"), y[val_idx]
    xs, ys = x[test_idx].astype("float32"), y[test_idx]
    keras.utils.set_random_seed(seed)
    core = build_model(2, cfg["size"], 0.35, WEIGHTS, cfg["dropout"])
    inp = keras.Input((cfg["size"], cfg["size"], 3))
    out = core(build_augmentation(cfg["aug"], seed)(inp))
    model = keras.Model(inp, out)
    yt1, yv1 = keras.utils.to_categorical(yt, 2), keras.utils.to_categorical(yv, 2)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg["smoothing"])
    t0 = time.time()
    for epochs, lr, n in ((cfg["frozen"], cfg["lr"], 0), (cfg["ft"], cfg["ftlr"], cfg["layers"])):
        if n:
            unfreeze_top(core, n)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=["accuracy"])
        cbs = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg["patience"], restore_best_weights=True),
               keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=max(1, cfg["patience"] - 1))]
        model.fit(xt, yt1, batch_size=cfg["batch"], epochs=epochs, validation_data=(xv, yv1), callbacks=cbs,
                  verbose=0, shuffle=True)
    p = core.predict(xs, batch_size=200, verbose=0)
    pf = core.predict(xs[:, :, ::-1, :].copy(), batch_size=200, verbose=0)
    pv = core.predict(xv, batch_size=200, verbose=0)
    return dict(config=name, seed=seed, test_acc=float((p.argmax(1) == ys).mean()),
                test_acc_tta=float((((p + pf) / 2).argmax(1) == ys).mean()),
                val_acc=float((pv.argmax(1) == yv).mean()), seconds=round(time.time() - t0, 1))


def run(worker, nworkers, deadline, outfile):
    start = time.time()
    jobs = [(n, s) for s in (1, 2, 3, 4) for n in CONFIGS]
    mine = jobs[worker::nworkers]
    with open(outfile, "a") as f:
        for name, seed in mine:
            if time.time() - start > deadline:
                break
            try:
                r = run_one(name, seed)
            except Exception as exc:  # noqa
                r = dict(config=name, seed=seed, error=repr(exc)[:500])
            print(json.dumps(r), flush=True)
            f.write(json.dumps(r) + "\n"); f.flush()


if __name__ == "__main__":
    if sys.argv[1] == "prep":
        prep(int(sys.argv[2]))
    else:
        run(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
