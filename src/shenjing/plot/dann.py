"""Draw a DANN study: target (and source) accuracy by epoch for each training, the domain
gap (MMD², CORAL, domain-classifier accuracy) by epoch and feature layer, the untrained vs
trained gap at one layer, and t-SNE maps of both domains coloured by domain and by class.

Every figure carries its numbers in titles, legends or bar labels. Nothing here computes an
analysis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from shenjing.analysis.dann import DannHistory, DomainMap

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: how each training is named on figures
METHOD_NAMES = {"source_only": "source only", "dann": "DANN (GRL)", "mmd": "MMD penalty",
                "coral": "CORAL penalty", "untrained": "untrained"}
_COLOURS = {"source_only": "tab:grey", "dann": "tab:red", "mmd": "tab:blue",
            "coral": "tab:green"}
#: the measures of the gap figure: key → axis label
GAP_MEASURES = {"mmd2": "MMD² (unbiased, multi-kernel)", "coral": "CORAL ‖ΔC‖²_F / 4d²",
                "domain_accuracy": "domain classifier acc. (held out)"}


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=size)
        return fig, ax
    return ax.figure, ax  # type: ignore[return-value]


def plot_target_accuracy(history: DannHistory, *, ax: Axes | None = None) -> Figure:
    """Target accuracy (solid) and source accuracy (dashed) by epoch for each training."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _axes(ax, (6.0, 3.6))
    for method in history.methods:
        e = history.epochs(method)
        colour = _COLOURS.get(method)
        t = history.series(method, "target_accuracy")
        ax.plot(e, t, marker="o", color=colour,
                label=f"{METHOD_NAMES.get(method, method)}: target {t[-1]:.3f}")
        ax.plot(e, history.series(method, "source_accuracy"), ls="--", color=colour, lw=1)
    ax.set_xlabel("epoch (0 = untrained)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy (eval splits)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, title="solid: target, dashed: source", title_fontsize=8)
    ax.set_title("Target accuracy by epoch (target labels used only here)", fontsize=9)
    return fig


def plot_domain_gap(history: DannHistory) -> Figure:
    """MMD², CORAL and the held-out domain classifier's accuracy (rows) by epoch, per
    feature layer (columns), one line per training."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    layers = history.layers
    fig, axes = plt.subplots(len(GAP_MEASURES), len(layers), squeeze=False,
                             figsize=(4.2 * len(layers), 2.6 * len(GAP_MEASURES)))
    for c, layer in enumerate(layers):
        for r, (key, label) in enumerate(GAP_MEASURES.items()):
            ax = axes[r][c]
            for method in history.methods:
                v = history.series(method, key, layer)
                ax.plot(history.epochs(method), v, marker="o", color=_COLOURS.get(method),
                        label=f"{METHOD_NAMES.get(method, method)} {v[-1]:.3g}")
            if key == "domain_accuracy":
                ax.axhline(0.5, color="black", lw=0.8, ls=":")
                ax.set_ylim(0.4, 1.02)
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(f"{layer}: {label.split(' (')[0]}", fontsize=9)
            ax.legend(fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if r == len(GAP_MEASURES) - 1:
                ax.set_xlabel("epoch (0 = untrained)")
    fig.tight_layout()
    return fig


def plot_gap_bars(untrained: Mapping[str, float], trained: Mapping[str, Mapping[str, float]],
                  *, measure: str, layer: str, ax: Axes | None = None) -> Figure:
    """One measure at one layer: untrained vs each training's last epoch, as labelled bars."""
    fig, ax = _axes(ax, (5.0, 3.0))
    names = ["untrained", *trained]
    values = [float(untrained[measure]), *(float(t[measure]) for t in trained.values())]
    bars = ax.bar([METHOD_NAMES.get(n, n) for n in names], values,
                  color=["black", *(_COLOURS.get(n, "tab:purple") for n in trained)])
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
    ax.set_ylabel(GAP_MEASURES.get(measure, measure), fontsize=8)
    ax.set_title(f"{layer}: {GAP_MEASURES.get(measure, measure)}, untrained vs trained",
                 fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    return fig


def plot_domain_maps(maps: Mapping[str, DomainMap], *, domains: Sequence[str],
                     titles: Mapping[str, str] | None = None) -> Figure:
    """One row per map (untrained, each training): t-SNE coloured by domain (left) and by
    class (right, circles source, crosses target)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(maps), 2, squeeze=False, figsize=(8.4, 3.9 * len(maps)))
    cmap = plt.get_cmap("tab10")
    for row, (name, m) in enumerate(maps.items()):
        left, right = axes[row]
        for d, colour in ((0, "tab:blue"), (1, "tab:orange")):
            sel = m.domain == d
            left.scatter(m.coords[sel, 0], m.coords[sel, 1], s=4, color=colour, alpha=0.6,
                         label=f"{domains[d]} ({int(sel.sum())})")
        left.legend(fontsize=7, markerscale=3)
        extra = (titles or {}).get(name, "")
        left.set_title(f"{METHOD_NAMES.get(name, name)}: by domain{extra}", fontsize=8)
        for d, marker in ((0, "o"), (1, "x")):
            sel = m.domain == d
            right.scatter(m.coords[sel, 0], m.coords[sel, 1], s=5 if d == 0 else 8,
                          c=[cmap(int(k) % 10) for k in m.labels[sel]], marker=marker,
                          alpha=0.6, linewidths=0.6)
        from matplotlib.lines import Line2D

        present = sorted({int(k) for k in m.labels})
        right.legend(handles=[Line2D([], [], ls="", marker="s", color=cmap(k % 10),
                                     label=str(k)) for k in present],
                     fontsize=6, ncol=2, title="class", title_fontsize=6)
        right.set_title(f"{METHOD_NAMES.get(name, name)}: by class (o {domains[0]}, "
                        f"x {domains[1]})", fontsize=8)
        for ax in (left, right):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


__all__ = ["plot_domain_gap", "plot_domain_maps", "plot_gap_bars", "plot_target_accuracy"]
