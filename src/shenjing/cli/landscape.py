"""``shenjing landscape``: a loss line, plane or trajectory plane, one stage call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from shenjing.cli._common import parse_range, trust_code_option
from shenjing.errors import UsageError

out = Console(emoji=False)


def _parse_line(text: str) -> tuple[str, str]:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise UsageError(f"--line {text!r} must look like START:END, e.g. 0:final or "
                         "init:final")
    return parts[0].strip(), parts[1].strip()


def _epoch(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


LANDSCAPE_FLAGS = {"steps": "--steps", "range_": "--range", "norm": "--norm", "seed": "--seed",
                   "bn": "--bn", "samples": "--samples", "split": "--split",
                   "device": "--device", "engine": "--engine", "dtype": "--dtype",
                   "precision": "--precision", "batch_size": "--batch-size"}
"""How ``shenjing landscape`` spells each option, so a refused value is named as typed."""


def register(app: typer.Typer) -> None:
    """Add ``landscape`` to the app."""

    @app.command()
    def landscape(
        run: Path = typer.Argument(..., help="Run folder (from `shenjing train`)."),
        line: str = typer.Option(None, "--line", help="1-D line START:END between epochs, "
                                 "e.g. 0:final (init → trained)."),
        plane: bool = typer.Option(False, "--plane", help="2-D plane around θ* along two "
                                   "random directions."),
        trajectory: bool = typer.Option(False, "--trajectory", help="2-D plane of the "
                                        "training trajectory's PCA directions."),
        steps: int = typer.Option(None, "--steps", help="Points per axis [line 51, plane 21]."),
        range_: str = typer.Option(None, "--range", help="MIN:MAX of each axis "
                                   "[line -0.5:1.5, plane -1:1]."),
        epoch: str = typer.Option("final", "--epoch", help="Centre of a plane."),
        norm: str = typer.Option("filter", "--norm", help="Direction normalization: filter, "
                                 "layer or none."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random directions."),
        include_1d: bool = typer.Option(False, "--include-1d", help="Also perturb biases and "
                                        "BatchNorm γ/β (default: held at θ*)."),
        bn: str = typer.Option("eval", "--bn", help="eval (running statistics) or recompute "
                               "(re-estimate BatchNorm statistics at each point)."),
        samples: int = typer.Option(None, "--samples", help="Evaluate on a fixed subset of N "
                                    "samples [all test samples]."),
        start_run: Path = typer.Option(None, "--start-run", help="Take the line's start from "
                                       "another run of the same architecture."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 …"),
        engine: str = typer.Option("auto", "--engine", help="auto (measure), loop, linear, "
                                   "linear-vmap, chain, vmap."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 or float64."),
        split: str = typer.Option("test", "--split", help="Samples from the test or train "
                                  "split (the training loss is what was minimised)."),
        precision: str = typer.Option("exact", "--precision", help="exact, bf16 (autocast) "
                                      "or tf32 (CUDA): faster, inexact; the error is "
                                      "measured at a few points and reported."),
        batch_size: int = typer.Option(None, "--batch-size", help="Sample batch size "
                                       "[measured]."),
        compile_: bool = typer.Option(None, "--compile/--no-compile",
                                      help="torch.compile the loop path [auto: timed when "
                                           "the grid would take over a minute]."),
        no_figures: bool = typer.Option(False, "--no-figures", help="Write data only."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
        trust_code: bool = trust_code_option(),
    ) -> None:
        """Loss landscape of a run: --line A:B, --plane, or --trajectory.

        Resumes: the grid is saved as it is computed (every 2 s); the same command run again
        after a kill computes only the missing points, with the engine settings recorded in
        the file, so the surface is bit for bit the one an uninterrupted run gives. A grid
        too large for the memory available is refused first (exit 1).
        """
        from shenjing.runs import open_run
        from shenjing.stages import landscape as stage

        chosen = sum([line is not None, plane, trajectory])
        if chosen != 1:
            raise UsageError("choose exactly one of --line START:END, --plane, --trajectory")
        settings: dict[str, Any] = dict(samples=samples, device=device, engine=engine,
                                        dtype=dtype, precision=precision, split=split,
                                        batch_size=batch_size)
        # every option checked before the run is even opened: bad input creates nothing
        if line is not None:
            a, b = _parse_line(line)
            axis: dict[str, Any] = dict(steps=51 if steps is None else steps,
                                        range_=parse_range(range_ or "-0.5:1.5"))
            stage.validate_line_options(**axis, **settings, names=LANDSCAPE_FLAGS)
        elif plane:
            axis = dict(steps=21 if steps is None else steps,
                        range_=parse_range(range_ or "-1:1"))
            stage.validate_plane_options(**axis, norm=norm, seed=seed, bn=bn, **settings,
                                         names=LANDSCAPE_FLAGS)
        else:
            if range_ is not None:
                raise UsageError("--range does not apply to --trajectory: its plane covers "
                                 "the trajectory's own extent; leave --range out")
            axis = dict(steps=21 if steps is None else steps)
            stage.validate_trajectory_options(**axis, **settings, names=LANDSCAPE_FLAGS)
        r = open_run(run, trust_code=trust_code)
        common: dict[str, Any] = dict(settings, figures=not no_figures, progress=not quiet)
        if line is not None:
            other = open_run(start_run, trust_code=trust_code) if start_run else None
            res = stage.landscape_line(
                r, start=_epoch(a), end=_epoch(b), compile=compile_, start_run=other,
                **axis, **common)
        elif plane:
            res = stage.landscape_plane(
                r, epoch=_epoch(epoch), norm=norm, seed=seed, include_1d=include_1d, bn=bn,
                compile=compile_, **axis, **common)
        else:
            res = stage.landscape_trajectory(r, **axis, **common)
        ls = res.landscape
        (coords, mval) = ls.minimum()
        eng = ls.meta.get("engine", {})
        out.print(f"{ls.kind}: {'×'.join(map(str, ls.shape))} points, "
                  f"{ls.n_done} computed, engine {eng.get('path')} "
                  f"(batch {eng.get('batch_size')}; {eng.get('reason', '')})")
        out.print(f"loss at centre {float(ls.loss[ls.center_index]):.5g}; minimum "
                  f"{mval:.5g} at {tuple(round(c, 4) for c in coords)}")
        prec = ls.meta.get("precision")
        if prec:
            out.print(f"[yellow]{prec['mode']}: loss within {prec['max_rel_loss_error']:.1e} "
                      f"(relative) of exact evaluation at {len(prec['checked_coords'])} "
                      "checked points[/yellow]")
        if ls.n_nonfinite:
            out.print(f"[yellow]{ls.n_nonfinite} points have a NaN/Inf loss (recorded as "
                      "such, masked in figures)[/yellow]")
        out.print(f"wrote {res.path}")
        for fig in res.figures:
            if fig.suffix == ".png":
                out.print(f"figure {fig}")
