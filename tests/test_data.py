"""Data loaders: mnist-5k, image folders, npz, keras: names, and the split."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgepack.data import load
from edgepack.errors import DataError
from edgepack.recipe import DataSettings
from helpers import write_cats_dogs, write_digit_folder


def test_mnist_5k_loads_offline_with_stratified_80_20_split():
    data = load(DataSettings())
    assert data.x_train.shape == (4000, 28, 28, 1)
    assert data.x_train.dtype == np.uint8
    assert data.x_test.shape == (1000, 28, 28, 1)
    assert np.bincount(data.y_test).tolist() == [100] * 10  # stratified: 500 per class in the source
    assert data.class_names == tuple(str(i) for i in range(10))
    assert data.x_train.max() == 255


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    a, b, c = (load(DataSettings(seed=s)) for s in (0, 0, 1))
    assert np.array_equal(a.y_test, b.y_test)
    assert np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)


def test_folder_of_colour_jpegs_with_stray_file_gives_sorted_classes_and_counts_the_skip(tmp_path):
    write_cats_dogs(tmp_path / "pets", n_per_class=20)
    data = load(DataSettings(spec=str(tmp_path / "pets"), seed=0))
    assert data.class_names == ("cats", "dogs")
    assert data.skipped_files == 1
    assert "README.md" in data.skipped[0]
    assert data.input_shape == (28, 28, 3)  # auto colour: the JPEGs are in colour
    assert len(data.y_train) + len(data.y_test) == 40
    assert np.bincount(data.y_test).tolist() == [4, 4]


def test_folder_grayscale_and_image_size_are_applied(tmp_path):
    write_cats_dogs(tmp_path / "pets", n_per_class=6)
    data = load(DataSettings(spec=str(tmp_path / "pets"), color="grayscale", image_size=16))
    assert data.input_shape == (16, 16, 1)


def test_folder_with_train_and_test_subfolders_keeps_the_given_split(tmp_path, tiny_data):
    names = list(tiny_data.class_names)
    write_digit_folder(tmp_path / "d" / "train", tiny_data.x_train[:60], tiny_data.y_train[:60] % 3, names[:3])
    write_digit_folder(tmp_path / "d" / "test", tiny_data.x_test[:30], tiny_data.y_test[:30] % 3, names[:3])
    data = load(DataSettings(spec=str(tmp_path / "d")))
    assert data.split == "given"
    assert len(data.y_train) == 60
    assert len(data.y_test) == 30
    assert data.input_shape == (28, 28, 1)
    # PNG round trip is lossless: the same pixels come back (file order differs from array order)
    assert np.array_equal(np.sort(data.x_train.ravel()), np.sort(tiny_data.x_train[:60].ravel()))


def test_unreadable_image_among_good_ones_is_skipped_and_counted(tmp_path):
    root = write_cats_dogs(tmp_path / "pets", n_per_class=6)
    (root / "README.md").unlink()
    (root / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "cats" / "notes.txt").write_text("not an image")
    data = load(DataSettings(spec=str(root)))
    assert data.skipped_files == 2
    assert len(data.y_train) + len(data.y_test) == 12
    assert any("broken.jpg" in s for s in data.skipped)
    assert any("notes.txt" in s for s in data.skipped)


def test_npz_round_trip_with_float_images_and_arbitrary_labels(tmp_path, tiny_data):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=tiny_data.x_train[:50, ..., 0] / 255.0, y_train=tiny_data.y_train[:50] + 10,
             x_test=tiny_data.x_test[:20, ..., 0] / 255.0, y_test=tiny_data.y_test[:20] + 10)  # fmt: skip
    data = load(DataSettings(spec=str(path)))
    assert data.x_train.dtype == np.uint8
    assert data.input_shape == (28, 28, 1)
    assert np.array_equal(data.x_train, tiny_data.x_train[:50])
    assert data.class_names[0] == str(10 + min(tiny_data.y_train[:50].min(), tiny_data.y_test[:20].min()))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "nope", "no such file or folder"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "is empty"),
        (lambda p: _one_class(p), "found 1 class folder"),
        (lambda p: _no_images(p), "no readable images"),
        (lambda p: _npz(p, drop="y_test"), "npz lacks y_test"),
        (lambda p: _npz(p, mismatch=True), "x_train has 10 images but y_train has 9 labels"),
        (lambda p: "keras:imagenet", "unknown keras dataset 'imagenet'"),
        (lambda p: _file(p, "data.csv"), "not a data source"),
    ],
    ids=["missing", "empty", "one-class", "no-images", "npz-keys", "npz-length", "keras-name", "csv"],
)
def test_bad_data_specs_raise_one_line_data_error(tmp_path, make, expected):
    spec = make(tmp_path)
    with pytest.raises(DataError) as err:
        load(DataSettings(spec=str(spec)))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def _one_class(p):
    (p / "d" / "cats").mkdir(parents=True)
    Image.new("RGB", (10, 10)).save(p / "d" / "cats" / "a.png")
    return p / "d"


def _no_images(p):
    for c in ("a", "b"):
        (p / "d" / c).mkdir(parents=True)
        (p / "d" / c / "x.txt").write_text("hello")
    return p / "d"


def _npz(p, drop=None, mismatch=False):
    arrays = {"x_train": np.zeros((10, 8, 8), np.uint8), "y_train": np.arange(10) % 2,
              "x_test": np.zeros((4, 8, 8), np.uint8), "y_test": np.arange(4) % 2}  # fmt: skip
    if drop:
        del arrays[drop]
    if mismatch:
        arrays["y_train"] = arrays["y_train"][:9]
    np.savez(p / "d.npz", **arrays)
    return p / "d.npz"


def _file(p, name):
    (p / name).write_text("a,b\n")
    return p / name


def test_keras_dataset_download_failure_is_one_line_data_error(monkeypatch):
    from edgepack.tf import keras

    def offline():
        raise OSError("URL fetch failure on https://example.invalid/mnist.npz: [Errno -3] name resolution")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DataError, match=r"data 'keras:mnist': could not download it \(offline\?\)"):
        load(DataSettings(spec="keras:mnist"))
