"""One small exception tree. Every message says what was given and what is allowed.

The CLI maps these to exit codes: ``exit_code`` 2 is bad input or usage, 1 is a check that failed
(parity gate, accuracy budget, a compression target not reached).
"""

from __future__ import annotations

import contextlib
import errno
import struct
import zipfile
import zlib
from collections.abc import Iterator


class EdgepackError(Exception):
    """Base of every error edgepack raises on purpose; the CLI prints it as one line."""

    exit_code = 2


class ConfigError(EdgepackError, ValueError):
    """A setting, recipe key or command-line value that is not allowed."""


class DataError(EdgepackError, ValueError):
    """A data spec that cannot be loaded: missing path, empty folder, bad npz, ..."""


class ModelLoadError(EdgepackError):
    """A model file that is missing, damaged, or not a model this tool can open."""


class ExportError(EdgepackError):
    """An export that cannot be made from what was given."""


class CheckFailed(EdgepackError):
    """A measured result missed its target (sparsity not reached, accuracy budget exceeded)."""

    exit_code = 1


class ParityError(CheckFailed):
    """An exported file answers differently from the model it came from."""


# -- the one place that maps library exceptions on user input to these errors ----------------------------------

# What Python and the libraries raise when the *content* of a user's file or value is wrong: json/zip/npz/protobuf
# parsers, int()/float() on the wrong type, a missing key, a nesting too deep to parse.
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError, UnicodeError, EOFError,
    zipfile.BadZipFile, zlib.error, struct.error,
)  # fmt: skip


def one_line(e: BaseException, limit: int = 200) -> str:
    """An exception as ``Type: first line`` of reasonable length."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else ""
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    if isinstance(e, RecursionError):
        return "nested too deeply to read"
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def as_user_error(e: BaseException) -> EdgepackError | None:
    """The EdgepackError (exit 2) for an operating-system refusal about a path the user named, or for asking for more
    memory than there is; None for anything else (a bug, reported as an internal error)."""
    if isinstance(e, EdgepackError):
        return e
    if isinstance(e, MemoryError):
        return ConfigError("not enough memory for what was asked (a batch, image size or file too large for this "
                           "machine); ask for less")  # fmt: skip
    if isinstance(e, OSError) and (e.filename is not None or e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)):
        where = f"{e.filename}: " if e.filename is not None else ""
        reason = e.strerror or str(e)
        hint = {errno.EACCES: "; choose a place you may write to", errno.EROFS: "; the file system is read-only",
                errno.ENOSPC: "; free some disk space", errno.EISDIR: "; give a file name, not a folder",
                errno.ENOTDIR: "; a part of the path is a file, not a folder"}.get(e.errno or 0, "")  # fmt: skip
        return ConfigError(f"{where}{reason}{hint}")
    return None


@contextlib.contextmanager
def user_input(error: type[EdgepackError], what: str) -> Iterator[None]:
    """Inside the block, a library's complaint about what the user gave becomes one line of ``error`` about ``what``.

    For code that reads a user's file (a bundle, a manifest, a results.json, a dataset): a damaged field raises
    TypeError/ValueError/KeyError/RecursionError deep inside; the user needs "what: what is wrong", exit 2.
    """
    try:
        yield
    except EdgepackError:
        raise
    except INPUT_ERRORS as e:
        raise error(f"{what}: {one_line(e)}") from e
