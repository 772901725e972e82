"""``shenjing fit``: a net vs polynomials on a function of x, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shenjing.cli._common import name_list, parse_range, trust_code_option

out = Console(emoji=False)


def _num(v: float | None) -> str:
    return "inf" if v is None else f"{v:.4g}"


def register(app: typer.Typer) -> None:
    """Add ``fit`` to the app."""

    @app.command()
    def fit(
        run: Path = typer.Option(Path("runs/fit"), "--run", "-r",
                                 help="Run folder (trained here unless it already is)."),
        function: str = typer.Option(None, "--function", "-f",
                                     help="y as an expression in x, e.g. 'sin(2*x) + 0.1*x**3', "
                                          "or module:function (default: seed 001's function)."),
        hidden: int = typer.Option(None, "--hidden", help="Hidden units per layer [64]."),
        depth: int = typer.Option(None, "--depth", help="Hidden layers [1]."),
        epochs: int = typer.Option(None, "--epochs", "-e", help="Recorded epochs [20]."),
        passes: int = typer.Option(None, "--passes", help="Full-batch steps per epoch [250]."),
        lr: float = typer.Option(None, "--lr", help="Adam learning rate [1e-3]."),
        seed: int = typer.Option(None, "--seed", help="Seed of the net's initialisation [0]."),
        poly: str = typer.Option("lagrange,chebyshev", "--poly",
                                 help="Polynomial baselines: lagrange, chebyshev, each "
                                      "optionally with :DEGREE (e.g. chebyshev:15)."),
        degree: int = typer.Option(None, "--degree",
                                   help="Degree for baselines without one (default: points − 1)."),
        points: int = typer.Option(None, "--points", help="Training points [100]."),
        train_range: str = typer.Option(None, "--range", help="Training range MIN:MAX "
                                        "[-5:5]."),
        extrapolate: str = typer.Option(None, "--extrapolate",
                                        help="Range studied MIN:MAX (default: the range "
                                             "widened by 20% each side)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        retrain: bool = typer.Option(False, "--retrain", help="Train the run again (with the "
                                     "options given; an existing run refuses options that "
                                     "differ from how it was trained)."),
        gif: bool = typer.Option(True, "--gif/--no-gif", help="Write the epochs animation."),
        trust_code: bool = trust_code_option(),
    ) -> None:
        """Fit a function with curve_mlp; compare it in and beyond the range with polynomials;
        decompose it into its ReLU units and linear regions.

        Resumes: a killed training continues like train --resume; the study itself is
        recomputed (seconds).
        """
        from shenjing.stages.fit import fit as fit_stage

        result = fit_stage(run, function=function, hidden=hidden, depth=depth, epochs=epochs,
                           passes_per_epoch=passes, lr=lr, seed=seed,
                           polynomials=name_list("--poly", poly, example="lagrange,chebyshev")
                           or [], degree=degree, n_points=points,
                           train_range=None if train_range is None else parse_range(train_range),
                           extrapolation=None if extrapolate is None else parse_range(
                               extrapolate, "--extrapolate"),
                           device=device, retrain=retrain, gif=gif, trust_code=trust_code)
        s = result.summary
        lo, hi = s["train_range"]
        elo, ehi = s["extrapolation"]
        out.print(f"y = {s['function']}")
        table = Table(title=f"error vs the true function: in = [{lo:g}, {hi:g}], out = the "
                            f"rest of [{elo:g}, {ehi:g}]")
        for col in ("approximation", "RMSE in", "max in", "RMSE out", "max out"):
            table.add_column(col, no_wrap=True)
        for name, e in result.errors.items():
            table.add_row(name, _num(e["rmse_in"]), _num(e["max_in"]), _num(e["rmse_out"]),
                          _num(e["max_out"]))
        out.print(table)
        dec = s.get("decomposition")
        if dec:
            out.print(f"decomposition: {dec['n_active']} of {dec['n_units']} units active, "
                      f"{dec['n_kinks_in_range']} kinks in range; sum − net: "
                      f"{dec['max_abs_diff_float64']:.2g} (float64), "
                      f"{dec['max_abs_diff_float32']:.2g} (float32 net)")
        out.print(f"linear regions: {s['regions']['n_regions']} on [{elo:g}, {ehi:g}], "
                  f"{s['regions']['n_in_range']} in the training range")
        out.print(f"run: {result.run.path}  (fit/summary.json, figures/fit-*.png)")
