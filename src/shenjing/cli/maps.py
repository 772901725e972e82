"""``shenjing maps``: feature maps of one layer for one input, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import RUN_ARG, name_list, parse_epochs, print_lines, trust_code_option

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``maps`` to the app."""

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
            print_lines(out, result.summary())
