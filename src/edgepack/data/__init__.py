"""Datasets: ``load(settings) -> Dataset`` for mnist-5k, image folders, .npz files and keras: names.

Images are kept as uint8 NHWC; the model sees ``x / 255`` (``Dataset.scale``), which the export bundles
record so the lean runtime can do the same on a device.
"""

from edgepack.data.loaders import RUN_DATA, Dataset, load, load_from_run, save_to_run

__all__ = ["RUN_DATA", "Dataset", "load", "load_from_run", "save_to_run"]
