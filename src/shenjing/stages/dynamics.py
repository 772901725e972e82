"""Stages ``dynamics`` and ``weights``: the training record and the weights across epochs.

Files written:

``figures/dynamics-curves.png|svg``   loss (log) and accuracy, train and test, per epoch
``figures/dynamics-layers.png|svg``   per-layer weight norm, ‖Δw‖/‖w‖ (log), gradient norm
                                      (log), distance and cosine to init, dead units
``figures/dynamics-status.png|svg``   layers × epochs heat map of log10 ‖Δw‖/‖w‖, each
                                      layer's status (moving/settled) and the warnings
``dynamics/dynamics.json``            ``{"dynamics": {"epochs", "layers", "scalars",
                                      "layer_metrics": {metric: {layer: [...]}},
                                      "dead_units"}, "status": {"epoch", "status", "moving",
                                      "settled", "last_update_ratio", "peak_update_ratio",
                                      "warnings": [{"kind", "layer", "epoch", "value",
                                      "message"}], "thresholds"}}`` (null = no value)
``figures/weights-histograms.png|svg`` per-layer weight histograms, one line per epoch
``figures/weights-stats.png|svg``     norm, std and fraction near zero per layer and epoch
``dynamics/weights.json``             ``{"epochs", "layers", "stats": {layer: {"mean",
                                      "std", "norm", "abs_max", "frac_near_zero": [...]}}}``
``dynamics/weights.npz``              ``<layer>__counts`` ``(epochs, bins)`` and
                                      ``<layer>__edges`` ``(bins + 1,)``, ``epochs``

Stage records: ``stages.dynamics`` (moving, settled, number of warnings) and
``stages.weights``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shenjing import _io
from shenjing.analysis.dynamics import (
    Dynamics,
    LayerStatus,
    layer_status,
    natural_key,
    read_dynamics,
)
from shenjing.analysis.weights import WeightHistory, weight_history
from shenjing.errors import RunError
from shenjing.plot.save import save_figure
from shenjing.runs import Run
from shenjing.stages.maps import resolve_epochs


def _model_order(run: Run) -> list[str] | None:
    """Module names in the model's own order (None when the run cannot rebuild it)."""
    try:
        return [name for name, _ in run.build_model().named_modules()]
    except Exception:  # a run without a rebuildable model still has metrics and weights
        return None


@dataclass(frozen=True)
class WeightsResult:
    """Weight statistics across epochs and the files written."""

    history: WeightHistory
    figures: tuple[Path, ...]
    json_path: Path

    def summary(self) -> str:
        h = self.history
        lines = [f"weights of {len(h.layers)} layers at epochs "
                 f"{', '.join(map(str, h.epochs))}"]
        for layer in h.layers:
            s = h.stats[layer]
            lines.append(f"  {layer:<16} ‖w‖ {s['norm'][0]:.4g} → {s['norm'][-1]:.4g}   std "
                         f"{s['std'][-1]:.3g}   near zero {s['frac_near_zero'][-1]:.1%}")
        lines += [f"wrote {p}" for p in (*self.figures, self.json_path)]
        return "\n".join(lines)


def weights_stage(run: Run, *, epochs: Sequence[int | str] | str = "all",
                  layers: Sequence[str] | None = None, bins: int = 60) -> WeightsResult:
    """Histograms and statistics of every layer's weights at ``epochs`` (default: all)."""
    from shenjing.plot.weights import plot_weight_histograms, plot_weight_stats

    chosen = resolve_epochs(run, epochs)
    states = {e: run.state_dict(e) for e in chosen}
    if layers is None:  # safetensors keeps keys sorted as text: restore the model's order
        names = [k[: -len(".weight")] for k in states[chosen[0]] if k.endswith(".weight")]
        order = _model_order(run)
        rank = {n: i for i, n in enumerate(order or ())}
        layers = sorted(names, key=lambda n: (rank.get(n, len(rank)), natural_key(n)))
    history = weight_history(states, layers, bins=bins)
    figures = save_figure(plot_weight_histograms(history), run.figures_dir,
                             "weights-histograms")
    figures += save_figure(plot_weight_stats(history), run.figures_dir, "weights-stats")
    out = run.subdir("dynamics")
    json_path = _io.write_json(out / "weights.json", history.to_dict())
    arrays: dict[str, Any] = {"epochs": np.array(history.epochs)}
    for layer in history.layers:
        arrays[f"{layer}__counts"] = history.counts[layer]
        arrays[f"{layer}__edges"] = history.edges[layer]
    _io.save_npz(out / "weights.npz", **arrays)
    run.update_stage("weights", "done", epochs=list(history.epochs),
                     json=str(json_path.relative_to(run.path)))
    return WeightsResult(history=history, figures=tuple(figures), json_path=json_path)


@dataclass(frozen=True)
class DynamicsResult:
    """The run's training dynamics, the judgement of each layer, and the files written."""

    dynamics: Dynamics
    status: LayerStatus
    figures: tuple[Path, ...]
    json_path: Path
    weights: WeightsResult | None = None

    def summary(self) -> str:
        d, s = self.dynamics, self.status
        lines = [f"epochs {d.epochs[0]}…{d.epochs[-1]}, layers: {', '.join(d.layers)}"]
        acc = d.scalars.get("test_accuracy")
        loss = d.scalars.get("test_loss")
        if loss is not None and np.isfinite(loss).any():
            lines.append(f"test loss {loss[0]:.4g} → {loss[-1]:.4g}"
                         + (f", test accuracy {acc[0]:.2%} → {acc[-1]:.2%}"
                            if acc is not None and np.isfinite(acc[[0, -1]]).all() else ""))
        for layer in d.layers:
            lu = s.last_update.get(layer, float("nan"))
            lines.append(f"  {layer:<16} {s.status.get(layer, 'unknown'):<8} last ‖Δw‖/‖w‖ "
                         f"{lu:.3g}")
        lines += [f"WARNING {w.message}" for w in s.warnings]
        if not s.warnings:
            lines.append("no warnings (no vanishing/exploding layer, no layer with many dead "
                         "units)")
        lines += [f"wrote {p}" for p in (*self.figures, self.json_path)]
        if self.weights is not None:
            lines.append(self.weights.summary())
        return "\n".join(lines)


def dynamics_stage(run: Run, *, weights: bool = True, **thresholds: float) -> DynamicsResult:
    """Read metrics.jsonl, judge the layers, draw curves/ratios/status (and the weights).

    ``thresholds`` are passed to :func:`shenjing.analysis.dynamics.layer_status`.
    """
    from shenjing.plot.dynamics import (
        plot_layer_dynamics,
        plot_layer_status,
        plot_training_curves,
    )

    records = run.metrics()
    if not records:
        raise RunError(f"run {run.name!r} has no metrics.jsonl records; train it with "
                       "`shenjing train`, or record them with sj.Recorder in your own loop")
    dyn = read_dynamics(records, layer_order=_model_order(run))
    status = layer_status(dyn, **thresholds)
    figures = save_figure(plot_training_curves(dyn), run.figures_dir, "dynamics-curves")
    if dyn.layers:
        figures += save_figure(plot_layer_dynamics(dyn), run.figures_dir, "dynamics-layers")
        figures += save_figure(plot_layer_status(dyn, status), run.figures_dir,
                                  "dynamics-status")
    out = run.subdir("dynamics")
    json_path = _io.write_json(out / "dynamics.json",
                               {"dynamics": dyn.to_dict(), "status": status.to_dict()})
    w = weights_stage(run) if weights and run.epochs else None
    run.update_stage("dynamics", "done", moving=status.moving, settled=status.settled,
                     warnings=len(status.warnings), json=str(json_path.relative_to(run.path)))
    return DynamicsResult(dynamics=dyn, status=status, figures=tuple(figures),
                          json_path=json_path, weights=w)
