"""Recipe loading and the run directory's manifest and atomic writes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from edgepack.errors import ConfigError
from edgepack.files import atomic_path, atomic_write_json, sha256_file
from edgepack.manifest import Artifact, RunDir
from edgepack.recipe import ExportSettings, PruneSettings, Recipe


def test_recipe_from_toml_fills_sections_and_leaves_absent_compression_off(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[data]\nspec = "x.npz"\nimage_size = 32\n[train]\nepochs = 2\n[prune]\nsparsity = 0.5\n')
    recipe = Recipe.from_toml(path)
    assert recipe.data.spec == "x.npz"
    assert recipe.data.image_size == 32
    assert recipe.train.epochs == 2
    assert recipe.prune == PruneSettings(sparsity=0.5)
    assert recipe.cluster is None
    assert recipe.qat is None


def test_default_recipe_is_baseline_prune_then_qat():
    recipe = Recipe.default()
    assert recipe.prune is not None
    assert recipe.prune.sparsity == 0.8
    assert recipe.qat is not None


def test_zoo_models_get_their_recipe_defaults_and_the_seed_cnn_default_is_unchanged():
    from edgepack.recipe import MODEL_RECIPE_DEFAULTS, TrainSettings

    assert Recipe.default() == Recipe.default("seed-cnn")
    assert Recipe.default().prune.sparsity == 0.8
    assert Recipe.default().train == TrainSettings()
    for name, changes in MODEL_RECIPE_DEFAULTS.items():
        recipe = Recipe.default(name)
        assert recipe.train.model.value == name
        for section, values in changes.items():
            for key, value in values.items():
                assert getattr(getattr(recipe, section), key) == value
    assert Recipe.default("ds-cnn").prune.sparsity == 0.5
    assert Recipe.default("resnet8").prune.sparsity == 0.8  # resnet8 passes every gate at the seed CNN's 0.8
    with pytest.raises(ConfigError, match="--model: unknown value 'vgg'"):
        Recipe.default("vgg")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train]\nepocs = 3\n", "unknown key 'epocs'; known keys: model, width, epochs, batch_size"),
        ("[trian]\n", "unknown key 'trian'; known keys: data, train, prune"),
        ("[prune]\nsparsity = 1.5\n", "--prune: got 1.5; expected a number in [0.0, 1.0)"),
        ("[train\n", "not valid TOML"),
    ],
)
def test_recipe_errors_name_what_was_given_and_what_is_allowed(tmp_path, text, message):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        Recipe.from_toml(path)
    assert message in str(err.value)


def test_atomic_path_leaves_no_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "model.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:  # noqa: PT012 - the failure is inside the writer
        tmp.write_bytes(b"half")
        raise RuntimeError("converter crashed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_file_and_keeps_normal_permissions(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert oct(os.stat(target).st_mode & 0o777) != oct(0o600)
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_run_directory_records_artifacts_with_hash_and_sizes(tmp_path):
    out = tmp_path / "run"
    with RunDir.create(out) as run:
        (run.path / "models").mkdir()
        (run.path / "models" / "m.keras").write_bytes(b"\0" * 1000)
        run.add_artifact(Artifact(name="baseline", path="models/m.keras", format="keras", precision="fp32",
                                  stage="train"))  # fmt: skip
    run = RunDir.open(out)
    [a] = run.artifacts
    assert a.sha256 == sha256_file(out / "models/m.keras")
    assert a.metrics["size_bytes"] == 1000
    assert a.metrics["gzip_bytes"] < 100
    assert run.require("baseline model", stage="train").name == "baseline"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_run_directory_creation_that_fails_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="boom"), RunDir.create(tmp_path / "run") as run:  # noqa: PT012 - fails mid-run
        (run.path / "x").write_text("partial")
        raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []


def test_artifact_rejects_unknown_format():
    with pytest.raises(ValueError, match="artifact format 'pt'"):
        Artifact(name="x", path="x", format="pt", precision="fp32", stage="train")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"export": {"int8_size_limit": 0.9}}, "--int8-size-limit: got 0.9; expected a multiple of the all-int8 gzip"),
        ({"export": {"latency_at_any_size": "yes"}}, "latency_at_any_size = 'yes': expected true or false, got str"),
        ({"recommend_by": "speed"}, "recommend_by: got 'speed'; choose from latency, size"),
        ({"bench": {"keras_light": 1}}, "keras_light = 1: expected true or false, got int"),
    ],
)
def test_latency_plan_size_and_recommendation_settings_are_validated(raw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Recipe.from_dict(raw)


def test_plan_size_limit_is_none_only_when_latency_at_any_size_is_asked_for():
    assert ExportSettings().plan_size_limit == 1.25
    assert ExportSettings(int8_size_limit=3).plan_size_limit == 3.0
    assert ExportSettings(latency_at_any_size=True).plan_size_limit is None
    assert Recipe.from_toml(Path(__file__).resolve().parents[1] / "recipes" / "smallest.toml").recommend_by == "size"
