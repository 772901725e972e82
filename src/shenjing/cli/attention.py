"""``shenjing attention``: what every attention head looks at, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import RUN_ARG, name_list, parse_epochs, print_lines, trust_code_option

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``attention`` to the app."""

    @app.command()
    def attention(
        run: Path = RUN_ARG,
        layers: str = typer.Option(None, "--layers", help="Attention layers, e.g. "
                                   "blocks.0.attn,blocks.3.attn [every attention layer]."),
        samples: str = typer.Option("0,1", "--samples", "-s", help="Test inputs drawn as "
                                    "maps (positions in the test split), e.g. 0,1."),
        epochs: str = typer.Option("init,final", "--epochs", "-e",
                                   help="Epochs compared: 0,final or init,final or 0,3,5."),
        n: int = typer.Option(256, "--n", help="Test inputs the per-head distance and "
                              "entropy average over."),
        n_probe: int = typer.Option(1000, "--n-probe", help="Train inputs for the probe by "
                                    "layer (0: no probe)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the fixed input subsets."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        trust_code: bool = trust_code_option(),
    ) -> None:
        """Attention of every layer and head, untrained next to trained.

        CLS → patch maps over the input (layer × head), attention rollout, the query × key
        matrices, mean attention distance (pixels) and entropy per head, the heads that
        changed most, and probe accuracy by layer of the CLS and mean patch tokens. When the
        tokens form no patch grid it says why and shows the matrices. Works on fused
        attention (F.scaled_dot_product_attention, nn.MultiheadAttention) too; each pattern
        is checked: pattern @ V must reproduce the layer's output. Not resumable: seconds.
        """
        from shenjing import _checks
        from shenjing.errors import UsageError
        from shenjing.runs import open_run
        from shenjing.stages.attention import attention_stage, check_attention_options

        given = name_list("--samples", samples, example="0,1") or []
        try:
            picks = [_checks.bounded_int("--samples", s, low=0) for s in given]
        except UsageError:
            raise UsageError(f"--samples {samples!r} must be positions in the test split, "
                             "whole numbers ≥ 0 like 0 or 0,1") from None
        check_attention_options(samples=picks, n=n, n_probe=n_probe, seed=seed)
        _checks.device("--device", device)
        chosen = "all" if epochs.strip() == "all" else parse_epochs(epochs)
        result = attention_stage(open_run(run, trust_code=trust_code),
                                 layers=name_list("--layers", layers,
                                                  example="blocks.0.attn"),
                                 samples=picks, epochs=chosen, n=n, n_probe=n_probe,
                                 seed=seed, device=device, on_plan=out.print)
        print_lines(out, result.summary())
