"""What the figures call epoch 0 of the run being drawn.

For a run shenjing trained, epoch 0 is the untrained net; for an ``inspect`` run without
``--init-weights`` it is a seeded fresh initialisation, not the user's real start, and a
figure must not call it "untrained". :meth:`shenjing.runs.Run.running_stage` sets the words
for the stage's block; plot functions read them when they title epoch 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_EPOCH0: ContextVar[str] = ContextVar("shenjing_epoch0", default="untrained")


@contextlib.contextmanager
def epoch0_called(words: str) -> Iterator[None]:
    """Within the block, figures call epoch 0 ``words`` (``"fresh init"``)."""
    token = _EPOCH0.set(words)
    try:
        yield
    finally:
        _EPOCH0.reset(token)


def epoch0_words() -> str:
    """What epoch 0 is called in figure titles now (``"untrained"`` by default).

    >>> with epoch0_called("fresh init"):
    ...     epoch0_words()
    'fresh init'
    """
    return _EPOCH0.get()


__all__ = ["epoch0_called", "epoch0_words"]
