"""`edgepack run` end to end: train -> compress -> export -> parity -> bench -> report in one run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepack.cli import main


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory, tiny_data):
    path = tmp_path_factory.mktemp("pipe") / "digits.npz"
    np.savez(path, x_train=tiny_data.x_train, y_train=tiny_data.y_train, x_test=tiny_data.x_test,
             y_test=tiny_data.y_test)  # fmt: skip
    return path


def test_run_with_a_recipe_makes_every_stage_and_a_report(tmp_path, small_npz, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[data]\nspec = "{small_npz}"\n[train]\nepochs = 3\n[prune]\nsparsity = 0.5\nepochs = 1\n'
        '[qat]\nepochs = 1\n[export]\nprecisions = ["fp32", "int8"]\n'
        '[bench]\nthreads = [1]\nbatch = [1]\nmin_time = 0.02\nwindows = 2\nruntimes = ["onnxruntime", "litert"]\n'
    )
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "-q", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text())
    stages = [a["stage"] for a in manifest["artifacts"]]
    assert stages.count("train") == 1
    assert stages.count("prune") == 1
    assert stages.count("qat") == 1
    exports = [a for a in manifest["artifacts"] if a["stage"] == "export"]
    assert {(a["format"], a["precision"]) for a in exports} >= {("tflite", "fp32"), ("tflite", "int8"),
                                                                ("onnx", "fp32"), ("onnx", "int8")}  # fmt: skip
    assert all(a["parity"]["passed"] for a in exports)
    for a in exports:  # each export has its bundle, and the bundle names the file's hash
        bundle = json.loads((out / a["path"]).with_suffix(".json").read_text())
        assert bundle["sha256"] == a["sha256"]
    results = json.loads((out / "bench" / "results.json").read_text())
    assert {r["artifact"] for r in results["results"]} == {a["name"] for a in exports}
    assert (out / "report.md").is_file()
    assert (out / "report.html").is_file()
    assert len(list((out / "plots").glob("*.png"))) == 4  # + the per-layer sensitivity plot (issue 16)
    assert summary["recommended"]["artifact"] in {a["name"] for a in exports}
    assert [h["stage"] for h in manifest["history"]][-1] == "bench"


def test_run_rejects_an_unknown_stage_before_writing_anything(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r"), "--stages", "train,deploy", "-q"]) == 2
    assert "unknown stage 'deploy'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_demo_default_run_on_mnist_5k_meets_the_accuracy_and_parity_bars(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["run", "--out", str(out), "-q", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    by_name = {a["name"]: a for a in summary["artifacts"]}
    assert by_name["baseline"]["accuracy"] >= 0.95
    assert all(a["parity"] for a in summary["artifacts"] if a["stage"] == "export")
    assert summary["recommended"] is not None
