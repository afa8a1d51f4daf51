"""Compression: pruning reaches its target, PQAT keeps it (plain QAT does not), 2:4 and clustering patterns
hold in the saved models, and bad input exits 2 with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepack.cli import main
from edgepack.errors import CheckFailed, ConfigError, ModelLoadError
from edgepack.manifest import RunDir
from edgepack.recipe import ClusterSettings, PruneSettings, QATSettings

PRUNED_LAYERS = ["conv1", "conv2", "dense", "output"]


def _compress(path, **settings):
    from edgepack.compress import compress_stage

    return {a.name: a for a in compress_stage(RunDir.open(path), progress=False, **settings)}


def _saved_kernels(path, artifact):
    from edgepack.compress import kernels, load_keras

    model = load_keras(path / artifact.path)
    return model, kernels(model)


def _sparsity(kernels: dict, names: list[str]) -> float:
    total = sum(kernels[n].size for n in names)
    return sum(kernels[n].size - np.count_nonzero(kernels[n]) for n in names) / total


def _baseline_accuracy(path) -> float:
    return RunDir.open(path).find(name="baseline")[0].metrics["accuracy"]


# -- schedule -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_train", "batch", "epochs"), [(800, 32, 2), (4000, 32, 2), (100, 32, 1), (50_000, 32, 3)])
def test_polynomial_schedule_ends_inside_fine_tuning_on_a_pruning_step(n_train, batch, epochs):
    from edgepack.compress import plan_schedule

    plan = plan_schedule(PruneSettings(epochs=epochs), n_train, batch)

    assert plan.total_steps == -(-n_train // batch) * epochs
    assert 0 < plan.end_step <= plan.total_steps  # tfmot counts steps 1..total: end_step is reached
    assert (plan.end_step - plan.begin_step) % plan.frequency == 0  # ... and is a pruning step
    assert plan.frequency < 100 or plan.total_steps > 1600  # never tfmot's default 100 on small data


# -- pruning ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["polynomial", "constant"])
def test_prune_reaches_target_sparsity_in_stripped_saved_model(run_copy, schedule):
    arts = _compress(run_copy, prune=PruneSettings(sparsity=0.8, schedule=schedule, epochs=6))

    pruned = arts["pruned"]
    model, kernels = _saved_kernels(run_copy, pruned)
    assert not [layer.name for layer in model.layers if "Prune" in type(layer).__name__]  # stripped
    assert _sparsity(kernels, PRUNED_LAYERS) >= 0.79
    assert pruned.metrics["selected_sparsity"] == pytest.approx(_sparsity(kernels, PRUNED_LAYERS))
    assert pruned.metrics["nonzero_params"] < 0.3 * pruned.metrics["params"]
    assert pruned.parent == "baseline"
    assert pruned.stage == "prune"
    assert pruned.path == "models/pruned.keras"
    # 800 training images leave less to recover from than mnist-5k (see the slow test for the 1-point budget)
    assert pruned.metrics["accuracy"] >= _baseline_accuracy(run_copy) - 0.05
    assert pruned.metrics["gzip_weights_bytes"] < 0.5 * pruned.metrics["weights_bytes"]


def test_prune_only_the_named_layers(run_copy):
    arts = _compress(run_copy, prune=PruneSettings(sparsity=0.8, layers=("dense",)))

    _, kernels = _saved_kernels(run_copy, arts["pruned"])
    assert _sparsity(kernels, ["dense"]) >= 0.79
    assert _sparsity(kernels, ["conv2"]) < 0.05


def test_pqat_keeps_sparsity_and_plain_qat_on_the_same_pruned_model_loses_it(run_copy, tiny_data):
    from edgepack.compress import kernels, load_keras, qat

    arts = _compress(run_copy, prune=PruneSettings(sparsity=0.8), qat=QATSettings())

    q = arts["qat"]
    assert q.parent == "pruned"
    assert q.settings["scheme"] == "PQAT"
    _, qkernels = _saved_kernels(run_copy, q)  # reloaded: the QAT file round-trips through load_keras
    assert _sparsity(qkernels, PRUNED_LAYERS) >= 0.79
    pruned_model = load_keras(run_copy / arts["pruned"].path)
    plain, info = qat(pruned_model, tiny_data, QATSettings(preserve=False), pruned=True, progress=False)
    assert info["scheme"] == "QAT"
    # zeros come back (fake-quant still rounds the smallest to 0): far below the 0.79 the check demands
    assert _sparsity(kernels(plain), PRUNED_LAYERS) < 0.7


def test_2_by_4_leaves_two_zeros_in_every_block_of_four_input_weights(run_copy):
    from edgepack.compress import m_by_n_violations

    arts = _compress(run_copy, prune=PruneSettings(m_by_n="2:4"))

    pruned = arts["pruned"]
    _, kernels = _saved_kernels(run_copy, pruned)
    assert pruned.settings["layers"] == ["conv2", "dense", "output"]  # conv1 has 1 input channel: no block of 4
    for name in pruned.settings["layers"]:
        assert m_by_n_violations(kernels[name], 2, 4) == 0
        blocks = np.moveaxis(kernels[name], -2, -1).reshape(-1, 4)  # C_in is a multiple of 4 here
        assert (np.count_nonzero(blocks, axis=1) <= 2).all()
        assert _sparsity(kernels, [name]) == pytest.approx(0.5, abs=0.01)


def test_m_by_n_check_groups_along_the_input_axis():
    from edgepack.compress import m_by_n_violations

    along_in = np.zeros((3, 3, 8, 2), np.float32)  # Conv2D kernel: [H, W, C_in, C_out]
    along_in[:, :, 0::4, :] = along_in[:, :, 1::4, :] = 1.0  # 2 non-zeros in each block of 4 input channels
    along_out = np.ones((3, 3, 8, 4), np.float32)
    along_out[..., 0:2] = 0.0  # 2:4 along C_out only: every input block is dense

    assert m_by_n_violations(along_in) == 0
    assert m_by_n_violations(along_out) == 3 * 3 * 2 * 2  # 2 dense channels x 2 blocks of C_in per position
    assert m_by_n_violations(np.ones((8, 3), np.float32)) == 2 * 3  # Dense [C_in, C_out]


# -- clustering ---------------------------------------------------------------------------------------


def test_cluster_16_leaves_at_most_16_values_per_kernel(run_copy):
    arts = _compress(run_copy, cluster=ClusterSettings(clusters=16))

    clustered = arts["clustered"]
    _, kernels = _saved_kernels(run_copy, clustered)
    for name in PRUNED_LAYERS:
        assert np.unique(kernels[name]).size <= 16
        assert clustered.metrics["layers"][name]["unique_values"] == np.unique(kernels[name]).size
    assert clustered.metrics["accuracy"] >= _baseline_accuracy(run_copy) - 0.02  # 200 test images: 1 image = 0.5 pt


def test_prune_cluster_qat_keeps_sparsity_and_clusters_through_pcqat_and_reload(run_copy):
    from edgepack.compress.stats import max_unique_per_channel

    arts = _compress(
        run_copy, prune=PruneSettings(sparsity=0.8), cluster=ClusterSettings(clusters=8), qat=QATSettings()
    )

    assert [a.parent for a in arts.values()] == ["baseline", "pruned", "clustered"]
    assert arts["clustered"].settings["preserve_sparsity"] is True
    assert arts["qat"].settings["scheme"] == "PCQAT"
    _, kernels = _saved_kernels(run_copy, arts["qat"])  # a PCQAT model loads again (saved as default QAT)
    assert _sparsity(kernels, PRUNED_LAYERS) >= 0.79
    for name in PRUNED_LAYERS:  # int8 weights are quantized per output channel: K values per channel
        assert max_unique_per_channel(kernels[name]) <= 8


def test_checks_fail_with_what_was_reached(tiny_run):
    from edgepack.compress import load_keras, model_stats
    from edgepack.compress.stage import check_clustered, check_pruned

    stats = model_stats(load_keras(tiny_run.path / "models/baseline.keras"), tuple(PRUNED_LAYERS))

    with pytest.raises(CheckFailed, match=r"per-layer sparsity not reached: conv1 0\.0000 \(target 0\.8000\)"):
        check_pruned(stats, PRUNED_LAYERS, PruneSettings(sparsity=0.8), "prune")
    with pytest.raises(CheckFailed, match="clusters not applied") as err:
        check_clustered(stats, PRUNED_LAYERS, 16, "cluster")
    assert err.value.exit_code == 1


def test_load_keras_reports_a_missing_file(tmp_path):
    from edgepack.compress import load_keras

    with pytest.raises(ModelLoadError, match="no such file"):
        load_keras(tmp_path / "nope.keras")


def test_mnist_5k_prune_08_and_cluster_16_lose_at_most_one_point(tmp_path):
    """The acceptance run on the real data (about 20 s: mnist-5k trains fast)."""
    from edgepack.pipeline import run_pipeline
    from edgepack.recipe import Recipe

    recipe = Recipe(prune=PruneSettings(sparsity=0.8))
    run, _ = run_pipeline(recipe, tmp_path / "run", progress=False, stages=("train", "compress"))
    arts = _compress(run.path, cluster=ClusterSettings(clusters=16))

    base = _baseline_accuracy(run.path)
    pruned = RunDir.open(run.path).find(name="pruned")[0]
    assert pruned.metrics["selected_sparsity"] >= 0.79
    assert pruned.metrics["accuracy"] >= base - 0.01
    assert arts["clustered"].metrics["max_unique_values"] <= 16
    assert arts["clustered"].metrics["accuracy"] >= base - 0.01  # measured: +1.3 (one more epoch of training)


# -- bad input ----------------------------------------------------------------------------------------


def _snapshot(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prune", "1.0"], "--prune: got 1.0"),
        (["--prune", "-0.1"], "--prune: got -0.1"),
        (["--cluster", "1"], "--cluster: got 1"),
        (["--cluster", "257"], "--cluster: got 257"),
        (["--m-by-n", "1:4"], "--m-by-n: got '1:4'"),
        (["--m-by-n", "4:8"], "--m-by-n: got '4:8'"),
        (["--prune", "0.5", "--layers", "conv1,nope"], "unknown layer 'nope'"),
        (["--cluster", "8", "--layers", "pool1"], "unknown layer 'pool1'"),
        (["--schedule", "constant"], "--schedule: only applies with --prune"),
        ([], "nothing to do"),
    ],
)
def test_bad_compress_input_exits_2_with_one_line_and_writes_nothing(run_copy, capsys, args, message):
    before = _snapshot(run_copy)

    code = main(["compress", str(run_copy), "-q", *args])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert len(err.splitlines()) == 1
    assert _snapshot(run_copy) == before


def test_compress_without_a_trained_model_exits_2(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"artifacts": [], "history": []}))
    before = _snapshot(run)

    code = main(["compress", str(run), "-q", "--prune", "0.8"])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "no trained or imported baseline model found" in err
    assert len(err.splitlines()) == 1
    assert _snapshot(run) == before


def test_prune_settings_reject_an_unsupported_pattern():
    with pytest.raises(ConfigError, match="supported patterns: 2:4"):
        PruneSettings(m_by_n="3:4")


def test_stats_see_the_kernel_of_a_quantized_layer_without_bias():
    """A QAT wrapper keeps a layer's kernel in its own _weight_vars; a conv with use_bias=False (the usual
    conv -> BatchNormalization) then has no weight left in the inner layer, and was dropped from the statistics
    (found by the foreign-model chain: `compress --prune 0.5 --qat` failed with KeyError on its stem conv)."""
    import tensorflow_model_optimization as tfmot

    from edgepack.compress.stats import effective_weights, model_stats
    from edgepack.tf import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x))
    kernel = model.get_layer("stem").get_weights()[0]
    kernel[..., :2] = 0.0  # half the kernel pruned
    model.get_layer("stem").set_weights([kernel])
    qat = tfmot.quantization.keras.quantize_model(model)
    weights = effective_weights(qat)
    assert set(weights) >= {"stem", "stem_bn", "head"}
    assert weights["stem"]["kernel"].shape == kernel.shape
    assert model_stats(qat, ("stem",))["layers"]["stem"]["sparsity"] >= 0.5  # fake-quant may zero tiny weights too
