"""Stage ``visualize``: the input each unit of a layer would like to see, by optimisation.

For each epoch asked for, the run's model is built and
:func:`shenjing.analysis.visualize.visualize_units` (the function a notebook calls)
optimises one image per unit — Fourier-parametrised with 1/f scaling, colour-decorrelated
by the training images' channel covariance when there are 3 channels, seeded jitter /
scale / rotation at every step — in the data's own pixel range; the activation the final
image reaches is reported next to the best real test input's
(:func:`shenjing.analysis.units.top_activations`, k=1).

Files written (``<L>`` = the layer name made safe for a file name, epochs as three digits):

``visualize/visualize-<L>-e<NNN>.json|npz``  per unit: reached, noise, best real activation
                                             and index, ratio; the options; the images
``visualize/summary.json``                   every epoch's numbers, the figures, the options
``figures/visualize-<L>-e<NNN>.png|svg``     one image per unit with its numbers

Stage record: ``stages.visualize`` — ``done`` with the numbers per unit, ``failed`` with
the error. Options, the layer and the units are checked before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing._device import resolve_device
from shenjing.analysis.visualize import (
    LR,
    STEPS,
    FeatureVisualization,
    check_units,
    check_visualize_options,
    visualize_units,
)
from shenjing.errors import UsageError
from shenjing.plot.save import save_figure
from shenjing.runs import Run
from shenjing.stages._inputs import resolve_epochs

#: the most units optimised in one call (one image each, in one batch)
MAX_UNITS = 64
#: training images whose channel covariance decorrelates the colours
COLOUR_SAMPLES = 1000


def file_stem(layer: str, epoch: int) -> str:
    """``visualize-conv2-e010``: the layer's name with anything but letters, digits, ``.``,
    ``_`` and ``-`` replaced by ``_``."""
    return f"visualize-{re.sub(r'[^A-Za-z0-9._-]', '_', layer)}-e{epoch:03d}"


@dataclass(frozen=True)
class VisualizeResult:
    """What the visualize stage made and wrote."""

    visualizations: tuple[FeatureVisualization, ...]
    epochs: tuple[int, ...]
    figures: tuple[Path, ...]
    files: tuple[Path, ...]
    json_path: Path

    def summary(self) -> str:
        lines: list[str] = []
        for e, fv in zip(self.epochs, self.visualizations, strict=True):
            lines += [f"epoch {e}: " + fv.summary_lines()[0], *fv.summary_lines()[1:]]
        lines += [f"wrote {p}" for p in (*self.figures, self.json_path)]
        return "\n".join(lines)


def visualize_stage(run: Run, *, layer: str, channels: Sequence[int],
                    epochs: Sequence[int | str] | str = ("final",), steps: int = STEPS,
                    lr: float = LR, seed: int = 0, device: str | torch.device = "auto"
                    ) -> VisualizeResult:
    """Feature visualizations of the units ``channels`` of ``layer`` (``"output"``: the
    classes) at ``epochs``: ``steps`` steps of rate ``lr`` from ``seed``; each unit's
    reached activation next to the best real test input's."""
    check_visualize_options(steps=steps, lr=lr, seed=seed)
    units = list(dict.fromkeys(int(c) for c in channels))
    if len(units) > MAX_UNITS:
        raise UsageError(f"--channels: {len(units)} units asked, at most {MAX_UNITS} are "
                         "optimised at once; e.g. --channels 0:8")
    chosen = resolve_epochs(run, epochs)
    dev = resolve_device(device, option="--device")
    data = run.data
    shape = tuple(int(s) for s in data.input_shape)
    first = run.model(chosen[0], device=dev)
    check_units(first, layer, units, input_shape=shape, device=dev)
    colour = None
    if len(shape) == 3 and shape[0] == 3:
        colour = data.train.subset(COLOUR_SAMPLES, seed=seed).x
    with run.running_stage("visualize", epochs=chosen, layer=layer):
        made: list[FeatureVisualization] = []
        figures: list[Path] = []
        files: list[Path] = []
        out = run.subdir("visualize")
        for e in chosen:
            model = first if e == chosen[0] else run.model(e, device=dev)
            fv = visualize_units(model, layer, units, input_shape=shape, steps=steps, lr=lr,
                                 seed=seed, pixel_range=data.pixel_range,
                                 colour_from=colour, data=data.test, device=dev)
            made.append(fv)
            files += fv.save(out, file_stem(layer, e))
            figures += _draw(run, fv, e)
            del model
        rel = [str(p.relative_to(run.path)) for p in figures]
        summary = {"layer": layer, "epochs": chosen, "figures": rel,
                   "per_epoch": {str(e): fv.describe() for e, fv in zip(chosen, made,
                                                                        strict=True)},
                   "options": {"channels": units, "steps": steps, "lr": lr, "seed": seed}}
        from shenjing._io import write_json

        json_path = write_json(out / "summary.json", summary)
        run.update_stage("visualize", "done", **_record(run, chosen, made, json_path))
    return VisualizeResult(tuple(made), tuple(chosen), tuple(figures), tuple(files),
                           json_path)


def _draw(run: Run, fv: FeatureVisualization, epoch: int) -> list[Path]:
    from shenjing.plot.visualize import plot_visualization

    fig = plot_visualization(fv, title=f"What each unit of {fv.layer} would like to see, "
                                        f"epoch {epoch} ({fv.steps} steps, seed {fv.seed})")
    return save_figure(fig, run.figures_dir, file_stem(fv.layer, epoch))


def _record(run: Run, epochs: list[int], made: list[FeatureVisualization],
            json_path: Path) -> dict[str, Any]:
    """The numbers ``run.json`` keeps: per epoch and unit, reached / best real / ratio."""
    def rounded(row: dict[str, Any]) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) and np.isfinite(v) else v)
                for k, v in row.items()}

    last = made[-1]
    return {"layer": last.layer, "epochs": epochs, "steps": last.steps, "lr": last.lr,
            "seed": last.seed, "transforms": last.transforms,
            "parametrisation": last.parametrisation,
            "units": {str(e): [rounded(r) for r in fv.per_unit()]
                      for e, fv in zip(epochs, made, strict=True)},
            "json": str(json_path.relative_to(run.path))}


__all__ = ["VisualizeResult", "file_stem", "visualize_stage"]
