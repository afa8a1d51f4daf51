"""The seed CNN and its training loop."""

from edgepack.train.fit import evaluate, fit, train_stage
from edgepack.train.model import build_seed_cnn, compile_model, head_for

__all__ = ["build_seed_cnn", "compile_model", "evaluate", "fit", "head_for", "train_stage"]
