"""Figures of attention: maps over the image, rollout, the query × key matrix, and per-head
distance, entropy and probe accuracy by layer.

Inputs are :class:`shenjing.analysis.attention.EpochAttention` (one epoch) and
:class:`~shenjing.analysis.attention.AttentionStudy` (several epochs). Maps are drawn in the
image's pixel coordinates: the input in grey, the attention over it (one value per patch,
each patch covering its pixels) with transparency ``alpha``. Every panel's title carries
its numbers (the head's mean distance and entropy, the map's maximum), every colour scale
starts at 0 and says where it ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shenjing._labels import epoch0_words
from shenjing.analysis.attention import (
    AttentionStudy,
    EpochAttention,
    map_query,
    uniform_distance,
)
from shenjing.errors import ShapeMismatchError, UsageError
from shenjing.plot._images import input_image
from shenjing.plot.dynamics import bounded, short_name, wrap

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: the attention colour map (dark = little attention, bright = much)
CMAP = "inferno"
#: tokens up to which the matrix view labels every token on its axes
LABEL_TOKENS = 24
PANEL = 1.7  # inches per map panel


def epoch_title(epoch: int) -> str:
    """``'epoch 0 (untrained)'`` / ``'epoch 5'``."""
    return f"epoch {epoch}" + (f" ({epoch0_words()})" if epoch == 0 else "")


def _sample(epoch: EpochAttention, sample: int) -> int:
    n = epoch.patterns.shape[0]
    if not 0 <= sample < n:
        raise UsageError(f"sample {sample}: this result holds {n} input(s); give one from 0 "
                         f"to {n - 1}")
    return sample


def _which(epoch: EpochAttention, s: int) -> str:
    parts = []
    if s < len(epoch.samples):
        parts.append(f"test #{epoch.samples[s]}")
    if s < len(epoch.labels) and epoch.labels[s] is not None:
        parts.append(f"label {epoch.labels[s]}")
    return ", ".join(parts) or f"input {s}"


def _overlay(ax: Any, image: np.ndarray, values: np.ndarray, patch: tuple[int, int], *,
             vmax: float, alpha: float) -> None:
    """The input in grey under ``values`` (rows × cols, one per patch), pixel coordinates."""
    img, cmap = input_image(image)
    h, w = img.shape[:2]
    ax.imshow(img, cmap=cmap, extent=(0, w, h, 0), interpolation="nearest")
    rows, cols = values.shape
    ax.imshow(values, cmap=CMAP, alpha=alpha, vmin=0.0, vmax=vmax,
              extent=(0, cols * patch[1], rows * patch[0], 0), interpolation="nearest")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _limit(values: np.ndarray) -> float:
    top = float(np.max(values)) if values.size else 0.0
    return top if top > 0 else 1.0


def _colourbar(fig: Any, axes: Any, vmax: float, label: str) -> None:
    from matplotlib import cm
    from matplotlib.colors import Normalize

    mappable = cm.ScalarMappable(norm=Normalize(0.0, vmax), cmap=CMAP)
    fig.colorbar(mappable, ax=axes, fraction=0.025, pad=0.01, label=label)


def plot_attention_maps(epoch: EpochAttention, sample: int = 0, *, alpha: float = 0.6
                        ) -> Figure:
    """Layer × head grid of CLS → patch attention for one input, over the image.

    Row = layer, column 0 = the mean of the layer's heads, then one column per head. Each
    panel: the input in grey, the attention of the CLS token to each patch over it
    (colour 0 → the layer's largest value, shared by the row so heads compare), titled with
    the head's mean attention distance and entropy (averaged over the epoch's many inputs)
    and the map's maximum. Without a patch grid, draw :func:`plot_attention_matrix`.
    """
    import matplotlib.pyplot as plt

    if epoch.maps is None:
        raise ShapeMismatchError(f"no patch grid to draw maps on: {epoch.layout.reason}; "
                                 "draw the query × key matrix (plot_attention_matrix)")
    s = _sample(epoch, sample)
    maps = epoch.maps[s]  # (layers, heads, rows, cols)
    n_layers, n_heads = maps.shape[:2]
    stats = epoch.stats
    fig, axes = plt.subplots(n_layers, n_heads + 1, squeeze=False, layout="constrained",
                             figsize=bounded(PANEL * (n_heads + 1) + 1.0,
                                             PANEL * n_layers + 1.0))
    uniform = 1.0 / epoch.layout.n_tokens
    for li in range(n_layers):
        vmax = _limit(maps[li])
        mean = maps[li].mean(axis=0)
        panels = [("mean of heads", mean, None), *[(f"head {h}", maps[li, h], h)
                                                   for h in range(n_heads)]]
        for col, (name, values, head) in enumerate(panels):
            ax = axes[li, col]
            _overlay(ax, epoch.images[s], values, epoch.layout.patch, vmax=vmax, alpha=alpha)
            ax.set_label(f"{epoch.layers[li]}/{name}")
            title = (f"{short_name(epoch.layers[li], 18)} {name}\nmax {values.max():.3f}, "
                 f"{values.sum():.0%} on patches")
            if head is not None:
                title += "\n"
                if stats.distance is not None:
                    title += f"d {stats.distance[li, head]:.1f}px, "
                title += f"H {stats.entropy[li, head]:.2f}"
            ax.set_title(title, fontsize=7)
        _colourbar(fig, axes[li, :], vmax, "attention")
    fig.suptitle(wrap(f"{map_query(epoch.layout)} → patch attention · {_which(epoch, s)} · "
                      f"{epoch_title(epoch.epoch)} · colour 0 → each row's max (uniform = "
                      f"{uniform:.3f}); d = mean attention distance, H = entropy (nats), "
                      f"means over {stats.n_samples} test inputs", PANEL * (n_heads + 1),
                      9), fontsize=9)
    return fig


def plot_attention_rollout(epochs: EpochAttention | Sequence[EpochAttention], sample: int = 0, *,
                 alpha: float = 0.6) -> Figure:
    """Attention rollout through all layers (CLS row) over the input, one panel per epoch.

    The first panel is the input alone; each next one its rollout at an epoch, on one
    colour scale 0 → the largest value of all epochs (so a flat untrained rollout looks
    flat), titled with the maximum, its patch and the share of the CLS token's rollout
    that reaches the patches (the rest stays on prefix tokens).
    """
    import matplotlib.pyplot as plt

    chosen = [epochs] if isinstance(epochs, EpochAttention) else list(epochs)
    if not chosen:
        raise UsageError("plot_attention_rollout needs at least one epoch")
    for e in chosen:
        if e.rollout_map is None or e.rollout is None:
            raise ShapeMismatchError(f"no rollout map for epoch {e.epoch}: "
                                     f"{e.layout.reason or 'the layers differ in tokens'}")
    s = _sample(chosen[0], sample)
    fig, axes = plt.subplots(1, len(chosen) + 1, squeeze=False, layout="constrained",
                             figsize=bounded(2.4 * (len(chosen) + 1) + 0.8, 3.4))
    img, cmap = input_image(chosen[0].images[s])
    first = axes[0, 0]
    first.imshow(img, cmap=cmap, interpolation="nearest")
    first.set_xticks([])
    first.set_yticks([])
    first.set_title(f"input\n{_which(chosen[0], s)}", fontsize=8)
    first.set_label("input")
    layout = chosen[0].layout
    vmax = _limit(np.stack([e.rollout_map[s, -1] for e in chosen  # type: ignore[index]
                            ]))
    for col, e in enumerate(chosen, start=1):
        assert e.rollout_map is not None and e.rollout is not None
        values = e.rollout_map[s, -1]
        ax = axes[0, col]
        _overlay(ax, e.images[s], values, layout.patch, vmax=vmax, alpha=alpha)
        r, c = np.unravel_index(int(np.argmax(values)), values.shape)
        reach = float(values.sum())
        ax.set_title(f"{epoch_title(e.epoch)}\nmax {values.max():.3f} at patch ({r}, {c})\n"
                     f"{reach:.0%} on patches", fontsize=8)
        ax.set_label(f"epoch {e.epoch}")
    _colourbar(fig, axes[0, 1:], vmax, "rollout")
    fig.suptitle(wrap(f"Attention rollout ({map_query(layout)} row, through "
                      f"{len(chosen[0].layers)} layers: heads averaged, 0.5·A + 0.5·I, "
                      f"rows renormalised, multiplied) · colour 0 → {vmax:.3f}, shared by "
                      f"the epochs (uniform over patches = {1 / layout.n_patches:.3f}) · "
                      f"{layout.describe()}",
                      2.4 * (len(chosen) + 1), 9), fontsize=9)
    return fig


def _token_names(layout: Any, n: int) -> list[str]:
    if layout.grid:
        prefix = ["CLS"] + [f"p{i}" for i in range(1, layout.n_prefix)]
        names = prefix[:layout.n_prefix] + [
            f"{r},{c}" for r in range(layout.rows) for c in range(layout.cols)]
        return names[:n]
    return [str(i) for i in range(n)]


def plot_attention_matrix(epoch: EpochAttention, sample: int = 0, *,
                          layers: Sequence[int] | None = None) -> Figure:
    """Layer × head grid of the full query × key attention matrices for one input.

    Rows of each matrix are the queries, columns the keys (each row sums to 1); colour 0 →
    the figure's maximum. Titles give each head's entropy. Drawn for small token counts and
    whenever the tokens form no patch grid (the title then says why).
    """
    import matplotlib.pyplot as plt

    s = _sample(epoch, sample)
    pats = epoch.patterns[s]
    chosen = list(range(pats.shape[0])) if layers is None else list(layers)
    n_heads = pats.shape[1]
    fig, axes = plt.subplots(len(chosen), n_heads, squeeze=False, layout="constrained",
                             figsize=bounded(PANEL * 1.2 * n_heads + 1.2,
                                             PANEL * 1.2 * len(chosen) + 1.2))
    vmax = _limit(pats[chosen])
    n_q, n_k = pats.shape[-2:]
    names_q = _token_names(epoch.layout, n_q)
    names_k = _token_names(epoch.layout, n_k)
    for row, li in enumerate(chosen):
        for h in range(n_heads):
            ax = axes[row, h]
            ax.imshow(pats[li, h], cmap=CMAP, vmin=0.0, vmax=vmax, interpolation="nearest",
                      aspect="auto")
            ax.set_label(f"{epoch.layers[li]}/head {h}")
            ax.set_title(f"{short_name(epoch.layers[li], 18)} head {h}\n"
                         f"H {epoch.stats.entropy[li, h]:.2f} nats", fontsize=7)
            small = max(n_q, n_k) <= LABEL_TOKENS
            if small and h == 0:
                ax.set_yticks(range(n_q), names_q, fontsize=4)
            else:
                ax.set_yticks([])
            if small and row == len(chosen) - 1:
                ax.set_xticks(range(n_k), names_k, fontsize=4, rotation=90)
            else:
                ax.set_xticks([])
            if h == 0:
                ax.set_ylabel("query", fontsize=7)
            if row == len(chosen) - 1:
                ax.set_xlabel("key", fontsize=7)
    _colourbar(fig, axes, vmax, "attention")
    why = ("" if epoch.layout.grid else
           f" · no patch grid: {epoch.layout.reason}")
    fig.suptitle(wrap(f"Query × key attention · {_which(epoch, s)} · "
                      f"{epoch_title(epoch.epoch)} · {n_q}×{n_k} tokens, colour 0 → "
                      f"{vmax:.3f} (uniform = {1 / n_k:.3f}){why}",
                      PANEL * 1.2 * n_heads + 1.2, 9), fontsize=9)
    return fig


def _per_head(study: AttentionStudy, what: str, *, ax: Any, ylabel: str,
              reference: float | None, ref_label: str) -> Any:
    import matplotlib.pyplot as plt

    if ax is None:
        n = len(study.layers)
        fig, ax = plt.subplots(figsize=bounded(max(5.0, 0.9 * n + 2.5), 4.0))
    else:
        fig = ax.figure
    shown = [study.epochs[0], study.epochs[-1]] if len(study.epochs) > 1 else [study.epochs[0]]
    x = np.arange(len(study.layers))
    styles = [dict(facecolors="none", edgecolors="0.45", marker="o"),
              dict(color="C3", marker="o")]
    offsets = [-0.12, 0.12] if len(shown) > 1 else [0.0]
    for k, (e, style, dx) in enumerate(zip(shown, styles[-len(shown):], offsets,
                                           strict=True)):
        values = getattr(e.stats, what)
        if values is None:
            raise ShapeMismatchError(f"no {what} per head: {e.layout.reason}")
        n_heads = values.shape[1]
        xs = np.repeat(x, n_heads) + dx
        means = values.mean(axis=1)
        label = (f"{epoch_title(e.epoch)}: layer means "
                 + ", ".join(f"{m:.2f}" for m in means))
        ax.scatter(xs, values.ravel(), s=22, label=label, zorder=3, **style)
        ax.plot(x + dx, means, color="0.45" if k == 0 and len(shown) > 1 else "C3",
                lw=1, ls="--" if k == 0 and len(shown) > 1 else "-", zorder=2)
    if reference is not None:
        ax.axhline(reference, color="0.6", lw=0.8, ls=":", label=ref_label)
    ax.set_xticks(x, [short_name(n, 14) for n in study.layers], rotation=30, ha="right",
                  fontsize=8)
    ax.set_xlabel("attention layer (network depth →)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return fig, ax, shown


def plot_attention_distance(study: AttentionStudy, *, ax: Any = None) -> Figure:
    """Mean attention distance (pixels) of every head by layer: one dot per head, the first
    epoch hollow grey, the last red, the layer means joined (Dosovitskiy et al., Fig. 7)."""
    e = study.epochs[-1]
    patch = e.layout.patch
    diag = float(np.hypot(*(e.layout.image or (0, 0))))
    reference = uniform_distance(e.layout) if e.layout.grid else None
    fig, ax, shown = _per_head(study, "distance", ax=ax, ylabel="mean attention distance (px)",
                               reference=reference,
                               ref_label=f"uniform over the patches: {reference or 0:.2f} px")
    title = (f"Mean attention distance per head · {len(shown)} epoch(s) · "
             f"{e.layout.rows}×{e.layout.cols} patches of {patch[0]} px, image diagonal "
             f"{diag:.1f} px · over {e.stats.n_samples} test inputs")
    if study.change is not None:
        counts = study.change.counts()
        title += " · " + ", ".join(f"{n} {w}" for w, n in sorted(counts.items()))
        title += f" (steady: moved < {study.change.steady_pixels or 0:.2g} px)"
    ax.set_title(wrap(title, 6.0, 9), fontsize=9)
    return fig


def plot_attention_entropy(study: AttentionStudy, *, ax: Any = None) -> Figure:
    """Attention entropy (nats) of every head by layer, first epoch vs last, with the
    entropy of uniform attention (``log keys``) dotted: low = focused heads."""
    e = study.epochs[-1]
    fig, ax, shown = _per_head(study, "entropy", ax=ax, ylabel="attention entropy (nats)",
                               reference=e.stats.max_entropy,
                               ref_label=f"uniform over {e.stats.n_keys} keys: "
                                         f"{e.stats.max_entropy:.2f}")
    ax.set_title(wrap(f"Attention entropy per head · {len(shown)} epoch(s) · mean over "
                      f"queries and {e.stats.n_samples} test inputs", 6.0, 9), fontsize=9)
    return fig


def plot_attention_probe(study: AttentionStudy, *, ax: Any = None) -> Figure:
    """Linear-probe test accuracy by layer of the CLS token and of the mean patch token,
    first epoch dashed, last solid, chance dotted; each point labelled with its value."""
    import matplotlib.pyplot as plt

    probed = [e for e in study.epochs if e.probe is not None]
    if not probed:
        raise UsageError("no probe in this study (the task is not classification, or the "
                         "probe was not run)")
    shown = [probed[0], probed[-1]] if len(probed) > 1 else probed
    if ax is None:
        fig, ax = plt.subplots(figsize=bounded(max(5.0, 0.9 * len(study.layers) + 2.5), 4.0))
    else:
        fig = ax.figure
    x = np.arange(len(study.layers))
    names = {"cls": "CLS token" if study.layout.n_prefix else "token 0",
             "mean": "mean patch token"}
    colours = {"cls": "C0", "mean": "C2"}
    for k, e in enumerate(shown):
        assert e.probe is not None
        last = k == len(shown) - 1
        for f, acc in e.probe.accuracy.items():
            ax.plot(x, acc, marker="o", color=colours.get(f, "C4"), ls="-" if last else "--",
                    alpha=1.0 if last else 0.55,
                    label=f"{names.get(f, f)}, {epoch_title(e.epoch)}: best "
                          f"{acc.max():.1%}")
            if last:
                for xi, a in zip(x, acc, strict=True):
                    ax.annotate(f"{a:.0%}", (xi, a), textcoords="offset points",
                                xytext=(0, 5), ha="center", fontsize=7)
    chance = shown[-1].probe.chance if shown[-1].probe is not None else 0.0
    ax.axhline(chance, color="0.6", ls=":", lw=0.8, label=f"chance {chance:.1%}")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(x, [short_name(n, 14) for n in study.layers], rotation=30, ha="right",
                  fontsize=8)
    ax.set_xlabel("attention layer (its input tokens)")
    ax.set_ylabel("linear-probe test accuracy")
    p = shown[-1].probe
    assert p is not None
    ax.set_title(wrap(f"Probe accuracy by layer · logistic regression on {p.n_train} train "
                      f"→ {p.n_test} test inputs", 6.0, 9), fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return fig
