"""``shenjing attribute``: what the network looks at, with its sanity checks, one stage call."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from shenjing.cli._backend import (
    BACKEND,
    RAY_ADDRESS,
    RAY_CPUS,
    RAY_GPUS,
    RAY_WORKERS,
    backend_of,
)
from shenjing.cli._common import RUN_ARG, name_list, parse_epochs, print_lines, trust_code_option

out = Console(highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``attribute`` to the app."""

    @app.command()
    def attribute(
        run: Path = RUN_ARG,
        samples: str = typer.Option("0,1,2", "--samples", "-s", help="Test inputs explained "
                                    "(positions in the test split), e.g. 0,1,2."),
        method: str = typer.Option("ig,gradcam", "--method", "-m", help="Attribution "
                                   "methods: saliency, ig, smoothgrad, occlusion, gradcam."),
        epochs: str = typer.Option("init,final", "--epochs", "-e",
                                   help="Epochs compared: 0,final or init,final or 0,3,5."),
        target: str = typer.Option("predicted", "--target", help="The class explained: "
                                   "predicted, label, or a class number like 3."),
        baseline: str = typer.Option("zeros", "--baseline", help="IG's baseline and the "
                                     "deletion fill: zeros or mean (of the train inputs)."),
        steps: int = typer.Option(50, "--steps", help="Integrated-gradients steps."),
        layer: str = typer.Option(None, "--layer", help="Grad-CAM's layer, e.g. conv2 "
                                  "[the last layer with a spatial output]."),
        no_randomization: bool = typer.Option(False, "--no-randomization", help="Skip the "
                                              "cascading model-randomization test."),
        n_faithfulness: int = typer.Option(200, "--n-faithfulness", help="Test inputs of "
                                           "the deletion/insertion curves (0: none)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the input subset, SmoothGrad's "
                                 "noise, the random baseline and the randomization."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda …"),
        trust_code: bool = trust_code_option(),
        backend: str = BACKEND,
        ray_address: str = RAY_ADDRESS,
        ray_workers: int = RAY_WORKERS,
        ray_cpus: float = RAY_CPUS,
        ray_gpus: float = RAY_GPUS,
    ) -> None:
        """Attribution maps of chosen test inputs, untrained next to trained, with checks.

        Each map is drawn on its input with the class explained and its probability; next
        to every map: IG's completeness error (attributions must sum to f(x) − f(baseline)),
        the cascading randomization test (Adebayo et al. 2018: maps must change as layers
        are re-initialised, Spearman and SSIM by layer, PASS/FAIL) and deletion/insertion
        curves with their AUCs against a random ordering. Not resumable: seconds to minutes.
        With --backend ray each epoch's and method's maps and each method's checks are Ray
        tasks.
        """
        from shenjing import _checks
        from shenjing.runs import open_run
        from shenjing.stages.attribute import attribute_stage, check_attribute_options

        given = name_list("--samples", samples, example="0,1,2") or []
        methods = name_list("--method", method, example="ig,gradcam") or []
        checked = check_attribute_options(samples=given, methods=methods, target=target,
                                          baseline=baseline, steps=steps,
                                          n_faithfulness=n_faithfulness, seed=seed)
        _checks.device("--device", device)
        be = backend_of(backend, ray_address=ray_address, workers=ray_workers,
                        num_cpus=ray_cpus, num_gpus=ray_gpus)
        chosen = "all" if epochs.strip() == "all" else parse_epochs(epochs)
        result = attribute_stage(open_run(run, trust_code=trust_code),
                                 samples=checked.samples, methods=checked.methods,
                                 epochs=chosen, target=checked.target, baseline=baseline,
                                 steps=steps, layer=layer,
                                 randomization=not no_randomization,
                                 faithfulness=n_faithfulness > 0,
                                 n_faithfulness=max(n_faithfulness, 1), seed=seed,
                                 device=device, on_plan=out.print, backend=be)
        print_lines(out, result.summary())
