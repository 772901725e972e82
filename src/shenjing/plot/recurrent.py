"""Figures of the recurrent view: probe accuracy by step, gate saturation by epoch, and
hidden-state trajectories in 2-D PCA (one panel per epoch). They draw an
:class:`~shenjing.analysis.recurrent.OverTime`; they never compute."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shenjing._labels import epoch0_words
from shenjing.errors import NotApplicableError, UsageError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from shenjing.analysis.recurrent import OverTime


def _axes(ax: Any, figsize: tuple[float, float]) -> tuple[Figure, Any]:
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, new = plt.subplots(figsize=figsize, layout="constrained")
    return fig, new


def epoch_name(epoch: int) -> str:
    """``epoch 0 (untrained)`` / ``epoch 5``: how the figures name an epoch."""
    return f"epoch {epoch}" + (f" ({epoch0_words()})" if epoch == 0 else "")


def _epoch_colours(epochs: Sequence[int]) -> list[Any]:
    import matplotlib as mpl

    cmap = mpl.colormaps["viridis"]
    if len(epochs) == 1:
        return [cmap(0.75)]
    return [(0.55, 0.55, 0.55, 1.0) if e == 0 else cmap(0.15 + 0.7 * i / (len(epochs) - 1))
            for i, e in enumerate(epochs)]


def _class_name(result: OverTime, label: int) -> str:
    classes = result.classes
    return str(classes[label]) if 0 <= label < len(classes) else str(label)


def plot_probe_by_step(result: OverTime, *, ax: Any = None) -> Figure:
    """Linear-probe accuracy of ``h_t`` against the step ``t``, one line per epoch (top
    layer, forward: thick; lower layers: thin dashed; a backward direction: dotted), the
    chance level, and a mark where each epoch's top curve first reaches ``reach`` of its
    last-step accuracy."""
    fig, ax = _axes(ax, (7.0, 4.2))
    steps = result.steps
    top = result.num_layers - 1
    for e, colour in zip(result.epochs, _epoch_colours(result.epochs), strict=True):
        for k in range(result.num_layers):
            for d in range(result.n_directions):
                curve = result.probe[result.epochs.index(e), k, d]
                main = k == top and d == 0
                where = ([f"layer {k + 1}"] if result.num_layers > 1 else []) + (
                    ["backward"] if d == 1 else [])
                label = epoch_name(e) + (f" · {', '.join(where)}" if where and not main
                                         else "")
                ax.plot(steps, curve, color=colour, lw=2.2 if main else 1.0,
                        ls="-" if main else (":" if d == 1 else "--"),
                        marker="o" if main and len(steps) <= 32 else None, ms=3,
                        label=label, gid=f"probe e{e} l{k} d{d}")
        s = result.reach_step(e)
        ax.plot([s], [result.curve(e)[s - 1]], marker="*", ms=13, color=colour, ls="none",
                markeredgecolor="black", zorder=5, gid=f"reach e{e}",
                label=f"{epoch_name(e)}: ≥ {result.reach:.0%} of last step from step {s}")
    ax.axhline(result.chance, color="black", ls="--", lw=1, gid="chance",
               label=f"chance (most frequent class) {result.chance:.3f}")
    ax.set_xlabel("step t (the state has read inputs 1 … t)")
    ax.set_ylabel("probe accuracy on test samples")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(steps[0] - 0.5, steps[-1] + 0.5)
    ax.grid(alpha=0.3)
    direction = ", forward" if result.bidirectional else ""
    ax.set_title(f"{result.layer} ({result.module_type}): linear probe on h_t at each step\n"
                 f"top layer{direction} thick · {result.n_train} train → {result.n_test} test "
                 "samples", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_gate_saturation(result: OverTime, *, ax: Any = None) -> Figure:
    """Share of gate values below ``low`` (solid, ▼) and above ``high`` (dashed, ▲) for
    each saturating gate (an LSTM's input and forget gates), against the epoch; one line
    per layer where there are several."""
    if result.saturation is None:
        raise NotApplicableError(f"gate saturation: {result.layer!r} is an "
                                 f"{result.module_type}, which has no gates")
    import matplotlib as mpl
    from matplotlib.ticker import PercentFormatter

    fig, ax = _axes(ax, (7.0, 4.2))
    epochs = np.array(result.saturation_epochs)
    colours = mpl.colormaps["tab10"]
    peak = 0.0
    for gi, gate in enumerate(result.gates):
        for k in range(result.num_layers):
            where = f" (layer {k + 1})" if result.num_layers > 1 else ""
            for tail, (sign, bound, ls, marker) in enumerate(
                    (("<", result.low, "-", "v"), (">", result.high, "--", "^"))):
                values = result.saturation[:, gi, k, tail]
                peak = max(peak, float(values.max()))
                ax.plot(epochs, values, color=colours(gi), ls=ls, marker=marker,
                        alpha=1.0 if k == result.num_layers - 1 else 0.55,
                        label=f"{gate} gate {sign} {bound:g}{where}",
                        gid=f"saturation {gate} l{k} {'low' if tail == 0 else 'high'}")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, min(1.0, peak * 1.15 + 0.02))
    ax.set_xticks(epochs)
    ax.set_xlabel(f"epoch (0 = {epoch0_words()})")
    ax.set_ylabel("share of gate values")
    ax.grid(alpha=0.3)
    ax.set_title(f"{result.layer} ({result.module_type}): saturated gates, "
                 f"{result.n_test} test samples × {result.n_steps} steps × "
                 f"{result.hidden_size} units", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def plot_state_trajectories(result: OverTime, *, epochs: Sequence[int] | None = None
                            ) -> Figure:
    """One panel per epoch: the top layer's hidden states in the 2-D PCA of all steps'
    states, a few trajectories per class as lines coloured by class, the first step ○ and
    the last ●."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    chosen = list(result.epochs if epochs is None else epochs)
    missing = [e for e in chosen if e not in result.epochs]
    if missing or not chosen:
        raise UsageError(f"trajectories were computed at epochs {list(result.epochs)}; "
                         f"asked for {chosen}")
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.4 * len(chosen), 4.4),
                             layout="constrained", squeeze=False)
    colours = mpl.colormaps["tab10"]
    seen: set[int] = set()
    for ax, e in zip(axes[0], chosen, strict=True):
        path = result.trajectories[result.epochs.index(e)]
        for coords, label, sample in zip(path.coords, path.labels, path.samples,
                                         strict=True):
            colour = colours(int(label) % 10)
            ax.plot(coords[:, 0], coords[:, 1], color=colour, lw=1.0, alpha=0.8,
                    gid=f"trajectory {int(sample)}")
            ax.plot(coords[:1, 0], coords[:1, 1], ls="none", marker="o", ms=4,
                    markerfacecolor="white", markeredgecolor=colour, gid=f"start {int(sample)}")
            ax.plot(coords[-1:, 0], coords[-1:, 1], ls="none", marker="o", ms=7,
                    color=colour, markeredgecolor="black", gid=f"end {int(sample)}")
            seen.add(int(label))
        ratio = path.explained_variance
        ax.set_xlabel(f"PC1 ({ratio[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({ratio[1]:.0%} of variance)")
        ax.set_title(epoch_name(e), fontsize=10)
        ax.set_label(f"epoch {e}")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours(c % 10), marker="o",
                      label=_class_name(result, c)) for c in sorted(seen)]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, title="class")
    n_shown = int(result.trajectories[0].samples.size)
    fig.suptitle(f"{result.layer} ({result.module_type}): hidden-state trajectories over "
                 f"{result.n_steps} steps, {n_shown} test samples shown (○ first step, ● "
                 f"last)\n2-D PCA fitted per epoch on every step's state of {result.n_test} "
                 "test samples", fontsize=10)
    return fig


__all__ = ["epoch_name", "plot_gate_saturation", "plot_probe_by_step",
           "plot_state_trajectories"]
