"""Progress bars the stages draw on the terminal (library code below reports through callbacks)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shenjing.capture.dataset import CapturePlan


def counting_bar(unit: str, *, stderr: bool = False) -> Any:
    """A rich progress bar: description, bar, ``done/total <unit>``, elapsed, ETA."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn(unit), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=Console(stderr=True) if stderr else None)


@contextmanager
def point_progress(enabled: bool, label: str) -> Iterator[Callable[[int, int], None] | None]:
    if not enabled:
        yield None
        return
    with counting_bar("points") as prog:
        task = prog.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield update


class StepBar:
    """A progress bar over named steps (steps done of total, elapsed, ETA), on stderr."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.done = -1
        self.progress = counting_bar("steps", stderr=True)
        self.task = self.progress.add_task(label, total=max(1, total))
        self.progress.start()

    def step(self, message: str) -> None:
        """A new step starts: the previous one is done."""
        self.done += 1
        self.progress.update(self.task, completed=self.done,
                             description=f"{self.label}: {message}")

    def close(self) -> None:
        self.progress.update(self.task, completed=self.done + 1)
        self.progress.stop()


def print_capture_plan(plan: CapturePlan) -> None:
    """Print what a capture will record (samples, tensors, bytes per key) on stderr: the
    ``on_plan`` callback of :func:`shenjing.capture.capture_dataset` for the CLI."""
    print(plan, file=sys.stderr)
