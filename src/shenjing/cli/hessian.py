"""``shenjing hessian``: sharpness (top eigenvalues, trace, density), one stage call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from shenjing.cli._backend import BACKEND, RAY_ADDRESS, RAY_CPUS, RAY_GPUS, backend_of
from shenjing.cli._common import parse_list, trust_code_option

out = Console(emoji=False)


def _epoch(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


HESSIAN_FLAGS = {"top_k": "--top", "trace_samples": "--trace-samples", "samples": "--samples",
                 "seed": "--seed", "device": "--device", "layers": "--layers"}


def register(app: typer.Typer) -> None:
    """Add ``hessian`` to the app."""

    @app.command()
    def hessian(
        run: Path = typer.Argument(..., help="Run folder (from `shenjing train`)."),
        epoch: str = typer.Option("final", "--epoch", help="Checkpoint to analyse."),
        top: int = typer.Option(5, "--top", help="Number of top eigenvalues (Lanczos)."),
        trace: bool = typer.Option(True, "--trace/--no-trace", help="Hutchinson trace with "
                                   "a 95 % confidence interval."),
        density: bool = typer.Option(False, "--density", help="Eigenvalue density (SLQ)."),
        layers: str = typer.Option(None, "--layers", help="Layers for per-layer blocks, "
                                   "e.g. conv1,fc1 [all layers with parameters]."),
        no_layers: bool = typer.Option(False, "--no-layers", help="Skip per-layer blocks."),
        epochs: bool = typer.Option(False, "--epochs", help="Also λ_max at every epoch "
                                    "checkpoint (sharpness across training)."),
        samples: int = typer.Option(1000, "--samples", help="Fixed subset of test samples."),
        trace_samples: int = typer.Option(50, "--trace-samples", help="Hutchinson probes."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random probe vectors."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
        backend: str = BACKEND, ray_address: str = RAY_ADDRESS, ray_cpus: float = RAY_CPUS,
        ray_gpus: float = RAY_GPUS,
        trust_code: bool = trust_code_option(),
    ) -> None:
        """Sharpness: top Hessian eigenvalues, trace ± CI, density, per layer and per epoch.

        Resumes: progress is saved every 2 s (landscapes/hessian-eNNN.progress.npz); the same
        command run again after a kill continues where it stopped and writes the same
        numbers as an uninterrupted run. With --backend ray, λ_max at every epoch (--epochs)
        is one Ray task per checkpoint, each written to that file as it finishes
        (docs/scale.md).
        """
        from shenjing.runs import open_run
        from shenjing.stages import hessian as stage

        options: dict[str, Any] = dict(top_k=top, trace=trace, density=density,
                                       layers=parse_list(layers) or None, samples=samples,
                                       trace_samples=trace_samples, seed=seed, device=device)
        stage.validate_hessian_options(**options, names=HESSIAN_FLAGS)
        be = backend_of(backend, ray_address=ray_address, num_cpus=ray_cpus,
                        num_gpus=ray_gpus)
        r = open_run(run, trust_code=trust_code)
        res = stage.hessian(r, epoch=_epoch(epoch), per_layer=not no_layers,
                            across_epochs=epochs, progress=not quiet, backend=be, **options)
        s = res.summary
        vals = ", ".join(f"{v:.5g}" for v in s["top_eigenvalues"])
        out.print(f"epoch {s['epoch']}: top {len(s['top_eigenvalues'])} eigenvalues {vals} "
                  f"({s['top_n_hvp']} Hessian-vector products)")
        if "trace" in s:
            t = s["trace"]
            out.print(f"trace {t['mean']:.5g} ± {t['stderr']:.3g} (95 % CI "
                      f"{t['ci95'][0]:.5g} … {t['ci95'][1]:.5g}, {t['n_samples']} probes)")
        for name, entry in s.get("per_layer", {}).items():
            out.print(f"  {name}: λ_max {entry['top_eigenvalue']:.5g}"
                      + (f", trace {entry['trace']['mean']:.5g}" if "trace" in entry else ""))
        for p in res.paths + [f for f in res.figures if f.suffix == ".png"]:
            out.print(f"wrote {p}")
