"""``shenjing layers``, ``capture`` and ``embed``: one library call each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from shenjing.cli._common import name_list, parse_epochs, trust_code_option

out = Console(highlight=False, soft_wrap=True)
RUN_ARG = typer.Argument(..., help="Run folder (made by `shenjing train` or `inspect`).")


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
    """Add ``layers``, ``capture`` and ``embed`` to the app."""

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
        from shenjing.stages.embed import capture_stage

        epoch_value: int | str = int(epoch) if epoch.lstrip("-").isdigit() else epoch
        the_run = open_run(run, trust_code=trust_code)
        result = capture_stage(the_run, name_list("--layers", layers) or [], epoch=epoch_value,
                               split=split, n=n, pool=pool, dtype=dtype,
                               batch_size=batch_size, device=device,
                               max_memory=_parse_bytes(max_memory))
        out.print(result.summary(), markup=False)

    @app.command()
    def embed(
        run: Path = RUN_ARG,
        layers: str = typer.Option(..., "--layers", "-l",
                                   help="Comma-separated layers or output keys as for "
                                        "`capture` (lstm.0, block#1); add 'input' for a map "
                                        "of the raw inputs (the baseline)."),
        method: str = typer.Option("tsne", "--method", "-m", help="tsne, pca or umap "
                                   "(umap needs pip install \"shenjing[umap]\")."),
        epochs: str = typer.Option("init,final", "--epochs", "-e",
                                   help="Epochs, aligned in order: 0,5 or init,final or all."),
        n: int = typer.Option(2000, "--n", help="Test samples in each map."),
        n_train: int = typer.Option(5000, "--n-train", help="Train samples for the probe."),
        split: str = typer.Option("test", "--split", help="Split to map: test or train."),
        seed: int = typer.Option(0, "--seed"),
        perplexity: float = typer.Option(30.0, "--perplexity"),
        pca_dims: int = typer.Option(50, "--pca-dims", help="PCA before t-SNE/UMAP (0: off)."),
        no_align: bool = typer.Option(False, "--no-align", help="Do not align maps."),
        no_cka: bool = typer.Option(False, "--no-cka", help="Skip the CKA matrices."),
        projector: bool = typer.Option(False, "--projector",
                                       help="Also export for TensorBoard's Projector."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        trust_code: bool = trust_code_option(),
    ) -> None:
        """2-D maps of layers across epochs, with probe/kNN accuracy and map faithfulness.

        Resumes: a map already on disk is reused when every setting that made it matches
        (samples, seed, method options, probe settings); a rerun after a kill computes only
        the missing maps.
        """
        from shenjing.runs import open_run
        from shenjing.stages.embed import embed_stage

        chosen = "all" if epochs.strip() == "all" else parse_epochs(epochs)
        the_run = open_run(run, trust_code=trust_code)
        result = embed_stage(the_run, name_list("--layers", layers) or [], epochs=chosen,
                             method=method,
                             n=n, n_train=n_train, split=split, seed=seed,
                             perplexity=perplexity,
                             pca_dims=None if pca_dims == 0 else pca_dims,
                             align=not no_align, cka=not no_cka, projector=projector,
                             device=device)
        out.print(result.summary(), markup=False)
