"""Stages ``dynamics`` and ``weights``: the training record and the weights across epochs.

Both read the run folder as data — ``metrics.jsonl``, the safetensors checkpoints and
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
``figures/weights-histograms.png|svg`` per-group histograms, one line per epoch
``figures/weights-stats.png|svg``     norm, std and fraction near zero per group and epoch
``dynamics/weights.json``             ``{"epochs", "layers", "params": {layer: [tensor
                                      names]}, "stats": {layer: {"mean", "std", "norm",
                                      "abs_max", "frac_near_zero": [...]}}, "coverage"}``
``dynamics/weights.npz``              ``<layer>__counts`` ``(epochs, bins)`` and
                                      ``<layer>__edges`` ``(bins + 1,)``, ``epochs``

Stage records: ``stages.dynamics`` (moving, settled, number of warnings, coverage share) and
``stages.weights``.
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
    natural_key,
    read_dynamics,
    recorded_coverage,
    recorded_groups,
)
from shenjing.analysis.weights import (
    WeightHistory,
    coverage_from_state,
    infer_groups,
    weight_history,
    weight_stats,
)
from shenjing.errors import RunError
from shenjing.plot.save import save_figure
from shenjing.runs import Run
from shenjing.stages.maps import resolve_epochs


def _layer_table(run: Run) -> Mapping[str, Any] | None:
    """``RUN/layers.json`` as plain JSON (None when the run has none or it is unreadable)."""
    table = run.saved_layer_table()
    return table if table is not None and isinstance(table.get("rows"), list) else None


def _model_order(run: Run, groups: Sequence[str]) -> list[str] | None:
    """Group and module names in the model's order, from files only (never the model).

    The Recorder's group listing is in model order; ``layers.json`` gives the module order
    (dead-unit activations, and groups of runs recorded before the listing existed): each
    module is followed by its ``.bias`` group, and root parameters come first.
    """
    table = _layer_table(run)
    if table is None:
        return list(groups) or None
    modules = [str(r.get("name")) for r in table["rows"] if isinstance(r, Mapping)]
    known = set(modules)
    order = [g for g in groups if g not in known and g.removesuffix(".bias") not in known]
    for name in modules:
        order += [name, f"{name}.bias"]
    return order


def _sorted(names: Sequence[str], order: Sequence[str] | None) -> list[str]:
    rank = {n: i for i, n in enumerate(order or ())}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), natural_key(n)))


def _n_total(run: Run, records: Sequence[Mapping[str, Any]]) -> int | None:
    """All the model's parameters, as the Recorder or ``layers.json`` counted them."""
    recorded = recorded_coverage(records)
    if recorded is not None:
        return recorded.n_total
    table = _layer_table(run)
    return int(table["n_params"]) if table is not None and "n_params" in table else None


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
                               n_total=_n_total(run, records))


def _weights_coverage(run: Run, records: Sequence[Mapping[str, Any]], history: WeightHistory,
                      state: Mapping[str, Any]) -> Coverage:
    """The share of parameters the weights view shows (all groups, or those asked for)."""
    shown = {p for layer in history.layers for p in history.params.get(layer, ())}
    listing = recorded_groups(records)
    recorded = recorded_coverage(records)
    if not listing or recorded is None:
        return coverage_from_state(state, sorted(shown), n_total=_n_total(run, records))
    n_shown = sum(int(np.prod(tuple(state[p].shape))) for p in shown if p in state)
    left = [p for params in listing.values() for p in params if p not in shown]
    return Coverage(n_shown, recorded.n_total, (*left, *recorded.untracked))


@dataclass(frozen=True)
class WeightsResult:
    """Weight statistics across epochs and the files written."""

    history: WeightHistory
    figures: tuple[Path, ...]
    json_path: Path
    coverage: Coverage | None = None

    def summary(self) -> str:
        h = self.history
        head = f"weights of {len(h.layers)} layers at epochs {', '.join(map(str, h.epochs))}"
        if self.coverage is not None:
            c = self.coverage
            head += (f"; tracks {c.percent()} of the model's parameters "
                     f"({c.n_tracked:,} of {c.n_total:,})")
        lines = [head]
        for layer in h.layers:
            s = h.stats[layer]
            lines.append(f"  {layer:<16} ‖w‖ {s['norm'][0]:.4g} → {s['norm'][-1]:.4g}   std "
                         f"{s['std'][-1]:.3g}   near zero {s['frac_near_zero'][-1]:.1%}")
        lines += [f"wrote {p}" for p in (*self.figures, self.json_path)]
        return "\n".join(lines)


#: the finest histogram ``--bins`` may ask for
MAX_BINS = 10_000


def weights_stage(run: Run, *, epochs: Sequence[int | str] | str = "all",
                  layers: Sequence[str] | None = None, bins: int = 60) -> WeightsResult:
    """Histograms and statistics of every parameter group at ``epochs`` (default: all),
    from the checkpoints alone."""
    # every argument is checked before anything is written (run.json included)
    from shenjing._checks import bounded_int
    from shenjing.plot.weights import plot_weight_histograms, plot_weight_stats

    bounded_int("--bins", bins, low=1, high=MAX_BINS, example=60,
                why="one histogram row per epoch and layer holds every bin")
    chosen = resolve_epochs(run, epochs)
    records = run.metrics()
    groups: dict[str, list[str]] | None = {
        k: list(v) for k, v in recorded_groups(records).items()} or None
    first = run.state_dict(chosen[0])
    if groups is None:  # a run recorded before the listing: infer, restore the order
        inferred = infer_groups(first)
        groups = {k: inferred[k] for k in _sorted(list(inferred), _model_order(run, ()))}
    if layers is not None:
        weight_stats(first, layers, groups=groups)  # LayerNotFoundError names the groups
    with run.running_stage("weights"):
        states = {e: first if e == chosen[0] else run.state_dict(e) for e in chosen}
        history = weight_history(states, layers, bins=bins, groups=groups)
        coverage = _weights_coverage(run, records, history, first)
        figures = save_figure(plot_weight_histograms(history, coverage=coverage),
                              run.figures_dir, "weights-histograms")
        figures += save_figure(plot_weight_stats(history, coverage=coverage), run.figures_dir,
                               "weights-stats")
        out = run.subdir("dynamics")
        json_path = _io.write_json(out / "weights.json", {
            **history.to_dict(), "coverage": coverage.to_dict() if coverage else None})
        arrays: dict[str, Any] = {"epochs": np.array(history.epochs)}
        for layer in history.layers:
            arrays[f"{layer}__counts"] = history.counts[layer]
            arrays[f"{layer}__edges"] = history.edges[layer]
        _io.save_npz(out / "weights.npz", **arrays)
        run.update_stage("weights", "done", epochs=list(history.epochs),
                         json=str(json_path.relative_to(run.path)))
    return WeightsResult(history=history, figures=tuple(figures), json_path=json_path,
                         coverage=coverage)


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
        order = _model_order(run, list(recorded_groups(records)))
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
