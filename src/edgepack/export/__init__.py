"""TFLite and ONNX export at every precision, deployment bundles, and the parity gate."""

from edgepack.export.stage import export_stage, load_keras, parity_report, plan, verify_stage
from edgepack.inspect import describe, kernel_sparsity

__all__ = ["describe", "export_stage", "kernel_sparsity", "load_keras", "parity_report", "plan", "verify_stage"]
