"""Errors shenjing raises, so callers can catch one family and the CLI can print one line.

Every message says what was expected, what was given, and how to fix it.

    ShenjingError
    ├── UsageError            bad argument or option (CLI exit code 2); also a ValueError
    │   ├── UnknownNameError      a model, dataset or method name that does not exist
    │   ├── LayerNotFoundError    a layer name or pattern that matches nothing
    │   └── ShapeMismatchError    data whose shape does not fit the model
    ├── DataError             a dataset file is missing, malformed or fails its checksum
    │   └── ChecksumError
    ├── RunError              a run directory is missing, foreign or of a newer format
    │   └── EpochNotFoundError    the run has no checkpoint for the asked epoch
    ├── CheckpointError       a weights file is unsafe, or does not match the model
    ├── ResourceError         a job would not fit the memory allowed
    └── MissingExtraError     an optional dependency is not installed; also an ImportError
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ShenjingError(Exception):
    """Base class of every error shenjing raises on purpose."""


class UsageError(ShenjingError, ValueError):
    """An argument or option that cannot work as given."""


class UnknownNameError(UsageError, KeyError):
    """A name (model, dataset, method) that is not one of the choices."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class LayerNotFoundError(UnknownNameError):
    """A layer name or pattern that matches no layer of the model."""


class ShapeMismatchError(UsageError):
    """Input data whose shape the model cannot take."""


class DataError(ShenjingError):
    """A dataset file that is missing, malformed or corrupt."""


class ChecksumError(DataError):
    """A downloaded or given file whose hash is not the expected one."""


class RunError(ShenjingError):
    """A run directory that is missing, foreign, or written by a newer shenjing."""


class EpochNotFoundError(RunError, UsageError):
    """A run has no checkpoint for the epoch asked for."""


class CheckpointError(ShenjingError):
    """A weights file that is unsafe to load or does not fit the model."""


class ResourceError(ShenjingError):
    """A job that would need more memory (or disk) than allowed."""


class MissingExtraError(ShenjingError, ImportError):
    """An optional dependency that is not installed."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean 'x'?' for the closest choices, or '' if none is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    quoted = " or ".join(repr(c) for c in close)
    return f" Did you mean {quoted}?"


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UnknownNameError:
    """Build the standard 'unknown <kind>' error listing every choice."""
    choices = sorted(choices)
    return UnknownNameError(
        f"unknown {kind} {name!r}.{did_you_mean(name, choices)} "
        f"Choices: {', '.join(choices)}."
    )
