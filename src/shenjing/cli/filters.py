"""``shenjing filters``: the kernels of a layer, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import RUN_ARG, parse_epochs, print_lines

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``filters`` to the app."""

    @app.command()
    def filters(
        run: Path = RUN_ARG,
        layer: str = typer.Option(None, "--layer", "-l", help="Layer [the first conv layer; "
                                  "for an MLP the first linear layer]."),
        epochs: str = typer.Option("final", "--epochs", "-e",
                                   help="Epochs: final, 0,5 or all."),
        max_filters: int = typer.Option(64, "--max-filters", help="Most filters (or units, "
                                        "or kernel-grid rows) to draw."),
        max_in: int = typer.Option(16, "--max-in", help="Most input channels in a kernel "
                                   "grid."),
        scale: str = typer.Option("filter", "--scale", help="filter (each its own max|w|) or "
                                  "shared (one scale for the layer)."),
        gif: bool = typer.Option(False, "--gif", help="Animated GIF across the epochs."),
    ) -> None:
        """Filters (kernels) of a Conv2d or Conv1d layer, or an MLP's first-layer units as
        images. Reads only the checkpoints: the model is never built. A layer without
        kernels (an LSTM, a norm layer, attention) is reported as skipped, with the reason.
        Not resumable: redrawn each time (seconds)."""
        from shenjing.runs import open_run
        from shenjing.stages.filters import filters_stage

        chosen = "all" if epochs.strip() == "all" else parse_epochs(epochs)
        if layer is not None and not layer.strip():
            from shenjing.errors import UsageError

            raise UsageError("--layer '' names no layer; give one, e.g. --layer conv1, or "
                             "leave --layer out for the first conv layer")
        result = filters_stage(open_run(run), layer, epochs=chosen, max_filters=max_filters,
                               max_in=max_in, scale=scale, gif=gif)
        print_lines(out, result.summary())
