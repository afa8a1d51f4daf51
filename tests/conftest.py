"""Shared fixtures: a small real-digit dataset and a baseline run trained once per session, seeded.

Tests that change a run copy it first (``run_copy``), so the session's run stays as trained.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

TINY_TRAIN = 800
TINY_TEST = 200


def _tiny_dataset():
    from edgepack.data import Dataset
    from edgepack.data.loaders import _mnist_5k

    x, y, names = _mnist_5k()
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    tr, te = idx[:TINY_TRAIN], idx[TINY_TRAIN : TINY_TRAIN + TINY_TEST]
    return Dataset(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te], class_names=tuple(names),
                   spec="mnist-5k[tiny]", split="stratified")  # fmt: skip


@pytest.fixture(scope="session")
def tiny_data():
    """800 train / 200 test real MNIST digits from the embedded set (28x28x1, 10 classes)."""
    return _tiny_dataset()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data):
    """A run directory with a baseline seed CNN trained 3 epochs on ``tiny_data`` (seed 0)."""
    from edgepack.manifest import RunDir
    from edgepack.recipe import TrainSettings
    from edgepack.train import train_stage

    out = tmp_path_factory.mktemp("tiny") / "run"
    with RunDir.create(out) as run:
        run.manifest["machine"] = {}
        train_stage(run, tiny_data, TrainSettings(epochs=3, seed=0), progress=False)
    return RunDir.open(out)


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the session's trained run, free to change."""
    dst = tmp_path / "run"
    shutil.copytree(tiny_run.path, dst)
    return dst
