"""Errors shenjing raises, so callers can catch one family and the CLI can print one line.

Every message says what was expected, what was given, and how to fix it.

    ShenjingError
    ├── UsageError            bad argument or option (CLI exit code 2); also a ValueError
    │   ├── UnknownNameError      a model, dataset or method name that does not exist
    │   ├── LayerNotFoundError    a layer name or pattern that matches nothing
    │   ├── ShapeMismatchError    data whose shape does not fit the model
    │   └── NotApplicableError    a view that does not apply to this model or layer
    │                             (filters of an LSTM); stages record it as ``skipped``
    ├── DataError             a dataset file is missing, malformed or fails its checksum
    │   └── ChecksumError
    ├── RunError              a run directory is missing, foreign or of a newer format
    │   ├── EpochNotFoundError    the run has no checkpoint for the asked epoch
    │   ├── RunLockedError        another process is writing the run
    │   └── UntrustedCodeError    the run names user code this user has not trusted
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


class NotApplicableError(UsageError):
    """A view asked of a model or layer it does not apply to (the filters of an LSTM).

    Stages let it propagate; :meth:`shenjing.runs.Run.running_stage` records the stage as
    ``skipped`` with the message as its reason, the same way everywhere.
    """


class DataError(ShenjingError):
    """A dataset file that is missing, malformed or corrupt."""


class ChecksumError(DataError):
    """A downloaded or given file whose hash is not the expected one."""


class RunError(ShenjingError):
    """A run directory that is missing, foreign, or written by a newer shenjing."""


class EpochNotFoundError(RunError, UsageError):
    """A run has no checkpoint for the epoch asked for."""


class RunLockedError(RunError):
    """Another live process holds the run's writer lock (two writers would corrupt it)."""


class UntrustedCodeError(RunError, UsageError):
    """A run folder names user code (a model factory file or module, a data factory, a loss)
    that this user did not create the run with on this machine, or that changed since.

    A run folder is data: its code runs only with consent (``--trust-code`` /
    ``trust_code=True``), as with Hugging Face's ``trust_remote_code``.
    """


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
