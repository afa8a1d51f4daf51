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


def float_layers(model: keras.Model) -> dict[str, str]:
    """{layer: why} for the layers tfmot's default 8-bit scheme cannot wrap (they stay float under QAT)."""
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )

    supported = registry.Default8BitQuantizeRegistry().supports
    return {layer.name: f"tfmot's 8-bit scheme has no {type(layer).__name__}" for layer in model.layers
            if type(layer).__name__ != "InputLayer" and not supported(layer) and not _folded_bn(layer)}  # fmt: skip


def _folded_bn(layer: keras.layers.Layer) -> bool:
    """A BatchNormalization right after a Conv2D / DepthwiseConv2D: tfmot's 8-bit transforms take it with the conv
    (no fake-quant between them; the converter folds it into the conv's kernel)."""
    if not isinstance(layer, keras.layers.BatchNormalization) or len(layer.inbound_nodes) != 1:
        return False
    from edgepack.ops import keras_op

    op = keras_op(type(layer.inbound_nodes[0].inbound_layers).__name__)
    return op is not None and op.kind in ("conv", "depthwise")


def quantize(model: keras.Model, pruned: bool, clustered: bool, preserve: bool = True) -> tuple[keras.Model, str]:
    """A quantization-aware copy of ``model`` (fake-quant wrappers), with the scheme used.

    Every layer is annotated when tfmot supports them all (BatchNormalization after a conv folded by its default
    8-bit transforms); otherwise only the supported ones, and the others stay float (see float_layers).
    """
    qk = tfmot.quantization.keras
    name, scheme = qat_scheme(pruned, clustered, preserve)
    left = float_layers(model)
    if left:
        annotated = keras.models.clone_model(
            model,
            clone_function=lambda layer: (
                layer
                if layer.name in left or type(layer).__name__ == "InputLayer"
                else qk.quantize_annotate_layer(layer)
            ),
        )  # fmt: skip  (layers are reused: weights stay)
    else:
        annotated = qk.quantize_annotate_model(model)
    return (qk.quantize_apply(annotated, scheme) if scheme else qk.quantize_apply(annotated)), name


class KeepZeros(keras.callbacks.Callback):
    """Re-applies pruning masks to kernels the QAT scheme does not keep sparse, after every training step.

    tfmot's prune-preserving schemes disable preservation for DepthwiseConv2D ("supported with 8bit qat, but not
    with prune"), so PQAT / PCQAT would let its zeros grow back; multiplying by the mask after each update keeps
    the forward pass (and the exported kernel) on the pruned pattern.
    """

    def __init__(self, masks: list[tuple]) -> None:
        super().__init__()
        self.masks = masks  # (layer name, variable, 0/1 array)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        for _, variable, mask in self.masks:
            variable.assign(variable * mask)


def _depthwise_masks(qmodel: keras.Model, float_model: keras.Model) -> list[tuple]:
    """(layer name, QAT depthwise kernel variable, mask of the non-zeros in ``float_model``) per pruned depthwise
    layer."""
    import numpy as np

    masks = []
    for layer in qmodel.layers:
        inner = getattr(layer, "layer", None)
        if not isinstance(inner, keras.layers.DepthwiseConv2D):
            continue
        kernel = float_model.get_layer(inner.name).depthwise_kernel.numpy()
        # the wrapper swaps the layer's attribute for the quantized tensor; the variable is in its _weight_vars
        [variable] = [w for w, _, _ in layer._weight_vars if "depthwise_kernel" in w.name]  # noqa: SLF001
        if np.count_nonzero(kernel) < kernel.size:
            masks.append((inner.name, variable, (kernel != 0).astype(kernel.dtype)))
    return masks


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
    masks = _depthwise_masks(qmodel, model) if pruned and settings.preserve else []
    history = fine_tune(qmodel, data, epochs=settings.epochs, learning_rate=settings.learning_rate,
                        batch_size=batch_size, description=f"quantization-aware training ({scheme})",
                        callbacks=[KeepZeros(masks)] if masks else None, progress=progress)  # fmt: skip
    if scheme in ("CQAT", "PCQAT"):
        qmodel = as_default_qat(qmodel, model, data)
    info = {"scheme": scheme, "float_layers": float_layers(model), "masked_depthwise": [n for n, _, _ in masks]}
    return qmodel, {**info, "history": history}


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
