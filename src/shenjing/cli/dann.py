"""``shenjing dann``: train seed 001's DANN three ways on MNIST ↔ digits and measure whether
its features forget the domain, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import print_lines

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``dann`` to the app."""

    @app.command()
    def dann(
        data_dir: Path = typer.Option(None, "--data-dir", help="Folder with MNIST's IDX files "
                                      "(the two t10k files are enough) [default: shenjing's "
                                      "data folder, downloading what is missing]."),
        direction: str = typer.Option("mnist-to-digits", "--direction", help="mnist-to-digits "
                                      "(source MNIST, target digits upsampled to 28×28) or "
                                      "digits-to-mnist."),
        run: Path = typer.Option(Path("runs/dann"), "--run", "-r",
                                 help="Run folder to write [default: runs/dann]."),
        epochs: int = typer.Option(5, "--epochs", "-e", help="Epochs of each of the three "
                                   "trainings (one epoch = one pass over the source)."),
        batch_size: int = typer.Option(64, "--batch-size", "-b", help="Source batch size "
                                       "(the seed's 64; as many target images per step)."),
        lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (the seed's 0.001)."),
        lambda_: float = typer.Option(0.1, "--lambda", help="Gradient-reversal weight λ ≥ 0 "
                                      "(the seed's 0.1)."),
        align: str = typer.Option("mmd", "--align", help="The third training's penalty: mmd "
                                  "(multi-kernel MMD²) or coral."),
        align_weight: float = typer.Option(None, "--align-weight", help="Weight of that "
                                           "penalty > 0 [default: 1 for mmd, 1000 for "
                                           "coral]."),
        seed: int = typer.Option(0, "--seed", help="Seed of init (the same for all three "
                                 "trainings), shuffling and splits (0 to 2**32 − 1)."),
        n_gap: int = typer.Option(500, "--n-gap", help="Eval samples per domain for MMD², "
                                  "CORAL, the domain classifier and the t-SNE maps."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        resume: bool = typer.Option(False, "--resume", help="Continue a killed run after "
                                    "the last complete epoch of each training (or extend it)."),
        force: bool = typer.Option(False, "--force", help="Delete the run and start over."),
    ) -> None:
        """Train seed 001's DANN (784→256→128 features, label classifier, domain classifier
        behind a gradient-reversal layer) three ways from the same seed: source only, DANN,
        and an MMD or CORAL penalty, on a real domain shift (MNIST and scikit-learn's digits
        upsampled to 28×28).

        Each epoch: target accuracy (target labels used only to evaluate), and per feature
        layer MMD² (unbiased, multi-kernel), CORAL and a held-out domain classifier (proxy
        A-distance); t-SNE maps by domain and class at the end. Ends with RUN/report.html.
        Resumable: --resume continues a killed run after the last complete epoch of each
        training, with the same numbers as an uninterrupted run.
        """
        from shenjing.stages.dann import check_dann_options
        from shenjing.stages.dann import dann as dann_stage

        check_dann_options(direction=direction, data_dir=data_dir, epochs=epochs,
                           batch_size=batch_size, lr=lr, lambda_=lambda_, align=align,
                           align_weight=align_weight, seed=seed, n_gap=n_gap, resume=resume,
                           force=force, device=device)
        result = dann_stage(run, direction=direction, data_dir=data_dir, epochs=epochs,
                            batch_size=batch_size, lr=lr, lambda_=lambda_, align=align,
                            align_weight=align_weight, seed=seed, n_gap=n_gap, device=device,
                            resume=resume, force=force)
        print_lines(out, result.summary_lines())
        out.print(f"report: {result.run.path / 'report.html'}", markup=False)
