"""Weight clustering with tfmot: K shared values per kernel, sparsity-preserving after pruning."""

from __future__ import annotations

from typing import Any

from edgepack.compress._tfmot import tfmot
from edgepack.compress.common import fine_tune, select_layers, wrap_layers
from edgepack.data import Dataset
from edgepack.recipe import CentroidInit, ClusterSettings
from edgepack.tf import keras

_INIT = {
    CentroidInit.KMEANS_PLUS_PLUS: "KMEANS_PLUS_PLUS",
    CentroidInit.LINEAR: "LINEAR",
    CentroidInit.DENSITY: "DENSITY_BASED",
    CentroidInit.RANDOM: "RANDOM",
}


def cluster(
    model: keras.Model,
    data: Dataset,
    settings: ClusterSettings,
    pruned: bool = False,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[keras.Model, dict[str, Any]]:
    """Cluster and fine-tune a copy of ``model``; returns the stripped model and what was done.

    ``preserve_sparsity`` defaults to ``pruned``: zeros stay zero, so pruning's sparsity survives.
    """
    layers = select_layers(model, settings.layers)
    preserve = pruned if settings.preserve_sparsity is None else settings.preserve_sparsity
    init = getattr(tfmot.clustering.keras.CentroidInitialization, _INIT[settings.init])
    kwargs: dict[str, Any] = {"number_of_clusters": settings.clusters, "cluster_centroids_init": init}
    if preserve:
        kwargs["preserve_sparsity"] = True
    wrapped = wrap_layers(model, layers, lambda layer: tfmot.clustering.keras.cluster_weights(layer, **kwargs))
    history = fine_tune(wrapped, data, epochs=settings.epochs, learning_rate=settings.learning_rate,
                        batch_size=batch_size, description="clustering", progress=progress)  # fmt: skip
    stripped = tfmot.clustering.keras.strip_clustering(wrapped)
    return stripped, {"layers": list(layers), "preserve_sparsity": preserve, "history": history}
