"""``shenjing dynamics``: training curves and per-layer update ratios, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import RUN_ARG, print_lines

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``dynamics`` to the app."""

    @app.command()
    def dynamics(
        run: Path = RUN_ARG,
        no_weights: bool = typer.Option(False, "--no-weights", help="Skip the weight "
                                        "histograms."),
    ) -> None:
        """Training dynamics: curves, per-layer update ratios, settled layers, warnings (from
        metrics.jsonl; not resumable: redrawn each time, seconds)."""
        from shenjing.runs import open_run
        from shenjing.stages.dynamics import dynamics_stage

        result = dynamics_stage(open_run(run), weights=not no_weights)
        print_lines(out, result.summary())
