"""``shenjing units``: what real inputs excite each unit of one layer most, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import RUN_ARG, parse_epochs, print_lines, trust_code_option

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``units`` to the app."""

    @app.command()
    def units(
        run: Path = RUN_ARG,
        layer: str = typer.Option(..., "--layer", "-l", help="The layer, as `shenjing layers "
                                  "RUN` lists it (conv2, fc1, lstm.0 …), or output (one unit "
                                  "per class)."),
        top: int = typer.Option(9, "--top", "-k", help="Top inputs shown per unit."),
        reduce: str = typer.Option("mean", "--reduce", help="mean or max over each unit's "
                                   "positions (a conv channel's map, a sequence's tokens)."),
        channels: str = typer.Option(None, "--channels", "-c", help="Units to keep, e.g. "
                                     "0:16 or 3,5,8 [all]."),
        epochs: str = typer.Option("init,final", "--epochs", "-e",
                                   help="Epochs compared: 0,final or init,final or 0,3,5."),
        split: str = typer.Option("test", "--split", help="test or train."),
        n: int = typer.Option(None, "--n", help="Inputs searched (a fixed subset) [all of "
                              "the split]."),
        batch_size: int = typer.Option(256, "--batch-size", help="Inputs per forward pass."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        trust_code: bool = trust_code_option(),
    ) -> None:
        """What real inputs excite each unit most, untrained next to trained.

        One streaming pass per epoch keeps each unit's top inputs (never all activations);
        conv layers show the crop of the input under the unit's measured receptive field
        (clipped at the image border), each titled with its activation and label, with the
        class purity of the top-k next to every unit. Not resumable: seconds.
        """
        from shenjing import _checks
        from shenjing.runs import open_run
        from shenjing.stages.units import check_units_options, parse_channels, units_stage

        check_units_options(top=top, reduce=reduce, n=n, batch_size=batch_size, split=split)
        picked = parse_channels(channels)
        _checks.device("--device", device)
        chosen = "all" if epochs.strip() == "all" else parse_epochs(epochs)
        result = units_stage(open_run(run, trust_code=trust_code), layer=layer, top=top,
                             reduce=reduce, channels=picked, epochs=chosen, split=split, n=n,
                             batch_size=batch_size, device=device, on_plan=out.print)
        print_lines(out, result.summary())
