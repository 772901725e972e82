"""``shenjing report`` and ``shenjing demo``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

out = Console(emoji=False)


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``demo`` to the app."""

    @app.command()
    def report(run: Path = typer.Argument(..., help="Run directory."),
               output: Path = typer.Option(None, "--out", "-o",
                                           help="Where to write [default: RUN/report.html].")
               ) -> None:
        """Write RUN/report.html: every view of the run in one self-contained page (from the
        run's files alone; not resumable: rewritten each time, seconds)."""
        from shenjing.report import build_report

        result = build_report(run, out=output)
        out.print(f"sections: {', '.join(result.sections)}")
        out.print(f"report: {result.path} ({result.n_bytes / 1e6:.1f} MB)")
        if result.note:
            out.print(f"[yellow]note: {result.note}[/yellow]", soft_wrap=True)

    @app.command()
    def demo(
        output: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Folder for the runs."),
        data: str = typer.Option("digits", "--data", "-d", help="digits (embedded) or mnist."),
        data_dir: Path = typer.Option(None, "--data-dir", help="Folder with MNIST IDX files."),
        fast: bool = typer.Option(False, "--fast", help="Fewer epochs and coarser grids."),
        force: bool = typer.Option(False, "--force", help="Redo every stage."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        jobs: int = typer.Option(None, "--jobs", "-j", help="Studies run at once, each in its "
                                 "own process (default: 2 on a CPU with 2+ cores, else 1)."),
        full: bool = typer.Option(False, "--full", help="Also seed 001's GAN (on digits) and "
                                  "DANN (MNIST → digits; MNIST from --data-dir) studies: a "
                                  "few minutes more."),
    ) -> None:
        """Train the seeds' models, run every analysis, and write the reports + an index.

        Resumes: a second run reuses every finished study; --force redoes them."""
        from shenjing.demo import run_demo

        result = run_demo(output, data=data, data_dir=data_dir, fast=fast, force=force,
                          device=device, jobs=jobs, full=full)
        out.print(f"[bold green]done in {result.seconds:.1f} s[/bold green]")
        out.print(f"open: {result.index}")
