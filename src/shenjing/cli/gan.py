"""``shenjing gan``: train seed 001's GAN and measure what its generator learned, one stage
call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._common import print_lines

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``gan`` to the app."""

    @app.command()
    def gan(
        data: str = typer.Option("digits", "--data", "-d", help="digits (scikit-learn's 8×8, "
                                 "embedded), mnist or fashion-mnist: labelled images."),
        data_dir: Path = typer.Option(None, "--data-dir",
                                      help="Folder with IDX files (mnist, fashion-mnist)."),
        run: Path = typer.Option(Path("runs/gan"), "--run", "-r",
                                 help="Run folder to write [default: runs/gan]."),
        epochs: int = typer.Option(None, "--epochs", "-e", help="Epochs, ≥ 1 [default: 200 "
                                   "on digits, 30 on mnist and fashion-mnist]."),
        batch_size: int = typer.Option(64, "--batch-size", "-b", help="Batch size (the "
                                       "seed's 64)."),
        lr: float = typer.Option(2e-4, "--lr", help="Adam learning rate of both networks "
                                 "(the seed's 0.0002)."),
        seed: int = typer.Option(0, "--seed", help="Seed of init, shuffling, latent draws and "
                                 "the classifier (0 to 2**32 − 1)."),
        n_eval: int = typer.Option(1000, "--n-eval", help="Generated samples measured each "
                                   "epoch (class histogram, Fréchet distance, nearest "
                                   "training image)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        resume: bool = typer.Option(False, "--resume", help="Continue a killed run after "
                                    "its last complete epoch (or extend it to more epochs)."),
        force: bool = typer.Option(False, "--force", help="Delete the run and start over."),
    ) -> None:
        """Train seed 001's GAN (MLP generator z=100→256→image, tanh; LeakyReLU discriminator;
        Adam 2e-4; pixels in [−1, 1]) and measure each epoch what the generator learned.

        A classifier (zoo mlp) trained by shenjing on the same data judges the samples: class
        histogram and classes covered (mode collapse shows as missing classes), confidence,
        Fréchet distance in its features (not FID), nearest training images. Ends with
        RUN/report.html. Resumable: --resume continues a killed run after its last complete
        epoch, with the same numbers as an uninterrupted run.
        """
        from shenjing.stages.gan import check_gan_options
        from shenjing.stages.gan import gan as gan_stage

        check_gan_options(data=data, data_dir=data_dir,
                          epochs=epochs if epochs is not None else 1,
                          batch_size=batch_size, lr=lr, seed=seed, n_eval=n_eval,
                          resume=resume, force=force, device=device)
        result = gan_stage(run, data=data, data_dir=data_dir, epochs=epochs,
                           batch_size=batch_size, lr=lr, seed=seed, n_eval=n_eval,
                           device=device, resume=resume, force=force, progress=False)
        print_lines(out, result.summary())
        out.print(f"report: {result.run.path / 'report.html'}", markup=False)
