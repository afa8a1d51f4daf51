"""The model zoo (seed CNN, MLPerf Tiny reference networks) and its training loop."""

from edgepack.train.fit import evaluate, fit, train_stage
from edgepack.train.model import build_seed_cnn, compile_model, head_for
from edgepack.train.zoo import ZOO, build_model

__all__ = ["ZOO", "build_model", "build_seed_cnn", "compile_model", "evaluate", "fit", "head_for", "train_stage"]
