"""Kept so ``edgepack.export.inspect`` imports keep working: reading a model file lives in ``edgepack.inspect``
(used by export, bench and `edgepack info` alike, so it belongs to none of them)."""

from edgepack.inspect import count_macs, describe, keras_macs, kernel_sparsity

__all__ = ["count_macs", "describe", "kernel_sparsity", "keras_macs"]
