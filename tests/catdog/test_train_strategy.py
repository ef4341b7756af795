"""The train step's tf.distribute strategy: MirroredStrategy over several GPUs, else the default.

The machines these tests run on have no GPU: the choice is checked with the device list stubbed,
and a real two-replica MirroredStrategy trains and exports the tiny model on two logical CPUs in
a fresh process (logical devices must be set before TensorFlow starts).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace
from unittest import mock

import pytest

from tests.conftest import REPO_ROOT


def gpus(n: int) -> list:
    return [SimpleNamespace(name=f"/device:GPU:{i}", device_type="GPU") for i in range(n)]


@pytest.mark.parametrize("n_gpus, said", [(0, "training on the CPU: default strategy"),
                                          (1, "training on 1 GPU: default strategy")])
def test_one_gpu_or_none_keeps_the_default_strategy(n_gpus, said, capsys):
    import tensorflow as tf

    from catdog import train

    with mock.patch.object(tf.config, "list_logical_devices", return_value=gpus(n_gpus)) as devices, \
            mock.patch.object(tf.distribute, "MirroredStrategy") as mirrored:
        strategy = train.distribution_strategy()
    devices.assert_called_once_with("GPU")
    mirrored.assert_not_called()
    assert strategy is tf.distribute.get_strategy()
    assert said in capsys.readouterr().out


def test_several_gpus_get_a_mirrored_strategy(capsys):
    import tensorflow as tf

    from catdog import train

    with mock.patch.object(tf.config, "list_logical_devices", return_value=gpus(4)), \
            mock.patch.object(tf.distribute, "MirroredStrategy") as mirrored:
        mirrored.return_value.num_replicas_in_sync = 4
        strategy = train.distribution_strategy()
    mirrored.assert_called_once_with()
    assert strategy is mirrored.return_value
    assert "training on 4 GPUs: MirroredStrategy" in capsys.readouterr().out


TWO_REPLICAS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from catdog import train
    from tests.model_fixtures import make_dataset, train_params
    replicas = []
    def two_cpus():
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        replicas.append(strategy.num_replicas_in_sync)
        return strategy
    train.distribution_strategy = two_cpus
    root = Path(sys.argv[1])
    built = make_dataset(root, {"cat": 6, "dog": 6}, seed=3)
    # 4 photos a split, a global batch of 4: 2 per replica (Keras 3 cannot build a model from a
    # first batch that leaves a replica empty, so a split needs at least batch_size photos)
    metadata = train.train_model(built.dataset_dir, root / "model", train_params(seed=3, batch_size=4))
    from catdog.onnx_predictor import OnnxPredictor
    import numpy as np
    probabilities = OnnxPredictor(root / "model").predict_pixels(np.zeros((2, 32, 32, 3), np.float32))
    print(json.dumps({"replicas": replicas, "phases": [h["phase"] for h in metadata["history"]],
                      "finite": all(np.isfinite(h["loss"]) for h in metadata["history"]),
                      "row_sums": [round(float(s), 4) for s in probabilities.sum(axis=1)]}))
""")


@pytest.mark.slow
def test_two_replica_mirrored_training_trains_and_exports(tmp_path):
    """The model is built and fine-tuned under the strategy (the frozen phase's head outside it), and
    the export (Keras and ONNX) works from mirrored variables."""
    done = subprocess.run([sys.executable, "-c", TWO_REPLICAS, str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600, env={"PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
                                                       "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"replicas": [2], "phases": ["frozen", "finetune"], "finite": True, "row_sums": [1.0, 1.0]}
