"""``shenjing weights``: weight histograms and statistics across epochs, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import RUN_ARG, name_list, parse_epochs, print_lines

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``weights`` to the app."""

    @app.command()
    def weights(
        run: Path = RUN_ARG,
        epochs: str = typer.Option("all", "--epochs", "-e", help="Epochs: all, or 0,5."),
        layers: str = typer.Option(None, "--layers", help="Parameter groups, e.g. "
                                   "conv1,fc1.bias [all]."),
        bins: int = typer.Option(60, "--bins", help="Histogram bins."),
    ) -> None:
        """Weight histograms and statistics of every layer across epochs (from the checkpoints;
        not resumable: redrawn each time, seconds)."""
        from shenjing.runs import open_run
        from shenjing.stages.weights import weights_stage

        chosen = "all" if epochs.strip() == "all" else parse_epochs(epochs)
        result = weights_stage(open_run(run), epochs=chosen,
                               layers=name_list("--layers", layers, example="fc1,fc1.bias"),
                               bins=bins)
        print_lines(out, result.summary())
