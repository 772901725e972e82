"""Figures of feature embeddings: one scatter, a layers × epochs grid, probe accuracy, CKA.

Each function takes results computed in :mod:`shenjing.analysis` and returns a matplotlib
``Figure``; none computes anything itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shenjing._labels import epoch0_words

_METHOD_NAMES = {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}

# Tableau's categorical palettes (matplotlib's tab10 and tab20), as hex so the plotly maps of
# the report need no matplotlib to colour classes the same way
_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")
_TAB20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728",
          "#ff9896", "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2",
          "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5")

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def class_colors(n_classes: int) -> list[str]:
    """One colour per class id (hex), the same in every map, matplotlib or plotly.

    The colour depends on the class id and the number of classes only, never on which
    classes a map happens to show, so class 7 has the same colour in every figure of a run.

    >>> class_colors(3)
    ['#1f77b4', '#ff7f0e', '#2ca02c']
    """
    palette = _TAB10 if n_classes <= 10 else _TAB20
    return [palette[i % len(palette)] for i in range(max(int(n_classes), 0))]


def method_name(method: str) -> str:
    return _METHOD_NAMES.get(method, method)


def metrics_line(metrics: Mapping[str, Any]) -> str:
    """``'trust 0.97 · kNN recall 0.41 · probe 0.97'`` from whichever numbers are present."""
    parts = []
    for key, label in (("probe_accuracy", "probe"), ("knn_accuracy", "kNN acc"),
                       ("trustworthiness", "trust"), ("knn_recall", "kNN recall"),
                       ("knn_accuracy_2d", "2-D kNN")):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and value == value:
            parts.append(f"{label} {value:.3f}")
    return " · ".join(parts)


def _class_names(labels: np.ndarray, classes: Sequence[str] | None) -> dict[int, str]:
    return {int(c): (str(classes[int(c)]) if classes is not None and int(c) < len(classes)
                     else str(int(c))) for c in np.unique(labels)}


def _scatter(ax: Any, coords: np.ndarray, labels: np.ndarray | None,
             classes: Sequence[str] | None, size: float, legend: bool) -> None:
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=size, c="tab:blue", linewidths=0)
        return
    labels = np.asarray(labels).astype(int)
    names = _class_names(labels, classes)
    colors = class_colors(max(len(classes or ()), int(labels.max(initial=-1)) + 1))
    for c, name in names.items():
        pick = labels == c
        ax.scatter(coords[pick, 0], coords[pick, 1], s=size, color=colors[c % len(colors)],
                   label=name, linewidths=0)
    if legend:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small",
                  markerscale=max(1.0, 12.0 / max(size, 1.0)), frameon=False, title="class")


def plot_embedding(embedding: Any, labels: Any = None, *, classes: Sequence[str] | None = None,
                   title: str | None = None, ax: Any = None,
                   point_size: float | None = None) -> Figure:
    """Scatter of a 2-D :class:`~shenjing.analysis.embed.Embedding`, coloured by class.

    The title carries the map's numbers (probe accuracy, trustworthiness …) when present
    in ``embedding.metrics``. Returns the Figure.

    >>> import numpy as np
    >>> from shenjing.analysis.embed import embed
    >>> emb = embed(np.random.default_rng(0).normal(size=(30, 5)), method="pca")
    >>> fig = plot_embedding(emb, labels=np.arange(30) % 3)
    >>> fig.axes[0].get_xlabel(), len(fig.axes[0].collections)
    ('PCA 1', 3)
    """
    import matplotlib.pyplot as plt

    coords = np.asarray(embedding.coords)
    labels = embedding.labels if labels is None else np.asarray(labels)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 5.2))
    else:
        fig = ax.figure
    size = point_size if point_size is not None else float(np.clip(4000 / len(coords), 2, 30))
    _scatter(ax, coords, labels, classes, size, legend=True)
    head = title or f"{method_name(embedding.method)} of {embedding.n_samples} samples"
    line = metrics_line(embedding.metrics)
    ax.set_title(head + (f"\n{line}" if line else ""), fontsize="medium")
    ax.set_xlabel(f"{method_name(embedding.method)} 1")
    ax.set_ylabel(f"{method_name(embedding.method)} 2")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def plot_embedding_grid(embeddings: Mapping[tuple[str, int], Any], *,
                        classes: Sequence[str] | None = None, title: str | None = None,
                        panel_size: float = 2.8) -> Figure:
    """Small multiples: one row per layer, one column per epoch, ``(layer, epoch) → Embedding``.

    Each panel is titled ``layer · epoch N`` with its numbers below; one shared legend.
    """
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(k[0] for k in embeddings))
    epochs = sorted(dict.fromkeys(k[1] for k in embeddings))
    fig, axes = plt.subplots(len(layers), len(epochs), squeeze=False,
                             figsize=(panel_size * len(epochs) + 1.2, panel_size * len(layers)))
    handles = None
    for r, layer in enumerate(layers):
        for c, epoch in enumerate(epochs):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            emb = embeddings.get((layer, epoch))
            if emb is None:
                ax.set_axis_off()
                continue
            coords = np.asarray(emb.coords)
            _scatter(ax, coords, emb.labels, classes,
                     float(np.clip(1500 / len(coords), 1, 12)), legend=False)
            line = metrics_line({k: emb.metrics.get(k) for k in
                                 ("probe_accuracy", "trustworthiness")})
            ax.set_title(f"{layer} · epoch {epoch}" + (f"\n{line}" if line else ""),
                         fontsize="small")
            if handles is None and emb.labels is not None:
                handles = ax.get_legend_handles_labels()
    if handles is not None:
        fig.legend(*handles, loc="center right", fontsize="small", frameon=False,
                   markerscale=3, title="class")
    method = next(iter(embeddings.values())).method if embeddings else ""
    fig.suptitle(title or f"{method_name(method)} maps by layer and epoch (aligned)")
    fig.tight_layout(rect=(0, 0, 0.9 if handles else 1, 1))
    return fig


def plot_separability(records: Sequence[Mapping[str, Any]], *,
                      baseline: Mapping[str, Any] | None = None,
                      metric: str = "probe_accuracy", ax: Any = None,
                      title: str | None = None, epoch0: str | None = None) -> Figure:
    """Accuracy of a layer's features by epoch, one line per layer; the input as a baseline.

    ``records``: dicts with ``layer``, ``epoch`` and ``metric`` (``probe_accuracy`` or
    ``knn_accuracy``), as saved in ``embeddings/separability.json``. ``epoch0`` says what
    epoch 0 is on the x axis (``"a fresh seeded initialisation"`` for an ``inspect`` run
    without ``--init-weights``).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
    else:
        fig = ax.figure
    layers = list(dict.fromkeys(r["layer"] for r in records))
    for layer in layers:
        rows = sorted((r for r in records if r["layer"] == layer), key=lambda r: r["epoch"])
        ax.plot([r["epoch"] for r in rows], [r[metric] for r in rows], marker="o", label=layer)
    if baseline is not None and metric in baseline:
        ax.axhline(baseline[metric], color="grey", linestyle="--",
                   label=f"input pixels ({baseline[metric]:.3f})")
    label = {"probe_accuracy": "linear-probe accuracy (test)",
             "knn_accuracy": "kNN accuracy (test)"}.get(metric, metric)
    ax.set_xlabel(f"epoch (0 = {(epoch0 or epoch0_words()).removeprefix('the ')})")
    ax.set_ylabel(label)
    epochs = sorted({r["epoch"] for r in records})
    ax.set_xticks(epochs)
    values = [r[metric] for r in records if isinstance(r.get(metric), (int, float))]
    if baseline is not None and metric in baseline:
        values.append(baseline[metric])
    # zoom to the data (accuracies of trained layers sit close together), never below 0
    ax.set_ylim(max(0.0, min(values, default=0.0) - 0.1), 1.005)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or f"{label.split(' (')[0]} by layer and epoch")
    return fig


def plot_cka(result: Any, *, names: Sequence[str] | None = None, ax: Any = None,
             title: str | None = None, annotate: bool | None = None) -> Figure:
    """Heat map of a CKA matrix (:class:`~shenjing.analysis.cka.CKAResult` or an array).

    Colour limits are fixed to [0, 1] so maps from different runs compare.
    """
    import matplotlib.pyplot as plt

    matrix = np.asarray(getattr(result, "matrix", result), dtype=float)
    if names is None:
        names = getattr(result, "names", None) or [str(i) for i in range(len(matrix))]
    names = list(names)
    k = len(names)
    if ax is None:
        side = max(3.5, 0.55 * k + 2)
        fig, ax = plt.subplots(figsize=(side + 1, side))
    else:
        fig = ax.figure
    im = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma")
    ax.set_xticks(range(k), [str(n) for n in names], rotation=45, ha="right")
    ax.set_yticks(range(k), [str(n) for n in names])
    if annotate if annotate is not None else k <= 12:
        for i in range(k):
            for j in range(k):
                v = matrix[i, j]
                ax.text(j, i, "–" if v != v else f"{v:.2f}", ha="center", va="center",
                        fontsize="x-small", color="black" if v > 0.6 else "white")
    fig.colorbar(im, ax=ax, label="linear CKA")
    ax.set_title(title or "linear CKA between layers")
    return fig
