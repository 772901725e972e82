"""``shenjing layers`` and ``shenjing capture``: list the layers, record them over a split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from shenjing.cli._common import RUN_ARG, name_list, trust_code_option

out = Console(highlight=False, soft_wrap=True)


def _layers_option(required: bool = True) -> Any:
    return typer.Option(... if required else None, "--layers", "-l",
                        help="Comma-separated names, globs (fc?, features.*), module types "
                             "(ReLU) or output keys as `shenjing layers RUN` prints them "
                             "(lstm.1.0, block#1). Post-activation features are the "
                             "activation layers, e.g. relu1 = fc1 after its ReLU.")


def _parse_bytes(text: str | None) -> int | None:
    if text is None:
        return None
    from shenjing.errors import UsageError

    units = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        size = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except (ValueError, OverflowError):
        raise UsageError(f"--max-memory {text!r} is not a size; use e.g. 2G or 500M") from None
    if not size >= 1 or size == float("inf"):
        raise UsageError(f"--max-memory {text!r} must be a positive size; use e.g. 2G or "
                         "500M")
    return int(size)


def register(app: typer.Typer) -> None:
    """Add ``layers``, ``capture`` to the app."""

    @app.command()
    def layers(
        run: Path = RUN_ARG,
        epoch: str = typer.Option("final", "--epoch", "-e", help="Checkpoint to load (with "
                                  "--dry-run)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Run one batch through the "
                                     "model now instead of showing the table saved with the "
                                     "run."),
        trust_code: bool = trust_code_option(),
    ) -> None:
        """List every layer of the run's model: name, type, output keys and shapes, calls.

        Shows the table saved when the run was made (no model is built, no code runs);
        --dry-run builds the model and runs one test batch.
        """
        from shenjing.capture import list_layers
        from shenjing.capture.layers import LayerTable
        from shenjing.runs import open_run

        r = open_run(run, trust_code=trust_code)
        saved = r.saved_layer_table()
        if saved is not None and not dry_run:
            table = LayerTable.from_dict(saved)
            out.print(str(table), markup=False)
            out.print("(the table saved when the run was made; --dry-run runs the model "
                      "again)", markup=False)
        else:
            data = r.data
            table = list_layers(r.model(epoch), data.test.x[:2])
            out.print(str(table), markup=False)
        out.print("\nCapture a layer or one of its outputs: shenjing capture RUN --layers "
                  "NAME or KEY (any name or key above, e.g. lstm.1.0 or block#1); "
                  "post-activation features are the activation layers (e.g. relu1).",
                  markup=False)

    @app.command()
    def capture(
        run: Path = RUN_ARG,
        layers: str = _layers_option(),
        epoch: str = typer.Option("final", "--epoch", "-e",
                                  help="Checkpoint: a number, init (0 = untrained) or final."),
        split: str = typer.Option("test", "--split", help="train or test."),
        n: int = typer.Option(None, "--n", help="Capture a fixed random subset of N samples."),
        pool: str = typer.Option("none", "--pool", help="Conv maps: none, mean, max, or k "
                                 "(adaptive average pooling to k×k)."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 or float16."),
        batch_size: int = typer.Option(256, "--batch-size"),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        max_memory: str = typer.Option(None, "--max-memory",
                                       help="Refuse captures above this size, e.g. 2G."),
        trust_code: bool = trust_code_option(),
    ) -> None:
        """Record layers over a split into RUN/activations/<layer>/epoch-NNN[-settings].npy.

        The file name carries every setting that changes the numbers (-train, -nN, -pool-P,
        -float16), so captures with other settings never replace each other. Not
        resumable: one streaming pass, written under a temporary name and renamed at the
        end, so a killed capture leaves no partial file; run it again.
        """
        from shenjing.runs import open_run
        from shenjing.stages.capture import capture_stage

        epoch_value: int | str = int(epoch) if epoch.lstrip("-").isdigit() else epoch
        the_run = open_run(run, trust_code=trust_code)
        result = capture_stage(the_run, name_list("--layers", layers) or [], epoch=epoch_value,
                               split=split, n=n, pool=pool, dtype=dtype,
                               batch_size=batch_size, device=device,
                               max_memory=_parse_bytes(max_memory))
        out.print(result.summary(), markup=False)
