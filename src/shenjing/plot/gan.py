"""Draw what a GAN's generator learned: sample grids (across epochs, final), the class
histogram across epochs, the losses and D(·) curves, classes covered and Fréchet distance by
epoch, a latent interpolation, and samples beside their nearest training images.

Images are the generator's [−1, 1] pixels on one fixed grey scale (−1 black, 1 white),
tiled into one picture per grid, so brightness compares across epochs. Every figure carries
its numbers (classes covered, Fréchet distance, predicted class and confidence, distances).
Nothing here computes an analysis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from shenjing.analysis.gan import GanHistory, Interpolation

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _grey(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    return img.mean(axis=0) if img.ndim == 3 else img


def tile(images: np.ndarray, n_cols: int, *, pad: int = 1, top: int = 0) -> np.ndarray:
    """Images ``(n, channels, height, width)`` → one 2-D mosaic, ``n_cols`` per row, with
    ``pad`` pixels between them and ``top`` more above each row (room for a label), all at
    −1 (channels averaged).

    >>> tile(np.ones((3, 1, 2, 2)), 2).shape
    (5, 5)
    """
    grey = [_grey(im) for im in images]
    h, w = grey[0].shape
    n_rows = -(-len(grey) // n_cols)
    row = h + pad + top
    mosaic = np.full((n_rows * row - pad, n_cols * (w + pad) - pad), -1.0)
    for i, im in enumerate(grey):
        r, c = divmod(i, n_cols)
        mosaic[r * row + top:r * row + top + h, c * (w + pad):c * (w + pad) + w] = im
    return mosaic


#: epochs (rows) the class histogram shows at most
MAX_HISTOGRAM_ROWS = 21


def shown_rows(n: int, most: int) -> np.ndarray:
    """``most`` evenly spaced indices of ``n`` (all when ``n ≤ most``), first and last kept.

    >>> shown_rows(201, 5).tolist()
    [0, 50, 100, 150, 200]
    """
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(int))


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=size)
        return fig, ax
    return ax.figure, ax  # type: ignore[return-value]


def _marker(history: GanHistory) -> str | None:
    """Dots on the lines while they can be told apart (a few dozen epochs)."""
    return "o" if len(history.epochs) <= 40 else None


def _label(classes: Sequence[str] | None, k: int) -> str:
    return str(classes[k]) if classes is not None and k < len(classes) else str(k)


def plot_sample_grid(samples: np.ndarray, *, predictions: np.ndarray | None = None,
                     confidences: np.ndarray | None = None,
                     classes: Sequence[str] | None = None, title: str = "",
                     n_cols: int = 8, ax: Axes | None = None) -> Figure:
    """A grid of generated images ``(n, channels, height, width)`` in [−1, 1], each marked
    with the classifier's predicted class and confidence when given."""
    samples = np.asarray(samples)
    h, w = samples.shape[-2:]
    top = max(2, h // 3) if predictions is not None else 0  # a strip for each label
    fig, ax = _axes(ax, (6.4, 6.4 * (-(-len(samples) // n_cols)) / n_cols + 0.5))
    ax.imshow(tile(samples, n_cols, top=top), cmap="gray", vmin=-1, vmax=1,
              interpolation="nearest")
    if predictions is not None:
        for i in range(len(samples)):
            r, c = divmod(i, n_cols)
            text = _label(classes, int(predictions[i]))
            if confidences is not None:
                text += f" {float(confidences[i]):.2f}"
            ax.text(c * (w + 1) + w / 2 - 0.5, r * (h + 1 + top) + top / 2 - 0.5, text,
                    fontsize=6, color="yellow", va="center", ha="center")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{len(samples)} generated samples", fontsize=9)
    return fig


def plot_samples_over_epochs(grids: Mapping[int, np.ndarray], history: GanHistory) -> Figure:
    """The fixed-z grid at several epochs side by side, each titled with its classes covered
    and Fréchet distance."""
    import matplotlib.pyplot as plt

    epochs = sorted(grids)
    fig, axes = plt.subplots(1, len(epochs), figsize=(2.6 * len(epochs), 3.0), squeeze=False)
    at = {int(e): i for i, e in enumerate(history.epochs.tolist())}
    for ax, e in zip(axes[0], epochs, strict=True):
        i = at[e]
        ax.imshow(tile(grids[e], 8), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"epoch {e}\n{history.n_covered[i]}/{history.n_classes} classes, "
                     f"Fréchet {history.frechet[i]:.2f}", fontsize=8)
    fig.suptitle("The same 64 latent vectors, epoch by epoch", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def plot_class_histogram(history: GanHistory, *, classes: Sequence[str] | None = None,
                         accuracy: float | None = None, ax: Axes | None = None) -> Figure:
    """Epochs × classes: the share of generated samples the classifier puts in each class,
    with the classes covered per epoch (missing classes are mode collapse). A run of more
    than :data:`MAX_HISTOGRAM_ROWS` epochs shows that many, evenly spaced, the last one
    always."""
    rows = shown_rows(len(history.epochs), MAX_HISTOGRAM_ROWS)
    counts = history.class_counts[rows].astype(np.float64)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    epochs, covered = history.epochs[rows], history.n_covered[rows]
    fig, ax = _axes(ax, (7.0, 1.2 + 0.28 * len(rows)))
    image = ax.imshow(shares, aspect="auto", cmap="viridis", vmin=0,
                      vmax=max(float(shares.max()), 1e-9), interpolation="nearest")
    ax.set_xticks(range(history.n_classes),
                  [_label(classes, k) for k in range(history.n_classes)])
    ax.set_yticks(range(len(rows)),
                  [f"{e} ({n}/{history.n_classes})" for e, n in
                   zip(epochs.tolist(), covered.tolist(), strict=True)])
    for (r, c), value in np.ndenumerate(shares):
        if value < history.min_fraction:
            ax.text(c, r, "×", ha="center", va="center", color="red", fontsize=8)
    ax.set_xlabel("predicted class of the generated samples")
    ax.set_ylabel("epoch (classes covered)")
    judged = f"; classifier test accuracy {accuracy:.3f}" if accuracy is not None else ""
    ax.set_title(f"Class histogram of generated samples (× = below {history.min_fraction:.0%}: "
                 f"not covered{judged})", fontsize=9)
    ax.figure.colorbar(image, ax=ax, label="share of samples")
    return fig


def plot_gan_curves(history: GanHistory) -> Figure:
    """Both losses, and the mean D(real) and D(fake), by epoch (epoch 0 has none)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.2))
    e = history.epochs
    left.plot(e, history.loss_d, marker=_marker(history), label="loss_D")
    left.plot(e, history.loss_g, marker=_marker(history), label="loss_G")
    left.set_xlabel("epoch")
    left.set_ylabel("mean loss over the epoch")
    left.legend()
    left.set_title(f"losses (last: D {history.loss_d[-1]:.3f}, G {history.loss_g[-1]:.3f})",
                   fontsize=9)
    right.plot(e, history.d_real, marker=_marker(history), label="D(real)")
    right.plot(e, history.d_fake, marker=_marker(history), label="D(fake)")
    right.axhline(0.5, color="grey", lw=0.8, ls="--")
    right.set_ylim(0, 1)
    right.set_xlabel("epoch")
    right.set_ylabel("mean discriminator output")
    right.legend()
    right.set_title(f"D(·) (last: real {history.d_real[-1]:.3f}, fake "
                    f"{history.d_fake[-1]:.3f}; 0.5 = cannot tell)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_gan_quality(history: GanHistory, *, accuracy: float | None = None) -> Figure:
    """Classes covered and the Fréchet distance (with its real-data floor) by epoch."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.2))
    e = history.epochs
    left.plot(e, history.n_covered, marker=_marker(history))
    left.set_ylim(0, history.n_classes + 0.5)
    left.set_xlabel("epoch")
    left.set_ylabel(f"classes covered (≥ {history.min_fraction:.0%} of samples)")
    judged = f", classifier acc. {accuracy:.3f}" if accuracy is not None else ""
    left.set_title(f"classes covered (last {history.n_covered[-1]}/{history.n_classes}"
                   f"{judged})", fontsize=9)
    right.plot(e, history.frechet, marker=_marker(history), label="generated vs real test")
    right.axhline(history.frechet_floor, color="grey", ls="--",
                  label=f"real train vs test {history.frechet_floor:.2f}")
    right.set_yscale("log")
    right.set_xlabel("epoch")
    right.set_ylabel("Fréchet distance (classifier features)")
    right.legend(fontsize=8)
    right.set_title(f"Fréchet distance in the classifier's features, not FID (last "
                    f"{history.frechet[-1]:.2f})", fontsize=9)
    fig.tight_layout()
    return fig


def plot_interpolation(interp: Interpolation, *, classes: Sequence[str] | None = None,
                       ax: Axes | None = None) -> Figure:
    """Images along a straight line in latent space, each with its predicted class."""
    images = np.asarray(interp.images)
    w = images.shape[-1]
    fig, ax = _axes(ax, (1.0 * len(images) + 0.5, 1.8))
    ax.imshow(tile(images, len(images)), cmap="gray", vmin=-1, vmax=1,
              interpolation="nearest")
    ax.set_xticks([c * (w + 1) + w / 2 - 0.5 for c in range(len(images))],
                  [f"α={a:.2f}\n{_label(classes, int(p))} {c:.2f}" for a, p, c in
                   zip(interp.alphas, interp.predictions, interp.confidences, strict=True)],
                  fontsize=7)
    ax.set_yticks([])
    changes = int(np.sum(np.diff(interp.predictions) != 0))
    ax.set_title(f"Latent interpolation z0 → z1, epoch {interp.epoch} (predicted class "
                 f"changes {changes}×)", fontsize=9)
    return fig


def plot_nearest_training(samples: np.ndarray, neighbours: np.ndarray,
                          distances: np.ndarray, *, test_median: float | None = None,
                          ax: Axes | None = None) -> Figure:
    """Generated samples (top row) above their nearest training images (bottom row), with
    the L2 distance between each pair."""
    samples, neighbours = np.asarray(samples), np.asarray(neighbours)
    h, w = samples.shape[-2:]
    n = len(samples)
    fig, ax = _axes(ax, (1.0 * n + 0.5, 2.6))
    ax.imshow(tile(np.concatenate([samples, neighbours]), n), cmap="gray", vmin=-1, vmax=1,
              interpolation="nearest")
    ax.set_xticks([c * (w + 1) + w / 2 - 0.5 for c in range(n)],
                  [f"{d:.2f}" for d in distances], fontsize=7)
    ax.set_yticks([h / 2, h + 1 + h / 2], ["generated", "nearest\ntrain"], fontsize=7)
    ref = f"; real test images' median {test_median:.2f}" if test_median is not None else ""
    ax.set_title(f"Memorisation check: L2 distance to the nearest training image{ref}",
                 fontsize=9)
    return fig


__all__: list[str] = ["plot_class_histogram", "plot_gan_curves", "plot_gan_quality",
                      "plot_interpolation", "plot_nearest_training", "plot_sample_grid",
                      "plot_samples_over_epochs", "shown_rows", "tile"]
