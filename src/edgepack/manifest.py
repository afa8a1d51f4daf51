"""The run directory and its manifest.json, the spine every stage reads and extends.

A new run is built in a hidden sibling folder and renamed into place when its first stage succeeds, so a
failed or interrupted run leaves nothing behind. An existing run directory is replaced only with force,
and only if it is an edgepack run (has a manifest): a folder the user made is never deleted.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgepack import __version__
from edgepack.errors import ConfigError, ModelLoadError
from edgepack.files import atomic_write_json, gzip_size, sha256_file, umask

MANIFEST = "manifest.json"
FORMATS = ("keras", "tflite", "onnx")
PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "a16w8", "w4")
STAGES = ("train", "prune", "cluster", "qat", "export")


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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RunDir:
    """A run directory: ``manifest.json`` plus models/, export/, bench/, plots/."""

    def __init__(self, path: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest

    # -- opening and creating -------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """Open an existing run directory; bad input (no such dir, no manifest) is a ConfigError."""
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"run directory {path}: no such directory")
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise ConfigError(
                f"run directory {path}: no {MANIFEST}; create one with `edgepack train` or `edgepack run`"
            )
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"run directory {path}: {MANIFEST} is not valid JSON ({e})") from None
        return cls(path, manifest)

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
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
        staging.chmod(0o777 & ~umask())
        run = cls(staging, {"edgepack_version": __version__, "created": _now(), "artifacts": [], "history": []})
        try:
            yield run
            run.save()
            if path.exists():  # checked above: empty, or an edgepack run and force was given
                trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.replace(path, trash / "run")
                os.replace(staging, path)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(staging, path)
            run.path = path
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    # -- manifest ---------------------------------------------------------------------------------

    def save(self) -> None:
        self.manifest["updated"] = _now()
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def record(self, stage: str, settings: dict[str, Any], seconds: float) -> None:
        """Append a line to the run's history: which stage ran, with what, for how long."""
        self.manifest.setdefault("history", []).append(
            {"stage": stage, "settings": settings, "seconds": round(seconds, 3), "at": _now()}
        )

    @property
    def artifacts(self) -> list[Artifact]:
        return [Artifact.from_dict(a) for a in self.manifest.get("artifacts", [])]

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

    def file(self, artifact: Artifact) -> Path:
        return self.path / artifact.path
