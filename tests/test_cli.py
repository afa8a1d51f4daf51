"""The command line: train/run end to end on small data, exit codes, one-line errors, no leftovers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import main
from helpers import write_cats_dogs


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory, tiny_data):
    path = tmp_path_factory.mktemp("npz") / "digits.npz"
    np.savez(path, x_train=tiny_data.x_train[:400], y_train=tiny_data.y_train[:400],
             x_test=tiny_data.x_test, y_test=tiny_data.y_test)  # fmt: skip
    return path


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_train_on_cats_and_dogs_folder_makes_sigmoid_model_and_manifest(tmp_path, capsys):
    pets = write_cats_dogs(tmp_path / "pets", n_per_class=30)
    out = tmp_path / "run"
    code = main(["train", "--data", str(pets), "--out", str(out), "--epochs", "3", "--json", "-q"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["class_names"] == ["cats", "dogs"]
    assert manifest["dataset"]["skipped_files"] == 1
    baseline = manifest["artifacts"][0]
    assert baseline["format"] == "keras"
    assert baseline["stage"] == "train"
    assert len(baseline["sha256"]) == 64
    assert (out / baseline["path"]).is_file()
    assert result["artifacts"][0]["accuracy"] == baseline["metrics"]["accuracy"]
    from edgepack.tf import keras

    model = keras.models.load_model(out / baseline["path"])
    assert model.layers[-1].units == 1
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert baseline["metrics"]["accuracy"] > 0.5  # above chance on the 12 held-out pets


def test_training_twice_with_the_same_seed_gives_identical_accuracy_in_the_manifest(tmp_path, tiny_npz):
    accs = []
    for name in ("a", "b"):
        assert main(["train", "--data", str(tiny_npz), "--out", str(tmp_path / name), "--epochs", "1", "-q"]) == 0
        accs.append(json.loads((tmp_path / name / "manifest.json").read_text())["artifacts"][0]["metrics"])
    assert accs[0]["accuracy"] == accs[1]["accuracy"]
    assert accs[0]["confusion_matrix"] == accs[1]["confusion_matrix"]


def test_existing_run_directory_needs_force_and_force_replaces_only_an_edgepack_run(tmp_path, tiny_npz, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_npz), "--out", str(out), "--epochs", "1", "-q"]) == 0
    before = (out / "manifest.json").read_text()
    assert main(["train", "--data", str(tiny_npz), "--out", str(out), "--epochs", "1", "-q"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == before
    assert main(["train", "--data", str(tiny_npz), "--out", str(out), "--epochs", "1", "-q", "--force"]) == 0
    assert (out / "manifest.json").read_text() != before
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.txt").write_text("precious")
    assert main(["train", "--data", str(tiny_npz), "--out", str(user), "--epochs", "1", "-q", "--force"]) == 2
    assert "not an edgepack run directory" in capsys.readouterr().err
    assert (user / "thesis.txt").read_text() == "precious"
    assert _leftovers(tmp_path) == ["mine", "run"]


def _folder(p: Path, kind: str) -> Path:
    root = p / kind
    if kind == "empty":
        root.mkdir()
    elif kind == "one-class":
        write_cats_dogs(root, n_per_class=3)
        import shutil

        shutil.rmtree(root / "dogs")
    elif kind == "no-images":
        for c in ("a", "b"):
            (root / c).mkdir(parents=True)
            (root / c / "x.txt").write_text("hi")
    return root


def _npz(p: Path, kind: str) -> Path:
    arrays = {"x_train": np.zeros((10, 8, 8), np.uint8), "y_train": np.arange(10) % 2,
              "x_test": np.zeros((4, 8, 8), np.uint8), "y_test": np.arange(4) % 2}  # fmt: skip
    if kind == "npz-keys":
        del arrays["x_test"]
    else:
        arrays["y_train"] = arrays["y_train"][:7]
    np.savez(p / "bad.npz", **arrays)
    return p / "bad.npz"


@pytest.mark.parametrize(
    ("kind", "extra", "message"),
    [
        ("missing", [], "no such file or folder"),
        ("empty", [], "is empty"),
        ("one-class", [], "found 1 class folder (cats); need at least 2"),
        ("no-images", [], "no readable images"),
        ("npz-keys", [], "npz lacks x_test"),
        ("npz-length", [], "x_train has 10 images but y_train has 7 labels"),
        ("keras", [], "unknown keras dataset 'svhn'"),
        ("ok", ["--epochs", "0"], "--epochs: got 0; expected an integer >= 1"),
        ("ok", ["--image-size", "0"], "--image-size: got 0"),
        ("ok", ["--color", "purple"], "--color: unknown value 'purple'; choose from auto, grayscale, rgb"),
        ("ok", ["--epochs", "many"], "invalid int value: 'many'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_leaves_no_run_directory(tmp_path, tiny_npz, capsys, kind, extra, message):
    work = tmp_path / "work"
    work.mkdir()
    if kind in ("empty", "one-class", "no-images"):
        spec = str(_folder(work, kind))
    elif kind.startswith("npz"):
        spec = str(_npz(work, kind))
    else:
        spec = {"missing": str(work / "nope"), "keras": "keras:svhn", "ok": str(tiny_npz)}[kind]
    before = _leftovers(work)
    code = main(["train", "--data", spec, "--out", str(work / "run"), "-q", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err
    assert err.count("\n") == 0
    assert err.startswith("edgepack: error:")
    assert _leftovers(work) == before  # no run directory, no hidden partial folder


def test_cli_process_prints_one_line_without_traceback_and_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgepack", "train", "--data", str(tmp_path / "x"), "--out",
                           str(tmp_path / "r")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_help_is_available_for_each_command(capsys):
    from edgepack.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        assert f"usage: edgepack {name}" in capsys.readouterr().out
