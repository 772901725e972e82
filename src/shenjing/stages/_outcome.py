"""Recording what an error met before a stage's work began means for that stage."""

from __future__ import annotations

from typing import Any

from shenjing.errors import NotApplicableError, UsageError
from shenjing.runs import Run


def record_outcome(run: Run, stage: str, exc: BaseException, **info: Any) -> None:
    """Record what ``exc`` means for ``stage`` the way :meth:`Run.running_stage` does:
    ``skipped`` with the reason for a :class:`NotApplicableError`, else ``failed`` with the
    error. For errors met before the stage's work began; the caller re-raises."""
    try:
        with run.running_stage(stage, **info):
            raise exc
    except BaseException:  # recorded; the caller re-raises the original
        pass


def outcome_recorded(run: Run, stage: str, exc: Exception, **info: Any) -> bool:
    """Whether ``exc``, raised while checking a stage's input, is recorded in run.json: a
    view that does not apply (skipped) or a failure (failed) is; a usage error is not —
    nothing is written for a bad option."""
    if isinstance(exc, NotApplicableError) or not isinstance(exc, UsageError):
        record_outcome(run, stage, exc, **info)
        return True
    return False
