"""``shenjing landscape line|plane|trajectory``: a loss line, plane or trajectory plane, each
one stage call with only the options that apply to it.

The old spelling (``shenjing landscape RUN --line A:B``, ``--plane``, ``--trajectory``) is
rewritten onto these subcommands by :class:`~shenjing.cli._landscape_group.LandscapeGroup`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from shenjing.cli._backend import (
    BACKEND,
    RAY_ADDRESS,
    RAY_CPUS,
    RAY_GPUS,
    RAY_WORKERS,
    TILE,
    backend_of,
    print_backend,
)
from shenjing.cli._common import RUN_ARG, parse_range, trust_code_option
from shenjing.cli._landscape_group import KindCommand, LandscapeGroup

out = Console(emoji=False)

LANDSCAPE_FLAGS = {"steps": "--steps", "range_": "--range", "norm": "--norm", "seed": "--seed",
                   "bn": "--bn", "samples": "--samples", "split": "--split",
                   "device": "--device", "engine": "--engine", "dtype": "--dtype",
                   "precision": "--precision", "batch_size": "--batch-size"}
"""How ``shenjing landscape`` spells each option, so a refused value is named as typed."""

RESUMES = """Resumes: the grid is saved as it is computed (every 2 s); the same command run
again after a kill computes only the missing points, with the engine settings recorded in
the file, so the surface is bit for bit the one an uninterrupted run gives. A grid too large
for the memory available is refused first (exit 1). With --backend ray the points are
computed on a Ray cluster and written tile by tile: a rerun after a kill of the command
resumes the same way, and a killed worker's tiles are retried (docs/scale.md)."""

GROUP_HELP = f"""Loss landscape of a run: `landscape line RUN` (between two epochs),
`landscape plane RUN` (around θ* along two random directions) or `landscape trajectory RUN`
(on the plane of the training trajectory). The old spelling, `landscape RUN --line A:B`,
`--plane` or `--trajectory`, still works and is deprecated.

{RESUMES}"""

LINE_HELP = f"""Loss along the line from one epoch's weights to another's.

θ(α) = (1−α)·θ_from + α·θ_to (Goodfellow et al. 2015); α = 0 and 1 are always on the axis.

{RESUMES}"""

PLANE_HELP = f"""Loss on a plane around one epoch's weights θ*, along two random directions.

The directions are seeded and filter-normalized by default (Li et al. 2018); biases and
BatchNorm γ/β are held at θ* unless --include-1d.

{RESUMES}"""

TRAJECTORY_HELP = f"""Loss on the plane of the training trajectory, with the trajectory on it.

The plane of the two main PCA directions of every epoch's weights, centred at the final
epoch; the grid covers the projected checkpoints. Needs 3 or more checkpoints.

{RESUMES}"""

# the options every kind takes, declared once so that their help and defaults cannot drift
SAMPLES = typer.Option(None, "--samples", help="Evaluate on a fixed subset of N samples "
                       "[all test samples].")
SPLIT = typer.Option("test", "--split", help="Samples from the test or train split (the "
                     "training loss is what was minimised).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 …")
ENGINE = typer.Option("auto", "--engine", help="auto (measure), loop, linear, linear-vmap, "
                      "chain, vmap.")
DTYPE = typer.Option("float32", "--dtype", help="float32 or float64.")
PRECISION = typer.Option("exact", "--precision", help="exact, bf16 (autocast) or tf32 "
                         "(CUDA): faster, inexact; the error is measured at a few points "
                         "and reported.")
BATCH_SIZE = typer.Option(None, "--batch-size", help="Sample batch size [measured].")
COMPILE = typer.Option(None, "--compile/--no-compile", help="torch.compile the loop path "
                       "[auto: timed when the grid would take over a minute].")
NO_FIGURES = typer.Option(False, "--no-figures", help="Write data only.")
QUIET = typer.Option(False, "--quiet", help="No progress bar.")


def _epoch(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _settings(*, samples: int | None, split: str, device: str, engine: str, dtype: str,
              precision: str, batch_size: int | None) -> dict[str, Any]:
    """The evaluation settings every kind passes to its validator and its stage."""
    return dict(samples=samples, device=device, engine=engine, dtype=dtype,
                precision=precision, split=split, batch_size=batch_size)


def register(app: typer.Typer) -> None:
    """Add the ``landscape`` group (``line``, ``plane``, ``trajectory``) to the app."""
    group = typer.Typer(cls=LandscapeGroup, no_args_is_help=True, rich_markup_mode=None,
                        help=GROUP_HELP)
    app.add_typer(group, name="landscape")

    @group.command("line", cls=KindCommand, help=LINE_HELP)
    def line(
        run: Path = RUN_ARG,
        start: str = typer.Option("init", "--from", help="Epoch at α = 0: a number, init or "
                                  "final."),
        end: str = typer.Option("final", "--to", help="Epoch at α = 1: a number, init or "
                                "final."),
        start_run: Path = typer.Option(None, "--start-run", help="Take the --from epoch from "
                                       "another run of the same architecture."),
        steps: int = typer.Option(51, "--steps", help="Points on the line."),
        range_: str = typer.Option("-0.5:1.5", "--range", help="MIN:MAX of α."),
        samples: int = SAMPLES, split: str = SPLIT, device: str = DEVICE,
        engine: str = ENGINE, dtype: str = DTYPE, precision: str = PRECISION,
        batch_size: int = BATCH_SIZE, compile_: bool = COMPILE,
        no_figures: bool = NO_FIGURES, quiet: bool = QUIET,
        backend: str = BACKEND, ray_address: str = RAY_ADDRESS, ray_workers: int = RAY_WORKERS,
        ray_cpus: float = RAY_CPUS, ray_gpus: float = RAY_GPUS, tile: int = TILE,
        trust_code: bool = trust_code_option(),
    ) -> None:
        from shenjing.runs import open_run
        from shenjing.stages import landscape as stage

        settings = _settings(samples=samples, split=split, device=device, engine=engine,
                             dtype=dtype, precision=precision, batch_size=batch_size)
        # every option checked before the run is even opened: bad input creates nothing
        axis: dict[str, Any] = dict(steps=steps, range_=parse_range(range_))
        stage.validate_line_options(**axis, **settings, names=LANDSCAPE_FLAGS)
        be = backend_of(backend, ray_address=ray_address, workers=ray_workers,
                        num_cpus=ray_cpus, num_gpus=ray_gpus, tile=tile)
        r = open_run(run, trust_code=trust_code)
        other = open_run(start_run, trust_code=trust_code) if start_run else None
        _print_result(stage.landscape_line(
            r, start=_epoch(start), end=_epoch(end), compile=compile_, start_run=other,
            **axis, **settings, figures=not no_figures, progress=not quiet, backend=be))

    @group.command("plane", cls=KindCommand, help=PLANE_HELP)
    def plane(
        run: Path = RUN_ARG,
        epoch: str = typer.Option("final", "--epoch", help="Centre of the plane."),
        steps: int = typer.Option(21, "--steps", help="Points per axis."),
        range_: str = typer.Option("-1:1", "--range", help="MIN:MAX of each axis."),
        norm: str = typer.Option("filter", "--norm", help="Direction normalization: filter, "
                                 "layer or none."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random directions."),
        include_1d: bool = typer.Option(False, "--include-1d", help="Also perturb biases and "
                                        "BatchNorm γ/β (default: held at θ*)."),
        bn: str = typer.Option("eval", "--bn", help="eval (running statistics) or recompute "
                               "(re-estimate BatchNorm statistics at each point)."),
        samples: int = SAMPLES, split: str = SPLIT, device: str = DEVICE,
        engine: str = ENGINE, dtype: str = DTYPE, precision: str = PRECISION,
        batch_size: int = BATCH_SIZE, compile_: bool = COMPILE,
        no_figures: bool = NO_FIGURES, quiet: bool = QUIET,
        backend: str = BACKEND, ray_address: str = RAY_ADDRESS, ray_workers: int = RAY_WORKERS,
        ray_cpus: float = RAY_CPUS, ray_gpus: float = RAY_GPUS, tile: int = TILE,
        trust_code: bool = trust_code_option(),
    ) -> None:
        from shenjing.runs import open_run
        from shenjing.stages import landscape as stage

        settings = _settings(samples=samples, split=split, device=device, engine=engine,
                             dtype=dtype, precision=precision, batch_size=batch_size)
        axis: dict[str, Any] = dict(steps=steps, range_=parse_range(range_))
        stage.validate_plane_options(**axis, norm=norm, seed=seed, bn=bn, **settings,
                                     names=LANDSCAPE_FLAGS)
        be = backend_of(backend, ray_address=ray_address, workers=ray_workers,
                        num_cpus=ray_cpus, num_gpus=ray_gpus, tile=tile)
        r = open_run(run, trust_code=trust_code)
        _print_result(stage.landscape_plane(
            r, epoch=_epoch(epoch), norm=norm, seed=seed, include_1d=include_1d, bn=bn,
            compile=compile_, **axis, **settings, figures=not no_figures,
            progress=not quiet, backend=be))

    @group.command("trajectory", cls=KindCommand, help=TRAJECTORY_HELP)
    def trajectory(
        run: Path = RUN_ARG,
        steps: int = typer.Option(21, "--steps", help="Points per axis."),
        samples: int = SAMPLES, split: str = SPLIT, device: str = DEVICE,
        engine: str = ENGINE, dtype: str = DTYPE, precision: str = PRECISION,
        batch_size: int = BATCH_SIZE, no_figures: bool = NO_FIGURES, quiet: bool = QUIET,
        backend: str = BACKEND, ray_address: str = RAY_ADDRESS, ray_workers: int = RAY_WORKERS,
        ray_cpus: float = RAY_CPUS, ray_gpus: float = RAY_GPUS, tile: int = TILE,
        trust_code: bool = trust_code_option(),
    ) -> None:
        from shenjing.runs import open_run
        from shenjing.stages import landscape as stage

        settings = _settings(samples=samples, split=split, device=device, engine=engine,
                             dtype=dtype, precision=precision, batch_size=batch_size)
        stage.validate_trajectory_options(steps=steps, **settings, names=LANDSCAPE_FLAGS)
        be = backend_of(backend, ray_address=ray_address, workers=ray_workers,
                        num_cpus=ray_cpus, num_gpus=ray_gpus, tile=tile)
        r = open_run(run, trust_code=trust_code)
        _print_result(stage.landscape_trajectory(
            r, steps=steps, **settings, figures=not no_figures, progress=not quiet,
            backend=be))


def _print_result(res: Any) -> None:
    """What every kind prints: the grid, its engine, the loss, what was written."""
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
    print_backend(ls.meta.get("backend") if ls.meta.get("n_computed_now") else None, out)
    if ls.n_nonfinite:
        out.print(f"[yellow]{ls.n_nonfinite} points have a NaN/Inf loss (recorded as "
                  "such, masked in figures)[/yellow]")
    out.print(f"wrote {res.path}")
    for fig in res.figures:
        if fig.suffix == ".png":
            out.print(f"figure {fig}")
