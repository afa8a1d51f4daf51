"""Advisory file locks: one writer at a time for a run directory's manifest.json and results.json.

Stages that run at once on one run directory each read the manifest, work, and write it back; without a lock
the second write drops what the first added. ``locked`` serializes those read-modify-writes (flock, released
by the kernel when the process dies, so a killed stage never leaves a stale lock). Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from edgepack.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking (edgepack's targets are Linux and macOS)
    fcntl = None  # type: ignore[assignment]

WAIT_S = 600.0


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], what: str, wait: float = WAIT_S) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created when missing) for the block; wait up to ``wait`` seconds."""
    if fcntl is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(f"{what}: another edgepack process has held its lock ({path}) for more "
                                      f"than {wait:g} s; wait for it to finish") from None  # fmt: skip
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def try_lock(path: str | os.PathLike[str]) -> int | None:
    """A descriptor holding an exclusive lock on the existing file ``path``, or None if another process holds it."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def hold(path: Path) -> int | None:
    """Create ``path`` and keep it locked until the returned descriptor is closed (marks a folder as in use)."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd
