"""The seed CNN and its training loop."""

from edgepack.train.model import build_seed_cnn, compile_model, head_for
from edgepack.train.fit import evaluate, fit, train_stage

__all__ = ["build_seed_cnn", "compile_model", "evaluate", "fit", "head_for", "train_stage"]
