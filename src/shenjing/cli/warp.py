"""``shenjing warp``: how each layer bends 2-D space, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shenjing.cli._common import name_list, trust_code_option

out = Console(emoji=False)


def register(app: typer.Typer) -> None:
    """Add ``warp`` to the app."""

    @app.command()
    def warp(
        run: Path = typer.Option(Path("runs/warp"), "--run", "-r",
                                 help="Run folder (trained here unless it already is)."),
        data: str = typer.Option("spirals", "--data", "-d",
                                 help="moons, spirals, or an .npz (x, y) / .csv (x1,x2,label) "
                                      "of 2-D points."),
        hidden: str = typer.Option("64,64", "--hidden", help="Hidden widths, e.g. 64,64."),
        epochs: int = typer.Option(None, "--epochs", "-e", help="Epochs [150]."),
        lr: float = typer.Option(None, "--lr", help="Adam learning rate [5e-3]."),
        batch_size: int = typer.Option(None, "--batch-size", "-b", help="Batch size [32]."),
        seed: int = typer.Option(0, "--seed", help="Seed for data, split and init."),
        epoch: str = typer.Option("final", "--epoch", help="Epoch to study (number, init, "
                                                            "final)."),
        layers: str = typer.Option(None, "--layers",
                                   help="Layers to show (default: every linear and "
                                        "activation layer)."),
        lines: int = typer.Option(17, "--lines", help="Grid lines per direction."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        retrain: bool = typer.Option(False, "--retrain", help="Train the run again."),
        trust_code: bool = trust_code_option(),
    ) -> None:
        """Show how each layer warps a grid and the data of a 2-D set, with the linear-probe
        accuracy per layer and the decision boundary.

        Resumes: a killed training continues like train --resume; the study itself is
        recomputed (seconds). Refused before training if it would not fit in memory.
        """
        from shenjing._checks import int_list
        from shenjing.stages.warp import warp as warp_stage

        widths = int_list("--hidden", hidden, example="64,64") if hidden else None
        result = warp_stage(run, data=data, hidden=widths, epochs=epochs, lr=lr,
                            batch_size=batch_size, seed=seed,
                            epoch=int(epoch) if epoch.lstrip("-").isdigit() else epoch,
                            layers=name_list("--layers", layers), n_lines=lines, device=device,
                            retrain=retrain, trust_code=trust_code)
        table = Table(title=f"linear separability per layer (epoch {result.epoch}, chance "
                            f"{result.chance:.3f})")
        for col in ("layer", "kind", "features", "2-D view", "probe test", "probe train"):
            table.add_column(col)
        for row in result.probes:
            view = row["projection"]
            if row["explained_variance"]:
                view += f" ({100 * sum(row['explained_variance']):.0f}%)"
            table.add_row(row["layer"], row["kind"], str(row["features"]), view,
                          f"{row['probe_test_accuracy']:.3f}",
                          f"{row['probe_train_accuracy']:.3f}")
        out.print(table)
        out.print(f"run: {result.run.path}  (warp/warp-e{result.epoch:03d}.json, "
                  "figures/warp-*.png)")
