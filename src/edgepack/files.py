"""File writes that never leave a half-written file, and the hashes/sizes recorded for artifacts.

Imports only the standard library: the lean runtime uses it too.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it.

    For writers that want a file name (``model.save``, converters). The temporary name keeps the
    final suffix because some writers choose the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~umask())  # mkstemp makes 0600; the final file gets the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    # numpy scalars and arrays reach the manifest through metrics; json cannot write them natively.
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def check_new_file(path: str | os.PathLike[str], force: bool, what: str = "--out") -> Path:
    """Refuse, before any work, an output file that would replace the user's file (without force) or cannot be made.

    Raises ValueError subclasses of edgepack.errors (ConfigError) with what was given and what is allowed.
    """
    from edgepack.errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a folder; give a file name")
    if path.exists() and not force:
        raise ConfigError(f"{what} {path}: already exists; pass --force to replace it or choose another file")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: cannot write in {parent} (permission denied); choose another place")
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gzip_size(path: str | os.PathLike[str]) -> int:
    """Bytes of the file after gzip -9: what a download or flash image of it would cost. Kept per (path, size,
    mtime) in this process: gzip -9 of a 1 MB model takes about half a second, and a bench asks once per row."""
    st = os.stat(path)
    return _gzip_size(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _gzip_size(path: str, size: int, mtime_ns: int) -> int:
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))
