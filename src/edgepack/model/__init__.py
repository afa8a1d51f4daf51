"""Models that enter a run from outside: import of Keras files (and, beside it, ONNX and TFLite files)."""

from edgepack.model.stage import ImportSettings, import_stage

__all__ = ["ImportSettings", "import_stage"]
