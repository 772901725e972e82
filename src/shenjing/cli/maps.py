"""``shenjing maps``, ``filters``, ``weights`` and ``dynamics``: one stage call each."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import name_list, parse_epochs, trust_code_option

out = Console(highlight=False, soft_wrap=True)
RUN_ARG = typer.Argument(..., help="Run folder (made by `shenjing train` or `inspect`).")


def _print(text: str) -> None:
    for line in text.splitlines():
        style = "yellow" if line.startswith("WARNING") else None
        out.print(line, style=style, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``maps``, ``filters``, ``weights`` and ``dynamics`` to the app."""

    @app.command()
    def maps(
        run: Path = RUN_ARG,
        layer: str = typer.Option(..., "--layer", "-l", help="Layer name or output key "
                                  "as `shenjing layers RUN` prints it, e.g. conv1, "
                                  "features.0, lstm.0 or block#1."),
        index: str = typer.Option("0", "--index", "-i", help="Input(s): position in the "
                                  "split, e.g. 0 or 0,3,7 (one figure each)."),
        cls: str = typer.Option(None, "--class", help="Input(s): first sample of this class "
                                "(index or name), e.g. 7 or 3,7; overrides --index."),
        split: str = typer.Option("test", "--split", help="train or test."),
        epochs: str = typer.Option("init,final", "--epochs", "-e",
                                   help="Epochs side by side: 0,5 or init,final or all."),
        scale: str = typer.Option("shared", "--scale", help="Colour scale: shared (per epoch),"
                                  " channel (per channel) or global (across epochs)."),
        order: str = typer.Option("layer", "--order", help="layer, mean or max (sorted by "
                                  "activation)."),
        top_k: int = typer.Option(None, "--top-k", "-k", help="Show only the k most active "
                                  "channels [32 for grids and vectors of > 64 channels; "
                                  "heat maps show up to 256]."),
        view: str = typer.Option("auto", "--view", help="auto (each output with its axes), "
                                 "grid (channel maps), heatmap (sequences, tokens, 1-D "
                                 "signals) or vector (any layer, flattened)."),
        gif: bool = typer.Option(False, "--gif", help="Also an epoch strip of the most "
                                 "changed channels and an animated GIF (channel grids)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        trust_code: bool = trust_code_option(),
    ) -> None:
        """Feature maps of one layer for one input, untrained next to trained.

        Maps are drawn as channel grids, sequences (time × hidden), tokens (tokens ×
        features) and Conv1d outputs (channels × length) as heat maps with the traces of
        their most changed units, vectors as strips. Not resumable: it takes seconds and is
        redrawn each time.
        """
        from shenjing import _checks
        from shenjing.errors import UsageError
        from shenjing.runs import open_run
        from shenjing.stages.maps import check_maps_options, maps_stage, select_input

        check_maps_options(view=view, scale=scale, order=order, top_k=top_k, split=split)
        _checks.device("--device", device)
        chosen = "all" if epochs.strip() == "all" else parse_epochs(epochs)
        inputs: list[dict[str, object]]
        if cls is not None:
            inputs = [{"cls": c, "index": None}
                      for c in name_list("--class", cls, example="7") or ()]
        else:
            try:
                inputs = [{"index": _checks.bounded_int("--index", i, low=0), "cls": None}
                          for i in name_list("--index", index, example="0,3,7") or ()]
            except UsageError:
                raise UsageError(f"--index {index!r} must be positions in the split, whole "
                                 "numbers ≥ 0 like 0 or 0,3,7") from None
        the_run = open_run(run, trust_code=trust_code)
        for pick in inputs:  # every input checked before the first figure is written
            select_input(the_run, split=split, **pick)  # type: ignore[arg-type]
        for pick in inputs:
            result = maps_stage(the_run, layer, split=split, epochs=chosen, scale=scale,
                                order=order, top_k=top_k, view=view, gif=gif, device=device,
                                **pick)  # type: ignore[arg-type]
            _print(result.summary())

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
        from shenjing.stages.maps import filters_stage

        chosen = "all" if epochs.strip() == "all" else parse_epochs(epochs)
        if layer is not None and not layer.strip():
            from shenjing.errors import UsageError

            raise UsageError("--layer '' names no layer; give one, e.g. --layer conv1, or "
                             "leave --layer out for the first conv layer")
        result = filters_stage(open_run(run), layer, epochs=chosen, max_filters=max_filters,
                               max_in=max_in, scale=scale, gif=gif)
        _print(result.summary())

    @app.command()
    def weights(
        run: Path = RUN_ARG,
        epochs: str = typer.Option("all", "--epochs", "-e", help="Epochs: all, or 0,5."),
        layers: str = typer.Option(None, "--layers", help="Parameter groups, e.g. "
                                   "conv1,fc1.bias [all]."),
        bins: int = typer.Option(60, "--bins", help="Histogram bins."),
    ) -> None:
        """Weight histograms and statistics of every layer across epochs (from the checkpoints;
        not resumable: redrawn each time, seconds)."""
        from shenjing.runs import open_run
        from shenjing.stages.dynamics import weights_stage

        chosen = "all" if epochs.strip() == "all" else parse_epochs(epochs)
        result = weights_stage(open_run(run), epochs=chosen,
                               layers=name_list("--layers", layers, example="fc1,fc1.bias"),
                               bins=bins)
        _print(result.summary())

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
        _print(result.summary())
