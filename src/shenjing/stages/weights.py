"""Stage ``weights``: histograms and statistics of every parameter group across epochs.

It reads the safetensors checkpoints, ``metrics.jsonl`` and ``RUN/layers.json`` as data and
never builds or imports the model.

Files written:

``figures/weights-histograms.png|svg`` per-group histograms, one line per epoch
``figures/weights-stats.png|svg``     norm, std and fraction near zero per group and epoch
``dynamics/weights.json``             ``{"epochs", "layers", "params": {layer: [tensor
                                      names]}, "stats": {layer: {"mean", "std", "norm",
                                      "abs_max", "frac_near_zero": [...]}}, "coverage"}``
``dynamics/weights.npz``              ``<layer>__counts`` ``(epochs, bins)`` and
                                      ``<layer>__edges`` ``(bins + 1,)``, ``epochs``

Stage record: ``stages.weights``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shenjing import _io
from shenjing.analysis.dynamics import (
    Coverage,
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
from shenjing.plot.save import save_figure
from shenjing.runs import Run
from shenjing.stages._inputs import layer_names, resolve_epochs
from shenjing.stages._model_order import in_model_order, model_order, n_total_params


def _weights_coverage(run: Run, records: Sequence[Mapping[str, Any]], history: WeightHistory,
                      state: Mapping[str, Any]) -> Coverage:
    """The share of parameters the weights view shows (all groups, or those asked for)."""
    shown = {p for layer in history.layers for p in history.params.get(layer, ())}
    listing = recorded_groups(records)
    recorded = recorded_coverage(records)
    if not listing or recorded is None:
        return coverage_from_state(state, sorted(shown), n_total=n_total_params(run, records))
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
                  layers: Sequence[str] | str | None = None, bins: int = 60) -> WeightsResult:
    """Histograms and statistics of every parameter group at ``epochs`` (default: all),
    or of the groups ``layers`` names, from the checkpoints alone."""
    # every argument is checked before anything is written (run.json included)
    from shenjing._checks import bounded_int
    from shenjing.plot.weights import plot_weight_histograms, plot_weight_stats

    bounded_int("--bins", bins, low=1, high=MAX_BINS, example=60,
                why="one histogram row per epoch and layer holds every bin")
    chosen = resolve_epochs(run, epochs)
    if layers is not None:
        layers = layer_names(layers)
    records = run.metrics()
    groups: dict[str, list[str]] | None = {
        k: list(v) for k, v in recorded_groups(records).items()} or None
    first = run.state_dict(chosen[0])
    if groups is None:  # a run recorded before the listing: infer, restore the order
        inferred = infer_groups(first)
        groups = {k: inferred[k] for k in in_model_order(list(inferred), model_order(run, ()))}
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
