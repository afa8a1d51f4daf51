"""Weight clustering with tfmot: K shared values per kernel, sparsity-preserving after pruning."""

from __future__ import annotations

from typing import Any

from edgepack.compress._tfmot import tfmot
from edgepack.compress.common import fine_tune, select_layers, wrap_layers
from edgepack.data import Dataset
from edgepack.errors import ConfigError
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
    layers, skipped = cluster_plan(model, settings)
    preserve = pruned if settings.preserve_sparsity is None else settings.preserve_sparsity
    init = getattr(tfmot.clustering.keras.CentroidInitialization, _INIT[settings.init])
    kwargs: dict[str, Any] = {"number_of_clusters": settings.clusters, "cluster_centroids_init": init}
    if preserve:
        kwargs["preserve_sparsity"] = True
    wrapped = wrap_layers(model, layers, lambda layer: tfmot.clustering.keras.cluster_weights(layer, **kwargs))
    history = fine_tune(wrapped, data, epochs=settings.epochs, learning_rate=settings.learning_rate,
                        batch_size=batch_size, description="clustering", progress=progress)  # fmt: skip
    stripped = tfmot.clustering.keras.strip_clustering(wrapped)
    return stripped, {"layers": list(layers), "skipped": skipped, "preserve_sparsity": preserve, "history": history}


def _tfmot_clusters(layer: keras.layers.Layer) -> bool:
    """Whether cluster_weights clusters a weight of ``layer``: tfmot's registry (it lists DepthwiseConv2D with no
    clusterable weight, "due to big unrecoverable accuracy loss")."""
    from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import ClusteringRegistry

    return ClusteringRegistry.supports(layer) and bool(ClusteringRegistry._weight_names(layer))  # noqa: SLF001


def cluster_plan(model: keras.Model, settings: ClusterSettings) -> tuple[tuple[str, ...], dict[str, str]]:
    """(layers clustering will wrap, {layer with a kernel left unclustered: why}); a layer named explicitly that
    tfmot cannot cluster is an error."""
    names = select_layers(model, settings.layers)
    skipped = {n: f"tfmot does not cluster {type(model.get_layer(n)).__name__}" for n in names
               if not _tfmot_clusters(model.get_layer(n))}  # fmt: skip
    if settings.layers is not None and skipped:
        first = next(iter(skipped))
        raise ConfigError(f"--layers: layer {first!r} cannot be clustered: {skipped[first]}")
    return tuple(n for n in names if n not in skipped), skipped
