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
    if scheme in ("CQAT", "PCQAT"):
        qmodel = as_default_qat(qmodel, model, data)
    return qmodel, {"scheme": scheme, "history": history}


def as_default_qat(trained: keras.Model, float_model: keras.Model, data: Dataset) -> keras.Model:
    """The same network as a default-8-bit QAT model, so it can be saved and loaded again.

    A cluster-preserving quantizer builds its variables from the kernel values it is built on, so a reloaded
    CQAT/PCQAT model (fresh kernels) expects other variables than the file holds and cannot be loaded. Its
    training writes the clustered weights into the kernel and quantizes them with the default 8-bit
    quantizer, so a default QAT model carrying the same kernels and ranges computes the same outputs;
    checked here on test images.
    """
    import numpy as np

    from edgepack.compress.common import copy_model

    plain, _ = quantize(copy_model(float_model), pruned=False, clustered=False, preserve=False)
    for target, source in zip(plain.layers, trained.layers, strict=True):
        by_name = {_short(w.name, source.name): w for w in source.weights}
        for w in target.weights:
            w.assign(by_name[_short(w.name, target.name)])
    x = data.model_inputs(data.x_test[:64])
    diff = float(np.abs(plain(x, training=False).numpy() - trained(x, training=False).numpy()).max())
    if diff > 1e-4:
        raise RuntimeError(f"cluster-preserving QAT model could not be re-expressed as default QAT (max |diff| {diff})")
    return plain


def _short(name: str, layer: str) -> str:
    """A variable's name within its layer ("quantize_layer_1/quantize_layer_1_min:0" -> "min")."""
    short = name.split("/")[-1].split(":")[0]
    return short[len(layer) + 1 :] if short.startswith(layer + "_") else short
