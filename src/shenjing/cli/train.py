"""``shenjing train`` and ``shenjing runs``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shenjing.cli._common import parse_list

out = Console(emoji=False)


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``runs`` to the app."""

    @app.command()
    def train(
        model: str = typer.Option("mlp", "--model", "-m", help="Zoo model: mlp, simple_cnn, "
                                  "mnist_cnn, dropout_cnn, mnistnet, curve_mlp, vgg16."),
        data: str = typer.Option("digits", "--data", "-d", help="digits (embedded), mnist, "
                                 "fashion-mnist, curve, moons, spirals."),
        run: Path = typer.Option(None, "--run", "-r",
                                 help="Run folder to write [default: runs/MODEL-DATA]."),
        epochs: int = typer.Option(None, "--epochs", "-e", help="Epochs [seed's default]."),
        optimizer: str = typer.Option(None, "--optimizer", help="adam, adamw or sgd."),
        lr: float = typer.Option(None, "--lr", help="Learning rate [seed's default]."),
        batch_size: int = typer.Option(None, "--batch-size", "-b", help="Batch size."),
        seed: int = typer.Option(0, "--seed", help="Seed for init, split and shuffling."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 …"),
        data_dir: Path = typer.Option(None, "--data-dir",
                                      help="Folder with IDX files (mnist, fashion-mnist)."),
        hidden: str = typer.Option(None, "--hidden", help="Hidden widths for mlp, e.g. 64,32."),
        resume: bool = typer.Option(False, "--resume", help="Continue a killed run."),
        force: bool = typer.Option(False, "--force", help="Delete the run and start over."),
    ) -> None:
        """Train a zoo model and record checkpoints and metrics into a run directory."""
        from shenjing.training import train as train_fn

        kwargs: dict[str, object] = {}
        if hidden:
            widths = [int(w) for w in parse_list(hidden)]
            kwargs = {"hidden": widths} if model != "curve_mlp" else {"hidden": widths[0],
                                                                      "depth": len(widths)}
        result = train_fn(model, data, epochs=epochs, run=run, optimizer=optimizer, lr=lr,
                          batch_size=batch_size, seed=seed, device=device, data_dir=data_dir,
                          resume=resume, force=force, model_kwargs=kwargs)
        last = result.metrics()[-1]
        acc = last.get("test_accuracy")
        score = f"test accuracy {acc:.4f}" if acc is not None else \
            f"test loss {last.get('test_loss'):.4g}"
        out.print(f"epoch {last['epoch']}: {score}")
        out.print(f"run: {result.path}")

    @app.command()
    def runs(folder: Path = typer.Argument(Path("runs"), help="Folder to search for runs.")
             ) -> None:
        """List the runs under a folder: model, data, epochs, best accuracy, status."""
        from shenjing.runs import find_runs

        table = Table(title=f"runs under {folder}")
        for col in ("run", "model", "data", "epochs", "best acc", "train status"):
            table.add_column(col)
        for r in find_runs(folder):
            m = r.manifest
            accs = [x["test_accuracy"] for x in r.metrics() if x.get("test_accuracy") is not None]
            table.add_row(str(r.path), str(m["model"].get("name") or m["model"].get("factory")),
                          str(m["data"].get("name")), str(r.final_epoch if r.epochs else "-"),
                          f"{max(accs):.4f}" if accs else "-",
                          str(r.stage("train").get("status", "-")))
        out.print(table)
