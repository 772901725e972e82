"""``shenjing recurrent``: a recurrent layer's states over time, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import RUN_ARG, parse_epochs, print_lines, trust_code_option

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``recurrent`` to the app."""

    @app.command()
    def recurrent(
        run: Path = RUN_ARG,
        layer: str = typer.Option(None, "--layer", "-l", help="The nn.LSTM, nn.GRU or "
                                  "nn.RNN module, e.g. lstm [the model's first]."),
        epochs: str = typer.Option("init,final", "--epochs", "-e", help="Epochs of the "
                                   "probe and the trajectories: 0,final or init,final or "
                                   "all."),
        saturation_epochs: str = typer.Option("all", "--saturation-epochs", help="Epochs of "
                                              "the gate saturation: all, or 0,3,5."),
        n: int = typer.Option(1000, "--n", help="Test samples (and train samples for the "
                              "probe), a fixed subset."),
        n_train: int = typer.Option(None, "--n-train", help="Train samples of the probe "
                                    "[--n]."),
        per_class: int = typer.Option(3, "--per-class", help="Trajectories drawn per "
                                      "class."),
        seed: int = typer.Option(0, "--seed", help="Seed of the fixed subsets."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        trust_code: bool = trust_code_option(),
    ) -> None:
        """What a recurrent layer knows at each step: a linear probe on h_t for every t
        (untrained vs trained), gate saturation by epoch (LSTM, GRU), and 2-D PCA
        trajectories of the hidden state coloured by class.

        States of lower layers and gates are recomputed step by step from the layer's
        weights and checked against its real output (the error is printed). Not
        resumable: it takes seconds and is redone each time.
        """
        from shenjing import _checks
        from shenjing.runs import open_run
        from shenjing.stages.recurrent import check_recurrent_options, recurrent_stage

        check_recurrent_options(n=n, n_train=n_train, per_class=per_class, seed=seed)
        _checks.device("--device", device)
        chosen = "all" if epochs.strip() == "all" else parse_epochs(epochs)
        sat = ("all" if saturation_epochs.strip() == "all"
               else parse_epochs(saturation_epochs))
        result = recurrent_stage(open_run(run, trust_code=trust_code), layer=layer,
                                 epochs=chosen, saturation_epochs=sat, n=n, n_train=n_train,
                                 per_class=per_class, seed=seed, device=device)
        print_lines(out, result.summary())
