"""``shenjing embed``: 2-D maps of layers across epochs, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._backend import BACKEND, RAY_ADDRESS, RAY_CPUS, RAY_WORKERS, backend_of
from shenjing.cli._common import RUN_ARG, name_list, parse_epochs, trust_code_option

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``embed`` to the app."""

    @app.command()
    def embed(
        run: Path = RUN_ARG,
        layers: str = typer.Option(..., "--layers", "-l",
                                   help="Comma-separated layers or output keys as for "
                                        "`capture` (lstm.0, block#1); add 'input' for a map "
                                        "of the raw inputs (the baseline)."),
        method: str = typer.Option("tsne", "--method", "-m", help="tsne, pca or umap "
                                   "(umap needs pip install \"shenjing[umap]\")."),
        epochs: str = typer.Option("init,final", "--epochs", "-e",
                                   help="Epochs, aligned in order: 0,5 or init,final or all."),
        n: int = typer.Option(2000, "--n", help="Test samples in each map."),
        n_train: int = typer.Option(5000, "--n-train", help="Train samples for the probe."),
        split: str = typer.Option("test", "--split", help="Split to map: test or train."),
        seed: int = typer.Option(0, "--seed"),
        perplexity: float = typer.Option(30.0, "--perplexity"),
        pca_dims: int = typer.Option(50, "--pca-dims", help="PCA before t-SNE/UMAP (0: off)."),
        no_align: bool = typer.Option(False, "--no-align", help="Do not align maps."),
        no_cka: bool = typer.Option(False, "--no-cka", help="Skip the CKA matrices."),
        projector: bool = typer.Option(False, "--projector",
                                       help="Also export for TensorBoard's Projector."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        trust_code: bool = trust_code_option(),
        backend: str = BACKEND,
        ray_address: str = RAY_ADDRESS,
        ray_workers: int = RAY_WORKERS,
        ray_cpus: float = RAY_CPUS,
    ) -> None:
        """2-D maps of layers across epochs, with probe/kNN accuracy and map faithfulness.

        Resumes: a map already on disk is reused when every setting that made it matches
        (samples, seed, method options, probe settings); a rerun after a kill computes only
        the missing maps. With --backend ray the maps are Ray tasks, one per layer and
        epoch (a layer's epochs in order when aligned), each written as it finishes; each
        task runs t-SNE on --ray-cpus threads.
        """
        from shenjing.runs import open_run
        from shenjing.stages.embed import embed_stage

        be = backend_of(backend, ray_address=ray_address, workers=ray_workers,
                        num_cpus=ray_cpus)
        chosen = "all" if epochs.strip() == "all" else parse_epochs(epochs)
        the_run = open_run(run, trust_code=trust_code)
        result = embed_stage(the_run, name_list("--layers", layers) or [], epochs=chosen,
                             method=method,
                             n=n, n_train=n_train, split=split, seed=seed,
                             perplexity=perplexity,
                             pca_dims=None if pca_dims == 0 else pca_dims,
                             align=not no_align, cka=not no_cka, projector=projector,
                             device=device, backend=be)
        out.print(result.summary(), markup=False)
