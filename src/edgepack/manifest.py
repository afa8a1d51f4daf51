"""The run directory and its manifest.json, the spine every stage reads and extends.

A new run is built in a hidden sibling folder and renamed into place when its first stage succeeds, so a
failed or interrupted run leaves nothing behind. An existing run directory is replaced only with force,
and only if it is an edgepack run (has a manifest): a folder the user made is never deleted.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgepack import __version__
from edgepack.errors import ConfigError, ModelLoadError
from edgepack.files import atomic_write_json, gzip_size, sha256_file, umask
from edgepack.locking import hold, locked, try_lock
from edgepack.spec import ModelSpec, Preprocess, TensorSpec

MANIFEST = "manifest.json"
LOCK = ".lock"  # guards every read-modify-write of manifest.json (and bench/results.json)
OWNER = ".partial.lock"  # held while a new run is built in its hidden staging folder
STALE_TRASH_S = 3600.0
_LAST_CPU = 0.0  # process + children CPU seconds at the last history record (RunDir.record)
FORMATS = ("keras", "tflite", "onnx")
PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "a16w8", "w4")
STAGES = ("train", "import", "prune", "cluster", "qat", "export")
BASELINE_STAGES = ("train", "import")  # the stages that bring a model into a run


@dataclass
class Artifact:
    """One file a stage produced, as recorded in the manifest."""

    name: str
    path: str  # relative to the run directory
    format: str
    precision: str
    stage: str
    parent: str | None = None
    sha256: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"artifact format {self.format!r}; allowed: {', '.join(FORMATS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"artifact precision {self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        if self.stage not in STAGES:
            raise ValueError(f"artifact stage {self.stage!r}; allowed: {', '.join(STAGES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        return cls(**d)

    @classmethod
    def checked(cls, d: Any, where: str) -> Artifact:
        """``from_dict`` for a manifest entry read from disk: a damaged entry is a one-line ConfigError."""
        known = [f for f in cls.__dataclass_fields__]
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: an artifact entry is a {type(d).__name__}; expected an object")
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"{where}: artifact {d.get('name')!r} has unknown field {unknown[0]!r}; "
                              f"known fields: {', '.join(known)}")  # fmt: skip
        for key in ("name", "path", "format", "precision", "stage"):
            if not isinstance(d.get(key), str):
                raise ConfigError(f"{where}: artifact {d.get('name')!r} field {key!r} is {d.get(key)!r}; expected text")
        for key in ("settings", "metrics"):
            if not isinstance(d.get(key, {}), dict):
                raise ConfigError(f"{where}: artifact {d['name']!r} field {key!r} must be an object")
        if d.get("parity") is not None and not isinstance(d["parity"], dict):
            raise ConfigError(f"{where}: artifact {d['name']!r} field 'parity' must be an object or null")
        path = Path(d["path"])
        if path.is_absolute() or ".." in path.parts:
            raise ConfigError(f"{where}: artifact {d['name']!r} path {d['path']!r} must be inside the run directory")
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: artifact {d.get('name')!r}: {e}") from None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RunDir:
    """A run directory: ``manifest.json`` plus models/, export/, bench/, plots/."""

    def __init__(self, path: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._base = copy.deepcopy(manifest)  # what was read: save() merges our changes into the file's latest
        self._hashes: dict[tuple[str, int, int], str] = {}

    # -- opening and creating -------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """Open an existing run directory; bad input (no such dir, no manifest) is a ConfigError."""
        path = Path(path)
        if path.is_file():
            raise ConfigError(f"{path}: is a file, and this command works on a run directory (the folder with "
                              f"manifest.json that `edgepack train --out DIR` or `edgepack run --out DIR` makes); "
                              "give that folder")  # fmt: skip
        if not path.is_dir():
            raise ConfigError(f"run directory {path}: no such directory; make one with `edgepack train --out DIR` "
                              "or `edgepack run --out DIR`")  # fmt: skip
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise ConfigError(
                f"run directory {path}: no {MANIFEST}; create one with `edgepack train` or `edgepack run`"
            )
        return cls(path, _read_manifest(mpath))

    @classmethod
    def check_target(cls, path: str | os.PathLike[str], force: bool) -> None:
        """Refuse an existing target before any work is done (never overwrite silently)."""
        path = Path(path)
        if not path.exists():
            return
        if not path.is_dir():
            raise ConfigError(f"--out {path}: exists and is not a directory")
        if not any(path.iterdir()):
            return
        if not force:
            raise ConfigError(f"--out {path}: already exists; pass --force to replace it or choose another --out")
        if not (path / MANIFEST).is_file():
            raise ConfigError(f"--out {path}: exists and is not an edgepack run directory; refusing to replace it")

    @classmethod
    @contextlib.contextmanager
    def create(cls, path: str | os.PathLike[str], force: bool = False) -> Iterator[RunDir]:
        """Build a new run in a hidden sibling folder; move it to ``path`` only if the block succeeds."""
        path = Path(path)
        cls.check_target(path, force)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale(path)
            staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
        except OSError as e:
            raise ConfigError(f"--out {path}: cannot create it ({e.strerror or e})") from None
        owner = hold(staging / OWNER)  # a rerun after kill -9 knows this folder is abandoned
        staging.chmod(0o777 & ~umask())
        run = cls(staging, {"edgepack_version": __version__, "created": _now(), "artifacts": [], "history": []})
        try:
            yield run
            run.save()
            # Checked again now: a folder the user made at --out while the run was built is never replaced.
            cls.check_target(path, force)
            with contextlib.suppress(FileNotFoundError):
                (staging / OWNER).unlink()
            if path.exists() and (path / MANIFEST).is_file():  # an edgepack run, and force was given
                trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.replace(path, trash / "run")
                _rename_no_replace(staging, path)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                _rename_no_replace(staging, path)
            run.path = path
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            if owner is not None:
                os.close(owner)

    # -- manifest ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the run's files for one read-modify-write (manifest.json, bench/results.json)."""
        with locked(self.path / LOCK, f"run directory {self.path}"):
            yield

    def save(self) -> None:
        """Write the manifest: under the run's lock, re-read the file, merge this stage's changes, write atomically.

        Another stage may have saved since this one read the manifest; its artifacts, history lines and keys are
        kept, and where both changed the same key this stage's value wins.
        """
        with self.lock():
            mpath = self.path / MANIFEST
            merged = self.manifest
            if mpath.is_file():
                merged = merge_manifest(self._base, self.manifest, _read_manifest(mpath))
            merged["updated"] = _now()
            atomic_write_json(mpath, merged)
        if merged is not self.manifest:
            self.manifest.clear()
            self.manifest.update(merged)
        self._base = copy.deepcopy(self.manifest)

    def record(self, stage: str, settings: dict[str, Any], seconds: float) -> None:
        """Append a line to the run's history: which stage ran, with what, for how long (wall seconds, and the CPU
        seconds this process and its children used since the previous record: a load-independent cost), and the
        load average when it ended."""
        global _LAST_CPU
        t = os.times()
        cpu = t.user + t.system + t.children_user + t.children_system
        entry = {"stage": stage, "settings": settings, "seconds": round(seconds, 3),
                 "cpu_seconds": round(cpu - _LAST_CPU, 1), "at": _now()}  # fmt: skip
        _LAST_CPU = cpu
        with contextlib.suppress(OSError):
            entry["load_avg"] = [round(v, 2) for v in os.getloadavg()]
        self.manifest.setdefault("history", []).append(entry)

    @property
    def artifacts(self) -> list[Artifact]:
        return [Artifact.checked(a, f"run directory {self.path}") for a in self.manifest.get("artifacts", [])]

    def add_artifact(self, artifact: Artifact) -> Artifact:
        """Hash the file, fill size metrics, and record it (replacing an artifact of the same name)."""
        file = self.path / artifact.path
        if not file.exists():
            raise FileNotFoundError(f"artifact {artifact.name}: {file} was not written")
        artifact.sha256 = sha256_file(file) if file.is_file() else ""
        if file.is_file():
            artifact.metrics.setdefault("size_bytes", file.stat().st_size)
            artifact.metrics.setdefault("gzip_bytes", gzip_size(file))
        rows = [a for a in self.manifest.setdefault("artifacts", []) if a["name"] != artifact.name]
        rows.append(artifact.to_dict())
        self.manifest["artifacts"] = rows
        return artifact

    def find(self, *, name: str | None = None, **fields: Any) -> list[Artifact]:
        """Artifacts whose fields equal the given values (e.g. ``stage="train", format="keras"``)."""
        out = []
        for a in self.artifacts:
            if name is not None and a.name != name:
                continue
            if all(getattr(a, k) == v for k, v in fields.items()):
                out.append(a)
        return out

    def latest(self, **fields: Any) -> Artifact | None:
        found = self.find(**fields)
        return found[-1] if found else None

    def require(self, what: str, **fields: Any) -> Artifact:
        """The newest artifact matching ``fields``, or a one-line error saying what is missing."""
        found = self.latest(**fields)
        if found is None:
            raise ConfigError(f"run directory {self.path}: no {what} found; run `edgepack train` first")
        file = self.path / found.path
        if not file.exists():
            raise ModelLoadError(f"run directory {self.path}: {found.path} is listed in the manifest but missing")
        return found

    def baseline(self) -> Artifact:
        """The model the run started from: trained by edgepack or imported (none: ConfigError)."""
        for stage in BASELINE_STAGES:
            found = self.latest(stage=stage)  # keras, or an imported onnx
            if found is not None:
                return found
        raise ConfigError(f"run directory {self.path}: no trained or imported baseline model found; run "
                          "`edgepack train` or `edgepack import` first")  # fmt: skip

    def model_spec(self) -> ModelSpec:
        """The run's model description (manifest ``model``), written by the stage that brought the model in.

        Runs made before the description existed get the one their train stage implied: the data's pixels
        x / 255, NHWC, a sigmoid head for two classes and softmax otherwise.
        """
        block = self.manifest.get("model")
        if block is not None:
            return ModelSpec.from_dict(block, where=f"run directory {self.path}: manifest model")
        ds = self.manifest.get("dataset")
        if not isinstance(ds, dict) or "input_shape" not in ds or "class_names" not in ds:
            raise ConfigError(f"run directory {self.path}: the manifest has no model description and no dataset; "
                              "run `edgepack train` or `edgepack import` first")  # fmt: skip
        h, w, c = (int(d) for d in ds["input_shape"])
        names = tuple(str(n) for n in ds["class_names"])
        return ModelSpec(input=TensorSpec("image", (None, h, w, c)),
                         preprocess=Preprocess((h, w), "rgb" if c == 3 else "grayscale", float(ds.get("scale", 1 / 255))),
                         output_kind="sigmoid" if len(names) == 2 else "probabilities", labels=names)  # fmt: skip

    def file(self, artifact: Artifact) -> Path:
        """The artifact's file, checked against the sha256 the manifest records (a swapped file is refused)."""
        file = self.path / artifact.path
        if artifact.sha256 and file.is_file():
            st = file.stat()
            key = (str(file), st.st_size, st.st_mtime_ns)
            digest = self._hashes.get(key) or sha256_file(file)
            if digest != artifact.sha256:
                raise ModelLoadError(f"run directory {self.path}: {artifact.path} has sha256 {digest[:16]}…, the "
                                     f"manifest records {artifact.sha256[:16]}… for {artifact.name}: the file was "
                                     "changed after the stage that wrote it; rerun that stage")  # fmt: skip
            self._hashes[key] = digest
        return file


def _read_manifest(mpath: Path) -> dict[str, Any]:
    """manifest.json as a dict with a list of well-formed artifacts, or a one-line ConfigError."""
    where = f"run directory {mpath.parent}"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"{where}: {MANIFEST} is not valid JSON ({type(e).__name__}: {str(e)[:120]})") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {MANIFEST} ({e.strerror or e})") from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{where}: {MANIFEST} holds a {type(manifest).__name__}; expected an object")
    artifacts = manifest.get("artifacts", [])
    if not isinstance(artifacts, list):
        raise ConfigError(f"{where}: {MANIFEST} 'artifacts' is a {type(artifacts).__name__}; expected a list")
    for a in artifacts:
        Artifact.checked(a, where)
    for key in ("dataset", "machine", "export"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise ConfigError(f"{where}: {MANIFEST} {key!r} is a {type(manifest[key]).__name__}; expected an object")
    if not isinstance(manifest.get("history", []), list):
        raise ConfigError(f"{where}: {MANIFEST} 'history' must be a list")
    return manifest


def merge_manifest(base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Three-way merge: ``theirs`` (on disk now) plus what changed from ``base`` (read by this stage) to ``ours``.

    Artifacts merge by name (a changed or new one moves to the end, as add_artifact orders them), history lines
    are appended, and any other top-level key this stage changed takes this stage's value.
    """
    out = dict(theirs)
    for key in set(ours) | set(base):
        if key in ("artifacts", "history"):
            continue
        if key not in ours:
            if key in base and theirs.get(key) == base.get(key):
                out.pop(key, None)
        elif key not in base or ours[key] != base[key]:
            out[key] = ours[key]
    b = {a["name"]: a for a in base.get("artifacts", [])}
    o = {a["name"]: a for a in ours.get("artifacts", [])}
    rows = {a["name"]: a for a in theirs.get("artifacts", [])}
    for name in b:
        if name not in o and rows.get(name) == b[name]:
            del rows[name]
    for name, a in o.items():
        if b.get(name) != a:
            rows.pop(name, None)
            rows[name] = a
    out["artifacts"] = list(rows.values())
    out["history"] = list(theirs.get("history", [])) + list(ours.get("history", []))[len(base.get("history", [])) :]
    return out


def _rename_no_replace(src: Path, dst: Path) -> None:
    """Move the finished run to ``dst``; refuse (never replace) what appeared there in the meantime."""
    try:
        os.rename(src, dst)  # rename(2) replaces at most an empty folder; a non-empty one or a file refuses
    except OSError as e:
        raise ConfigError(
            f"--out {dst}: something was created there while the run was being made "
            f"({e.strerror or e}); it was left as it is and the new run was not kept"
        ) from None


def _remove_stale(path: Path) -> None:
    """Delete the hidden staging folders of runs at ``path`` whose process died (kill -9, power loss)."""
    for partial in path.parent.glob(f".{path.name}.partial-*"):
        fd = try_lock(partial / OWNER)
        if fd is not None:  # nobody holds it: the process that built this folder is gone
            try:
                shutil.rmtree(partial, ignore_errors=True)
            finally:
                os.close(fd)
    for trash in path.parent.glob(f".{path.name}.old-*"):
        with contextlib.suppress(OSError):
            if time.time() - trash.stat().st_mtime > STALE_TRASH_S:
                shutil.rmtree(trash, ignore_errors=True)
