"""``shenjing export``: a run's numbers in another tool's format (TensorBoard), one call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import RUN_ARG, print_lines

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``export`` to the app."""

    @app.command()
    def export(
        run: Path = RUN_ARG,
        tensorboard: Path = typer.Option(..., "--tensorboard", help="TensorBoard log folder "
                                         "to write (created; a folder holding an earlier "
                                         "export is rewritten, any other non-empty one is "
                                         "refused)."),
        no_histograms: bool = typer.Option(False, "--no-histograms", help="Skip the weight "
                                           "histograms (one per tensor and epoch)."),
    ) -> None:
        """Export RUN to TensorBoard: training curves and per-layer dynamics as scalars,
        weight histograms per epoch, and the embedding projector files (from the run's files
        alone; not resumable: rewritten each time, seconds)."""
        from shenjing.report.tensorboard import export_tensorboard
        from shenjing.runs import open_run

        result = export_tensorboard(open_run(run), tensorboard, histograms=not no_histograms)
        print_lines(out, result.summary())
