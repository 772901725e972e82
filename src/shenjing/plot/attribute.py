"""Figures of attribution: maps on their inputs, the randomization cascade, and the
deletion/insertion curves.

The functions take plain arrays and numbers (what the attribution study holds), so a
notebook can draw any maps, whatever computed them. Every panel carries its numbers in its
title: the class explained and its probability, IG's completeness error, the Spearman/SSIM
of each randomization stage, the AUCs next to the random baseline's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shenjing.errors import ShapeMismatchError, UsageError
from shenjing.plot._images import input_image
from shenjing.plot.dynamics import bounded, wrap

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: attribution colour map: signed maps are drawn symmetric around 0 (blue −, red +)
CMAP_SIGNED = "bwr"
#: unsigned maps (Grad-CAM, saliency, occlusion magnitudes) from 0 up
CMAP_UNSIGNED = "inferno"
PANEL = 1.9  # inches per map panel


def epoch_name(epoch: int) -> str:
    """``'epoch 0 (untrained)'`` / ``'epoch 5'``."""
    from shenjing._labels import epoch0_words

    return f"epoch {epoch}" + (f" ({epoch0_words()})" if epoch == 0 else "")


def _limits(values: np.ndarray) -> tuple[float, float, str]:
    """Colour limits and map: symmetric around 0 when the map has both signs."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if lo < 0 < hi or (lo < 0 and hi <= 0):
        top = max(abs(lo), abs(hi)) or 1.0
        return -top, top, CMAP_SIGNED
    return 0.0, (hi if hi > 0 else 1.0), CMAP_UNSIGNED


def overlay(ax: Any, image: np.ndarray, values: np.ndarray, *, alpha: float = 0.6) -> Any:
    """The input in grey (or colour) under the map ``values`` ``(H, W)``; returns the map's
    image artist."""
    img, cmap = input_image(image)
    ax.imshow(img, cmap=cmap, interpolation="nearest")
    vmin, vmax, vcmap = _limits(values)
    art = ax.imshow(values, cmap=vcmap, vmin=vmin, vmax=vmax, alpha=alpha,
                    interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return art


def plot_attribution_maps(image: np.ndarray, maps: np.ndarray, *, methods: Sequence[str],
                          epochs: Sequence[int], targets: Sequence[Any],
                          probabilities: Sequence[float],
                          completeness: Mapping[str, Sequence[float | None]] | None = None,
                          sample: str = "", alpha: float = 0.6) -> Figure:
    """One input's maps: rows = methods, columns = epochs, each on the input.

    ``image`` ``(C, H, W)``; ``maps`` ``(methods, epochs, H, W)``; ``targets`` and
    ``probabilities`` per epoch (the class explained and the model's probability of it);
    ``completeness`` per method per epoch: IG's relative completeness error (None where the
    method has none). Each panel's title: method, epoch, target, probability, the map's
    range, and the completeness error where there is one.
    """
    import matplotlib.pyplot as plt

    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4 or maps.shape[:2] != (len(methods), len(epochs)):
        raise ShapeMismatchError(
            f"maps must be (methods, epochs, H, W) = ({len(methods)}, {len(epochs)}, H, W), "
            f"got {tuple(maps.shape)}")
    if len(targets) != len(epochs) or len(probabilities) != len(epochs):
        raise ShapeMismatchError(f"targets and probabilities need one value per epoch "
                                 f"({len(epochs)}), got {len(targets)} and "
                                 f"{len(probabilities)}")
    n_rows, n_cols = len(methods), len(epochs) + 1
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, layout="constrained",
                             figsize=bounded(PANEL * n_cols + 0.6, PANEL * n_rows + 1.0))
    img, cmap = input_image(image)
    for r, method in enumerate(methods):
        first = axes[r, 0]
        first.imshow(img, cmap=cmap, interpolation="nearest")
        first.set_xticks([])
        first.set_yticks([])
        first.set_title(f"input {sample}".strip(), fontsize=7)
        first.set_ylabel(method, fontsize=9)
        first.set_label("input")
        for c, epoch in enumerate(epochs):
            ax = axes[r, c + 1]
            values = maps[r, c]
            overlay(ax, image, values, alpha=alpha)
            ax.set_label(f"{method}/epoch {epoch}")
            title = (f"{method} · {epoch_name(epoch)}\ntarget {targets[c]}, "
                     f"p {float(probabilities[c]):.3f}\nrange {values.min():.2g} … "
                     f"{values.max():.2g}")
            errs = (completeness or {}).get(method)
            err = None if errs is None else errs[c]
            if err is not None:
                title += f"\ncompleteness err {float(err):.2%}"
            ax.set_title(title, fontsize=7)
    fig.suptitle(wrap(f"What the network looks at · {sample} · rows: methods, columns: "
                      "epochs; red = evidence for the target, blue = against (signed maps), "
                      "bright = large (unsigned maps)", PANEL * n_cols, 9), fontsize=9)
    return fig


def plot_randomization(image: np.ndarray, maps: np.ndarray, *, layers: Sequence[str],
                       spearman: Sequence[float], ssim: Sequence[float], passed: bool,
                       method: str, rule: str = "", sample: str = "",
                       n_inputs: int | None = None, outcome: str | None = None) -> Figure:
    """The cascading randomization test of one method: the trained map, then the map after
    each cumulative re-initialisation (top layer first), with Spearman and SSIM to the
    trained map by stage and the PASS/FAIL verdict.

    ``maps`` ``(1 + stages, H, W)``: the trained map first; ``layers`` (stages) the layer
    randomized last at each stage; ``spearman``/``ssim`` (stages) the similarity of that
    stage's map to the trained one (means over the test's ``n_inputs`` inputs, drawn: the
    first).
    """
    import matplotlib.pyplot as plt

    maps = np.asarray(maps, dtype=np.float64)
    n = len(layers)
    if maps.ndim != 3 or maps.shape[0] != n + 1 or len(spearman) != n or len(ssim) != n:
        raise ShapeMismatchError(
            f"randomization: maps must be (1 + stages, H, W) with one Spearman and SSIM per "
            f"stage ({n}), got maps {tuple(maps.shape)}, {len(spearman)} Spearman, "
            f"{len(ssim)} SSIM")
    if n == 0:
        raise UsageError("randomization: no stage to draw (the model has no layer with "
                         "parameters)")
    fig = plt.figure(layout="constrained",
                     figsize=bounded(max(6.0, PANEL * (n + 1) * 0.8), PANEL * 0.9 + 3.6))
    grid = fig.add_gridspec(2, n + 1, height_ratios=[1, 1.6])
    for k in range(n + 1):
        ax = fig.add_subplot(grid[0, k])
        overlay(ax, image, maps[k])
        if k == 0:
            ax.set_title("trained\n(reference)", fontsize=7)
            ax.set_label("trained")
        else:
            ax.set_title(f"… {layers[k - 1]}\nρ {spearman[k - 1]:.2f}, SSIM "
                         f"{ssim[k - 1]:.2f}", fontsize=7)
            ax.set_label(f"randomized {layers[k - 1]}")
    curve = fig.add_subplot(grid[1, :])
    x = np.arange(1, n + 1)
    curve.plot(x, spearman, "o-", color="C0", label="Spearman ρ (|map|)")
    curve.plot(x, ssim, "s--", color="C1", label="SSIM (|map|)")
    curve.axhline(0.0, color="0.6", lw=0.8, ls=":")
    curve.set_xticks(x, list(layers), rotation=30, ha="right", fontsize=7)
    curve.set_xlabel("layers randomized, cumulatively from the output down")
    curve.set_ylabel("similarity to the trained map")
    curve.set_ylim(min(-0.2, float(np.min(spearman)) - 0.05,
                       float(np.min(ssim)) - 0.05), 1.05)
    curve.legend(fontsize=7, loc="upper right")
    curve.grid(alpha=0.3)
    curve.set_label("similarity")
    verdict = (outcome or ("pass" if passed else "fail")).upper()
    curve.set_title(f"{verdict}: Spearman {spearman[0]:.2f} → {spearman[-1]:.2f}, SSIM "
                    f"{ssim[0]:.2f} → {ssim[-1]:.2f}" + (f" ({rule})" if rule else ""),
                    fontsize=9, color={"PASS": "C2", "PARTIAL": "C1"}.get(verdict, "C3"),
                    fontweight="bold")
    fig.suptitle(wrap(f"Cascading randomization test (Adebayo et al. 2018) · {method} · "
                      f"{sample} · a method that explains the model must change as its "
                      "layers are re-initialised"
                      + (f" · ρ, SSIM: means over {n_inputs} inputs" if n_inputs else ""),
                      PANEL * (n + 1) * 0.8, 9), fontsize=9)
    return fig


def plot_deletion_insertion(fractions: np.ndarray, curves: Mapping[str, Mapping[str, Any]],
                            *, n_samples: int, ax: Any = None) -> Figure:
    """Deletion and insertion curves (mean target probability vs fraction of pixels
    removed/inserted, most-attributed first) per method, against a random order, AUCs in
    the legend.

    ``curves[method]`` holds ``deletion``, ``insertion`` (fractions,) and their AUCs
    ``deletion_auc``, ``insertion_auc``; the key ``"random"`` holds the random order's.
    Two axes side by side (deletion, insertion); ``ax`` is a pair of axes or None.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, axes = plt.subplots(1, 2, layout="constrained", figsize=(9.0, 3.8))
    else:
        axes = list(ax)
        if len(axes) != 2:
            raise UsageError("plot_deletion_insertion draws two axes: give ax=(left, right)")
        fig = axes[0].figure
    xs = np.asarray(fractions, dtype=np.float64)
    for side, (kind, better) in zip(axes, (("deletion", "lower"), ("insertion", "higher")),
                                    strict=True):
        for k, (method, rec) in enumerate(curves.items()):
            ys = np.asarray(rec[kind], dtype=np.float64)
            style = dict(color="0.5", ls=":") if method == "random" else dict(color=f"C{k}")
            side.plot(xs, ys, marker=".", label=f"{method}: AUC {float(rec[f'{kind}_auc']):.3f}",
                      **style)
        side.set_xlabel(f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}"
                        " (most attributed first)")
        side.set_ylabel("target probability (mean)")
        side.set_ylim(-0.02, 1.02)
        side.set_title(f"{kind.capitalize()} ({better} AUC = more faithful)", fontsize=9)
        side.legend(fontsize=7)
        side.grid(alpha=0.3)
        side.set_label(kind)
    fig.suptitle(f"Deletion / insertion (Petsiuk et al. 2018) over {n_samples} test inputs",
                 fontsize=9)
    return fig


__all__ = ["overlay", "plot_attribution_maps", "plot_deletion_insertion",
           "plot_randomization"]
