"""One small exception tree. Every message says what was given and what is allowed.

The CLI maps these to exit codes: ``exit_code`` 2 is bad input or usage, 1 is a check that failed
(parity gate, accuracy budget, a compression target not reached).
"""

from __future__ import annotations


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
