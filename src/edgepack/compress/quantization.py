"""Quantization-aware training with tfmot, preserving what pruning/clustering made (PQAT, CQAT, PCQAT).

Plain ``quantize_model`` fine-tunes every float weight, so zeros made by pruning come back and clusters
spread apart; the collaborative schemes of ``tfmot.experimental.combine`` keep them.
"""

from __future__ import annotations

from typing import Any

from edgepack.compress._tfmot import tfmot
from edgepack.compress.common import fine_tune
from edgepack.data import Dataset
from edgepack.recipe import QATSettings
from edgepack.tf import keras


def qat_scheme(pruned: bool, clustered: bool, preserve: bool) -> tuple[str, Any]:
    """(name, tfmot scheme): default 8-bit, or the prune-/cluster-preserving variant."""
    combine = tfmot.experimental.combine
    if preserve and clustered:
        name = "PCQAT" if pruned else "CQAT"
        return name, combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=pruned)
    if preserve and pruned:
        return "PQAT", combine.Default8BitPrunePreserveQuantizeScheme()
    return "QAT", None


def quantize(model: keras.Model, pruned: bool, clustered: bool, preserve: bool = True) -> tuple[keras.Model, str]:
    """A quantization-aware copy of ``model`` (fake-quant wrappers), with the scheme used."""
    qk = tfmot.quantization.keras
    name, scheme = qat_scheme(pruned, clustered, preserve)
    annotated = qk.quantize_annotate_model(model)
    return (qk.quantize_apply(annotated, scheme) if scheme else qk.quantize_apply(annotated)), name


def qat(
    model: keras.Model,
    data: Dataset,
    settings: QATSettings,
    pruned: bool = False,
    clustered: bool = False,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[keras.Model, dict[str, Any]]:
    """Quantization-aware fine-tuning of a copy of ``model``; returns the QAT model and what was done."""
    from edgepack.compress.common import copy_model

    qmodel, scheme = quantize(copy_model(model), pruned, clustered, settings.preserve)
    history = fine_tune(qmodel, data, epochs=settings.epochs, learning_rate=settings.learning_rate,
                        batch_size=batch_size, description=f"quantization-aware training ({scheme})",
                        progress=progress)  # fmt: skip
    return qmodel, {"scheme": scheme, "history": history}
