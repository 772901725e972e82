"""``shenjing compare RUN RUN … --out DIR``: runs side by side, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import parse_range, trust_code_option

out = Console(emoji=False)


def _epoch(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _say(message: str) -> None:
    out.print(message, markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``compare`` to the app."""

    @app.command()
    def compare(
        run: list[Path] = typer.Argument(..., help="Two run folders or more."),
        out_dir: Path = typer.Option(..., "--out", help="Folder for report.html, "
                                     "compare.json and the figures."),
        epoch: str = typer.Option("final", "--epoch", help="Checkpoint of each run to "
                                  "compare."),
        steps: int = typer.Option(21, "--steps", help="Plane grid points per axis."),
        range_: str = typer.Option("-1:1", "--range", help="Plane coordinates MIN:MAX on "
                                   "both filter-normalized directions."),
        seed: int = typer.Option(0, "--seed", help="Seed of the plane's directions and the "
                                 "Hessian's probe vectors (the same for every run)."),
        samples: int = typer.Option(1000, "--samples", help="Fixed subset of test samples "
                                    "for the loss, Hessian, CKA and probes."),
        sample_seed: int = typer.Option(0, "--sample-seed", help="Seed of that subset."),
        delta: float = typer.Option(0.5, "--delta", help="A minimum's width is the area of "
                                    "its plane at or below loss(θ*) + DELTA."),
        line_steps: int = typer.Option(41, "--line-steps", help="Points on each θ₀→θ* line."),
        top: int = typer.Option(3, "--top", help="Top Hessian eigenvalues (Lanczos)."),
        trace_samples: int = typer.Option(30, "--trace-samples", help="Hutchinson probes of "
                                          "the Hessian trace."),
        probe_train: int = typer.Option(1000, "--probe-train", help="Training samples the "
                                        "linear probes learn from."),
        hessian: bool = typer.Option(True, "--hessian/--no-hessian", help="Sharpness "
                                     "(top eigenvalues, trace)."),
        epochs: bool = typer.Option(True, "--epochs/--no-epochs", help="λ_max at every "
                                    "epoch checkpoint."),
        probes: bool = typer.Option(True, "--probes/--no-probes", help="Linear probes by "
                                    "layer."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        quiet: bool = typer.Option(False, "--quiet", help="Print only the results."),
        trust_code: bool = trust_code_option(),
    ) -> None:
        """Compare runs side by side: curves, dynamics, lines, planes on one colour scale,
        sharpness, CKA between the runs' layers, probes by layer → DIR/report.html.

        Every run is measured with the same directions seed, grid and samples. What a run
        already has with those settings is reused; the rest is computed (into the run by the
        view's own stage, or into DIR/computed/ when the run holds a file of other settings)
        and listed on the page. Resumes: run again after a kill and the landscapes and
        Hessians continue from what they saved.
        """
        from shenjing.stages import compare as stage

        span = parse_range(range_, "--range")
        stage.validate_compare_options(
            n_runs=len(run), steps=steps, range_=span, seed=seed, samples=samples,
            sample_seed=sample_seed, delta=delta, line_steps=line_steps, top_k=top,
            trace_samples=trace_samples, probe_train=probe_train, device=device)
        res = stage.compare(run, out_dir, epoch=_epoch(epoch), steps=steps, range_=span,
                            seed=seed, samples=samples, sample_seed=sample_seed, delta=delta,
                            line_steps=line_steps, hessian=hessian, across_epochs=epochs,
                            top_k=top, trace_samples=trace_samples, probes=probes,
                            probe_train=probe_train, device=device, trust_code=trust_code,
                            progress=None if quiet else _say)
        for line in res.lines():
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        for c in res.computed:
            out.print(f"computed: {c}", markup=False, highlight=False, soft_wrap=True)
        for r in res.reused:
            out.print(f"reused: {r}", markup=False, highlight=False, soft_wrap=True)
        out.print(f"wrote {res.report}", markup=False, highlight=False, soft_wrap=True)
