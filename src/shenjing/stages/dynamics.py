"""Stage ``dynamics``: the training record across epochs.

It reads the run folder as data — ``metrics.jsonl``, the safetensors checkpoints and
``RUN/layers.json`` — and never build or import the model, so they open any run folder,
also one whose model code is not trusted or not rebuildable. The model's order comes from
the Recorder's parameter listing (epoch 0 of metrics.jsonl) and ``layers.json``; without
either (older runs), names follow natural order.

Files written:

``figures/dynamics-curves.png|svg``   loss (log) and accuracy, train and test, per epoch
``figures/dynamics-layers.png|svg``   per parameter group: norm, ‖Δw‖/‖w‖ (log), gradient
                                      norm (log), distance and cosine to init, dead units;
                                      the title says what share of the parameters it covers
``figures/dynamics-status.png|svg``   groups × epochs heat map of log10 ‖Δw‖/‖w‖, each
                                      group's status (moving/settled/unchanged) and warnings
``dynamics/dynamics.json``            ``{"dynamics": {"epochs", "layers", "groups",
                                      "scalars", "layer_metrics": {metric: {layer: [...]}},
                                      "dead_units"}, "status": {"epoch", "status", "moving",
                                      "settled", "unchanged", "last_update_ratio",
                                      "peak_update_ratio", "warnings": [{"kind", "layer",
                                      "epoch", "epochs", "value", "message"}], "thresholds"},
                                      "coverage": {"n_tracked", "n_total", "share",
                                      "untracked"}}`` (null = no value)

Stage record: ``stages.dynamics`` (moving, settled, number of warnings, coverage share).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shenjing import _io
from shenjing.analysis.dynamics import (
    Coverage,
    Dynamics,
    LayerStatus,
    check_thresholds,
    layer_status,
    read_dynamics,
    recorded_coverage,
    recorded_groups,
)
from shenjing.analysis.weights import (
    coverage_from_state,
)
from shenjing.errors import RunError
from shenjing.plot.save import save_figure
from shenjing.runs import Run
from shenjing.stages._model_order import model_order, n_total_params
from shenjing.stages.weights import WeightsResult, weights_stage


def _dynamics_coverage(run: Run, records: Sequence[Mapping[str, Any]]) -> Coverage | None:
    """The share of parameters metrics.jsonl tracks: the Recorder's own count, or — for runs
    recorded before every parameter was tracked, when each recorded layer stood for its
    ``.weight`` — counted from the first checkpoint."""
    recorded = recorded_coverage(records)
    if recorded is not None or not run.epochs:
        return recorded
    names = dict.fromkeys(n for rec in records for n in (rec.get("layers") or {}))
    state = run.state_dict(run.epochs[0])
    return coverage_from_state(state, [f"{n}.weight" for n in names],
                               n_total=n_total_params(run, records))


@dataclass(frozen=True)
class DynamicsResult:
    """The run's training dynamics, the judgement of each layer, and the files written."""

    dynamics: Dynamics
    status: LayerStatus
    figures: tuple[Path, ...]
    json_path: Path
    weights: WeightsResult | None = None

    @property
    def coverage(self) -> Coverage | None:
        """What share of the model's parameters the view tracks."""
        return self.dynamics.coverage

    def summary(self) -> str:
        d, s = self.dynamics, self.status
        lines = [f"epochs {d.epochs[0]}…{d.epochs[-1]}, {len(d.layers)} parameter groups (a "
                 "module's weights; its biases as <module>.bias; free parameters by name)"]
        if d.coverage is not None:
            lines.append(d.coverage.describe() + (
                "" if d.coverage.share >= 1 else
                f"; not tracked: {', '.join(d.coverage.untracked[:8])}"
                + (" …" if len(d.coverage.untracked) > 8 else "")))
        acc = d.scalars.get("test_accuracy")
        loss = d.scalars.get("test_loss")
        if loss is not None and np.isfinite(loss).any():
            lines.append(f"test loss {loss[0]:.4g} → {loss[-1]:.4g}"
                         + (f", test accuracy {acc[0]:.2%} → {acc[-1]:.2%}"
                            if acc is not None and np.isfinite(acc[[0, -1]]).all() else ""))
        for layer in d.layers:
            lu = s.last_update.get(layer, float("nan"))
            lines.append(f"  {layer:<16} {s.status.get(layer, 'unknown'):<9} last ‖Δw‖/‖w‖ "
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

    check_thresholds(**thresholds)
    with run.running_stage("dynamics"):
        records = run.metrics()
        if not records:
            raise RunError(f"run {run.name!r} has no metrics.jsonl records; train it with "
                           "`shenjing train`, or record them with sj.Recorder in your own "
                           "loop")
        order = model_order(run, list(recorded_groups(records)))
        dyn = read_dynamics(records, layer_order=order)
        if dyn.coverage is None:
            dyn = dataclasses.replace(dyn, coverage=_dynamics_coverage(run, records))
        status = layer_status(dyn, **thresholds)
        figures = save_figure(plot_training_curves(dyn), run.figures_dir, "dynamics-curves")
        if dyn.layers:
            figures += save_figure(plot_layer_dynamics(dyn, status=status), run.figures_dir,
                                   "dynamics-layers")
            figures += save_figure(plot_layer_status(dyn, status), run.figures_dir,
                                   "dynamics-status")
        out = run.subdir("dynamics")
        json_path = _io.write_json(out / "dynamics.json", {
            "dynamics": dyn.to_dict(), "status": status.to_dict(),
            "coverage": dyn.coverage.to_dict() if dyn.coverage is not None else None})
        run.update_stage("dynamics", "done", moving=status.moving, settled=status.settled,
                         unchanged=status.unchanged, warnings=len(status.warnings),
                         coverage=dyn.coverage.share if dyn.coverage is not None else None,
                         json=str(json_path.relative_to(run.path)))
    w = weights_stage(run) if weights and run.epochs else None
    return DynamicsResult(dynamics=dyn, status=status, figures=tuple(figures),
                          json_path=json_path, weights=w)
