"""``shenjing inspect``: the full analysis of a user's own model, weights and data."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from shenjing.cli._common import name_list, parse_list, print_lines

out = Console(highlight=False, soft_wrap=True)


def _layers(text: str | None) -> list[str] | None:
    """``--layers`` as a list; given but naming nothing (``--layers ,``) is an error."""
    return name_list("--layers", text, example="fc1,relu1")


def register(app: typer.Typer) -> None:
    """Add ``inspect`` to the app."""

    @app.command()
    def inspect(
        model: str = typer.Option(..., "--model", "-m", help="pkg.module:Factory, "
                                  "path/to/file.py:Factory (a class or function returning "
                                  "an nn.Module), a zoo name (simple_cnn), or hf:FOLDER (a "
                                  "Hugging Face save_pretrained folder: config.json + "
                                  "model.safetensors; its code never runs)."),
        weights: Path = typer.Option(None, "--weights", "-w", help="Trained weights: "
                                     ".safetensors, or .pt/.pth/.bin read with "
                                     "torch.load(weights_only=True); TorchScript and "
                                     "torch.export archives are read without running their "
                                     "code (one that needs its own code is refused unless "
                                     "--trust-pickle)."),
        checkpoints: str = typer.Option(None, "--checkpoints", help="Instead of --weights: "
                                        "your training's checkpoints, a quoted glob or a "
                                        "folder ('ckpt/epoch-*.safetensors'), in natural "
                                        "order; epoch 0 = the first (or --init-weights), so "
                                        "the trajectory and per-epoch sharpness see your "
                                        "training."),
        data: str = typer.Option("digits", "--data", "-d", help="A built-in dataset, a .npz "
                                 "(x, y), x.npy (+ y.npy), a folder of images per class, "
                                 "or pkg.module:make_dataset."),
        out_dir: Path = typer.Option(None, "--out", "-o", help="Run folder to create "
                                     "(default: runs/inspect-WEIGHTS_STEM); nothing is written "
                                     "elsewhere."),
        model_arg: list[str] = typer.Option(None, "--model-arg", "-a", help="key=value "
                                            "passed to the factory (repeatable); values are "
                                            "Python literals: 10, 0.5, [64, 32], 'text'."),
        init_weights: Path = typer.Option(None, "--init-weights", help="Your model's real "
                                          "initial weights, for epoch 0 (default: a fresh "
                                          "seeded initialisation, which is not your init)."),
        trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow a full "
                                          "unpickle of weights files that need it, and "
                                          "torch.jit.load of TorchScript archives with their "
                                          "own __setstate__: this runs code from the file; "
                                          "only for files you trust (warns before loading)."),
        strict: bool = typer.Option(True, "--strict/--no-strict", help="Require every "
                                    "tensor of the model to be in the file with its shape."),
        output: str = typer.Option(None, "--output", help="Prediction in a tuple/list/dict "
                                   "output: key, index or dotted path (default: the "
                                   "'logits' entry, else the first tensor)."),
        loss: str = typer.Option(None, "--loss", help="cross_entropy, nll, mse or "
                                 "module:function (default: cross_entropy; nll for "
                                 "log-probability outputs; mse for regression data)."),
        data_dir: Path = typer.Option(None, "--data-dir", help="Folder with IDX files "
                                      "(mnist, fashion-mnist)."),
        normalize: str = typer.Option(None, "--normalize", help="Input scaling, as your "
                                      "model was trained: standard ((x − mean)/std; mnist's "
                                      "default), unit ([0, 1]; digits' and image files' "
                                      "default) or none (raw values). See docs/data.md."),
        layers: str = typer.Option(None, "--layers", "-l", help="Layers to study, comma "
                                   "separated; names, globs or types (default: the "
                                   "last weighted layers + the penultimate layer)."),
        seed: int = typer.Option(0, "--seed", help="Seed for the fresh init and the split."),
        samples: int = typer.Option(1000, "--samples", help="Test samples for landscapes."),
        embed_samples: int = typer.Option(2000, "--embed-samples", help="Samples per map."),
        embed_train_samples: int = typer.Option(5000, "--embed-train-samples",
                                                help="Train samples for the linear probe."),
        method: str = typer.Option("tsne", "--method", help="Embedding: tsne, pca or umap."),
        line_steps: int = typer.Option(31, "--line-steps", help="Points on the init→trained "
                                       "line (≥ 2)."),
        plane_steps: int = typer.Option(15, "--plane-steps", help="Grid size of the 2-D "
                                        "landscape (steps × steps, ≥ 3)."),
        hessian_top: int = typer.Option(5, "--hessian-top", help="Top Hessian eigenvalues."),
        hessian_samples: int = typer.Option(500, "--hessian-samples",
                                            help="Test samples for the Hessian."),
        skip: str = typer.Option(None, "--skip", help="Steps not to run, comma separated: "
                                 "embed, maps, filters, dynamics, landscape_line, "
                                 "landscape_plane, landscape_trajectory, hessian, report."),
        analysis: bool = typer.Option(True, "--analysis/--no-analysis", help="Run the "
                                      "analysis and report after creating the run."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        force: bool = typer.Option(False, "--force", help="Replace an existing run at --out."),
    ) -> None:
        """Create a run from your own model + weights + data, then every view and the report.

        Epoch 0 is --init-weights, the first of --checkpoints, or else a seeded fresh
        initialisation (not your model's real init); the last epoch is --weights or the last
        of --checkpoints. Every option is checked before anything is written. Not resumable
        as a whole: each view it runs resumes on its own command (landscape, hessian); rerun
        inspect with --force to start over.
        """
        from shenjing.models.spec import parse_model_args
        from shenjing.models.weights import TrustPickleWarning
        from shenjing.stages.inspect import InspectOptions, inspect_model

        stem = weights.stem if weights is not None else (
            Path(model[3:]).name or "hf" if model.startswith("hf:") else "checkpoints")
        target = out_dir or Path("runs") / f"inspect-{stem}"
        kwargs = parse_model_args(model_arg)
        options = InspectOptions(
            line_steps=line_steps, plane_steps=plane_steps, samples=samples,
            embed_method=method, embed_samples=embed_samples,
            embed_train_samples=embed_train_samples, hessian_top=hessian_top,
            hessian_samples=hessian_samples, skip=tuple(parse_list(skip)))
        def show(message: Any, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
            if issubclass(category, TrustPickleWarning):  # printed when issued: before load
                out.print(f"WARNING {message}", style="yellow", markup=False)
            else:
                previous(message, category, filename, lineno, file, line)

        with warnings.catch_warnings():
            warnings.simplefilter("always", TrustPickleWarning)
            previous = warnings.showwarning
            warnings.showwarning = show
            result = inspect_model(
                model, weights, out=target, data=data, data_dir=data_dir, normalize=normalize,
                model_args=kwargs, init_weights=init_weights, checkpoints=checkpoints,
                trust_pickle=trust_pickle, strict=strict, output=output, loss=loss,
                layers=_layers(layers), seed=seed, analysis=analysis,
                options=options, force=force, device=device,
                on_step=lambda s: out.print(f"  {s.name}: {s.status} ({s.seconds:.1f} s)",
                                            style="yellow" if s.status == "failed" else None,
                                            markup=False))
        print_lines(out, result.summary())
        if result.failed:
            raise typer.Exit(1)
