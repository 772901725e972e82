"""``shenjing visualize``: what each unit would like to see (feature visualization), one
stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import RUN_ARG, parse_epochs, print_lines, trust_code_option

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``visualize`` to the app."""

    @app.command()
    def visualize(
        run: Path = RUN_ARG,
        layer: str = typer.Option(..., "--layer", "-l", help="The layer whose units are "
                                  "visualized, e.g. conv2 (see `shenjing layers RUN`), or "
                                  "output for the classes."),
        channels: str = typer.Option("0:8", "--channels", "-c", help="Units (channels): "
                                     "START:STOP (stop excluded) or a list, e.g. 0:8 or "
                                     "0,3,5."),
        steps: int = typer.Option(256, "--steps", help="Gradient steps on the images."),
        lr: float = typer.Option(0.05, "--lr", help="Adam learning rate of the images."),
        epochs: str = typer.Option("final", "--epochs", "-e",
                                   help="Epochs: final, or 0,final, or all."),
        seed: int = typer.Option(0, "--seed", help="Seed of the start image and the "
                                 "transforms."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        trust_code: bool = trust_code_option(),
    ) -> None:
        """What each unit would like to see: feature visualization by optimisation.

        One image per unit, optimised to maximise the unit's mean activation (a conv
        channel, a hidden unit, or a class logit for --layer output): a Fourier-space image
        with 1/f scaling (colours decorrelated by the training data's covariance for RGB),
        random jitter / scale / rotation at every step, in the data's pixel range. Each
        image is shown with the activation it reached next to the best real test input's.
        Not resumable: seconds for small models.
        """
        from shenjing import _checks
        from shenjing.analysis.visualize import check_visualize_options
        from shenjing.runs import open_run
        from shenjing.stages.visualize import visualize_stage

        units = _checks.unit_list("--channels", channels)
        check_visualize_options(steps=steps, lr=lr, seed=seed)
        _checks.device("--device", device)
        chosen = "all" if epochs.strip() == "all" else parse_epochs(epochs)
        result = visualize_stage(open_run(run, trust_code=trust_code), layer=layer,
                                 channels=units, epochs=chosen, steps=steps, lr=lr,
                                 seed=seed, device=device)
        print_lines(out, result.summary())
