"""``shenjing train`` and ``shenjing runs``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from shenjing import _checks

out = Console(emoji=False)

IDX_DATASETS = ("mnist", "fashion-mnist")  # the datasets --data-dir is for
HIDDEN_MODELS = ("mlp", "curve_mlp")  # the zoo models whose widths --hidden sets


def check_train_options(*, model: str, data: str, epochs: int | None, optimizer: str | None,
                        lr: float | None, batch_size: int | None, seed: int,
                        device: str, data_dir: Path | None, hidden: str | None,
                        normalize: str | None, resume: bool, force: bool,
                        schedule: str | None = None, shift: int | None = None
                        ) -> dict[str, Any]:
    """Check every ``train`` option before anything is loaded or written; return the model
    kwargs ``--hidden`` asks for. Each refusal is one :class:`UsageError` naming the option.
    """
    from shenjing._device import resolve_device
    from shenjing.data import DATASET_NAMES
    from shenjing.data.custom import is_user_data
    from shenjing.data.scaling import NORMALIZE_CHOICES
    from shenjing.errors import UnknownNameError, UsageError, did_you_mean
    from shenjing.models import MODEL_NAMES
    from shenjing.training.schedule import SCHEDULES
    from shenjing.training.trainer import MAX_EPOCHS, MAX_SHIFT, OPTIMIZERS

    _checks.choice("--model", model, MODEL_NAMES)
    if data not in DATASET_NAMES and not is_user_data(data):
        raise UnknownNameError(
            f"--data {data!r}: expected one of {', '.join(DATASET_NAMES)}, or your own data "
            "(a .npz or x.npy/y.npy file, an image folder, file.py:make_dataset)."
            f"{did_you_mean(data, DATASET_NAMES)} E.g. --data digits")
    if epochs is not None:
        _checks.bounded_int("--epochs", epochs, low=1, high=MAX_EPOCHS, example=5)
    if optimizer is not None:
        _checks.choice("--optimizer", optimizer, OPTIMIZERS)
    if lr is not None:
        _checks.finite_float("--lr", lr, low=0.0, low_open=True, example="0.001")
    if batch_size is not None:
        _checks.positive_int("--batch-size", batch_size, example=64)
    if schedule is not None:
        _checks.choice("--schedule", schedule, SCHEDULES)
    if shift is not None:
        _checks.bounded_int("--shift", shift, low=0, high=MAX_SHIFT, example=1)
    _checks.random_seed("--seed", seed)
    if normalize is not None:
        _checks.choice("--normalize", normalize, NORMALIZE_CHOICES)
    if resume and force:
        raise UsageError("--resume and --force contradict each other: --resume continues the "
                         "run, --force deletes it and starts over; pass one")
    if data_dir is not None and data not in IDX_DATASETS:
        raise UsageError(f"--data-dir is where the IDX files of {' and '.join(IDX_DATASETS)} "
                         f"are; it does not apply to --data {data!r}: leave it out")
    try:
        resolve_device(device)
    except UsageError as exc:
        raise UsageError(f"--device {device!r}: {exc}") from None
    if not hidden:
        return {}
    if model not in HIDDEN_MODELS:
        raise UsageError(f"--hidden sets the hidden widths of {' and '.join(HIDDEN_MODELS)}; "
                         f"{model!r} has fixed widths: leave --hidden out or use --model mlp")
    widths = _checks.int_list("--hidden", hidden, example="64,32")
    if model == "mlp":
        return {"hidden": widths}
    if len(set(widths)) != 1:
        raise UsageError(f"--hidden {hidden!r}: curve_mlp's hidden layers all have one width "
                         f"(--hidden 64,64 is width 64, depth 2); give one width repeated, "
                         f"e.g. --hidden {widths[0]},{widths[0]}")
    return {"hidden": widths[0], "depth": len(widths)}


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``runs`` to the app."""

    @app.command()
    def train(
        model: str = typer.Option("mlp", "--model", "-m", help="Zoo model: mlp, simple_cnn, "
                                  "mnist_cnn, dropout_cnn, mnistnet, curve_mlp, vit, "
                                  "row_lstm, vgg16."),
        data: str = typer.Option("digits", "--data", "-d", help="digits (embedded), mnist, "
                                 "fashion-mnist, curve, moons, spirals, or your own data "
                                 "(.npz, x.npy/y.npy, an image folder)."),
        run: Path = typer.Option(None, "--run", "-r",
                                 help="Run folder to write [default: runs/MODEL-DATA]."),
        epochs: int = typer.Option(None, "--epochs", "-e",
                                   help="Epochs, ≥ 1 [default: the seed's]."),
        optimizer: str = typer.Option(None, "--optimizer", help="adam, adamw or sgd."),
        lr: float = typer.Option(None, "--lr", help="Learning rate, > 0 [default: the seed's]."),
        batch_size: int = typer.Option(None, "--batch-size", "-b",
                                       help="Batch size, ≥ 1 [default: the seed's]."),
        seed: int = typer.Option(0, "--seed", help="Seed for init, split and shuffling "
                                 "(0 to 2**32 − 1)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 …"),
        data_dir: Path = typer.Option(None, "--data-dir",
                                      help="Folder with IDX files (mnist, fashion-mnist)."),
        hidden: str = typer.Option(None, "--hidden", help="Hidden widths for mlp, e.g. 64,32."),
        schedule: str = typer.Option(
            None, "--schedule", help="Learning-rate schedule: constant, or cosine (linear "
            "warm-up over the first 10 % of steps, then cosine to zero) [default: the "
            "model's; cosine for vit]."),
        shift: int = typer.Option(
            None, "--shift", help="Move each training image by a random offset of up to "
            "this many pixels, a new draw every epoch; 0 for none [default: the model's; 1 "
            "for vit on 28×28 images, 0 on the 8×8 digits]."),
        normalize: str = typer.Option(
            None, "--normalize", help="Pixel scaling of image data: standard ((x/255 − mean) "
            "/ std; mnist 0.1307/0.3081, fashion-mnist 0.2860/0.3530), unit (x/255, in "
            "[0, 1]) or none (raw 0..255) [default: standard for mnist and fashion-mnist, "
            "unit for digits (x/16) and your own images]."),
        resume: bool = typer.Option(False, "--resume", help="Continue a killed run."),
        force: bool = typer.Option(False, "--force", help="Delete the run and start over."),
    ) -> None:
        """Train a zoo model and record checkpoints and metrics into a run directory.

        Resumes with --resume: a killed run continues from its last finished epoch, byte for
        byte as if it had not stopped."""
        from shenjing.data import load_dataset
        from shenjing.training import train as train_fn

        kwargs = check_train_options(model=model, data=data, epochs=epochs,
                                     optimizer=optimizer, lr=lr, batch_size=batch_size,
                                     seed=seed, device=device, data_dir=data_dir,
                                     hidden=hidden, normalize=normalize, resume=resume,
                                     force=force, schedule=schedule, shift=shift)
        dataset = load_dataset(data, data_dir=data_dir, seed=seed, normalize=normalize)
        run_path = run if run is not None else Path("runs") / f"{model}-{dataset.name}"
        if resume and (run_path / "run.json").is_file():
            dataset = _same_scaling_as_run(run_path, dataset, data=data, data_dir=data_dir,
                                           seed=seed, normalize=normalize)
        result = train_fn(model, dataset, epochs=epochs, run=run_path, optimizer=optimizer,
                          lr=lr, batch_size=batch_size, seed=seed, device=device,
                          resume=resume, force=force, model_kwargs=kwargs,
                          schedule=schedule, shift=shift)
        last = result.metrics()[-1]
        acc = last.get("test_accuracy")
        score = f"test accuracy {acc:.4f}" if acc is not None else \
            f"test loss {last.get('test_loss'):.4g}"
        out.print(f"epoch {last['epoch']}: {score}")
        out.print(f"run: {result.path}")

    @app.command()
    def runs(folder: Path = typer.Argument(Path("runs"), help="Folder to search for runs.")
             ) -> None:
        """List the runs under a folder: model, data, epochs, best accuracy, status. A run
        that cannot be read is listed as broken, with the reason."""
        from rich.markup import escape

        from shenjing.runs import list_runs

        listings = list_runs(folder)
        table = Table(title=f"runs under {escape(str(folder))}")
        for col in ("run", "model", "data", "epochs", "best acc", "train status"):
            table.add_column(col)
        for r in listings:
            if r.problem is not None:
                table.add_row(escape(str(r.path)), "-", "-", "-", "-", "[red]broken[/red]")
                continue
            table.add_row(escape(str(r.path)), escape(r.model), escape(r.data),
                          "-" if r.final_epoch is None else str(r.final_epoch),
                          "-" if r.best_accuracy is None else f"{r.best_accuracy:.4f}",
                          escape(r.train_status))
        out.print(table)
        for r in listings:
            if r.problem is not None:
                out.print(f"broken: {escape(str(r.path))}: {escape(r.problem)}", soft_wrap=True,
                          highlight=False)


def _same_scaling_as_run(run_path: Path, dataset: Any, *, data: str, data_dir: Path | None,
                         seed: int, normalize: str | None) -> Any:
    """The dataset to resume ``run_path`` with: scaled as the run's data was.

    Without ``--normalize`` the recorded scaling is used (a run from before ``normalize``
    was made with its dataset's default, which is what no ``--normalize`` loads); an
    explicit ``--normalize`` that differs from it is refused, since resuming with other
    inputs would silently change the data halfway through the run.
    """
    from shenjing.data import load_dataset
    from shenjing.errors import UsageError
    from shenjing.runs import Run

    recorded = Run(run_path).manifest.get("data", {}).get("normalize")
    if normalize is None:
        if recorded is None or recorded == dataset.spec.get("normalize"):
            return dataset
        return load_dataset(data, data_dir=data_dir, seed=seed, normalize=recorded)
    if recorded is None:
        recorded = load_dataset(data, data_dir=data_dir, seed=seed).spec.get("normalize")
    if recorded != normalize:
        raise UsageError(f"--normalize {normalize}: cannot resume {run_path}, which was "
                         f"trained with normalize={recorded!r}; leave --normalize out to "
                         "continue it, or pass --force to start over")
    return dataset
