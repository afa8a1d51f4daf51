"""Compression with tfmot: pruning, clustering, quantization-aware training, and what they really achieved.

``compress_stage(run, prune=..., cluster=..., qat=...)`` works on a run directory; ``prune``, ``cluster`` and
``qat`` work on a model; ``load_keras`` opens any model a run holds (QAT ones included).
"""

from edgepack.compress.clustering import cluster
from edgepack.compress.pruning import plan_schedule, prune
from edgepack.compress.quantization import qat
from edgepack.compress.stage import compress_stage, load_keras
from edgepack.compress.stats import kernels, m_by_n_violations, model_stats

__all__ = [
    "cluster", "compress_stage", "kernels", "load_keras", "m_by_n_violations", "model_stats", "plan_schedule",
    "prune", "qat",
]  # fmt: skip
