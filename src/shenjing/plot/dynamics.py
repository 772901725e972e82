"""Figures of training dynamics from a run's metrics: curves, per-layer ratios, status.

Inputs are :class:`shenjing.analysis.dynamics.Dynamics` and ``LayerStatus``. Every axis
is labelled (``ax.get_label()``) with the metric it shows, and every line with its layer
(parameter group) or split, so tests and readers can find what is drawn. Values that are
null (e.g. the update ratio of epoch 0) are NaN and leave a gap.

The figures stay readable from 1 to 200 parameter groups and from 1 to a few hundred
epochs, within :data:`MAX_INCHES`:

- up to :data:`MAX_LEGEND` groups get one legend entry each, in a legend *outside* the
  panels; more are coloured by depth (model order, dark = first) with a colour bar naming
  a few of them — a legend of 100 entries is unreadable and covers the panels;
- a bias group is drawn dashed in the colour of its module's weights;
- heat-map rows are labelled every k-th (k chosen so labels are at least
  :data:`LABEL_PITCH_IN` apart, the last row always labelled) and cells carry their values
  only when they are big enough to read; every row is drawn, and a status strip shows every
  row's status;
- epoch ticks are thinned past :data:`MAX_EPOCH_TICKS` epochs; long names are shortened in
  the middle; titles and warnings are wrapped to the figure's width.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shenjing._labels import epoch0_words
from shenjing.analysis.dynamics import Coverage, Dynamics, LayerStatus

LAYER_PANELS: tuple[tuple[str, str, bool], ...] = (
    ("weight_norm", "weight norm ‖w‖", False),
    ("update_ratio", "relative update ‖Δw‖/‖w‖ per epoch", True),
    ("grad_norm", "gradient norm (mean over steps)", True),
    ("dist_from_init", "distance from init ‖w−w₀‖/‖w₀‖", False),
    ("cos_to_init", "cosine to init", False),
)
STATUS_COLOURS = {"moving": "#2ca02c", "settled": "#7f7f7f", "unchanged": "#1f77b4",
                  "unknown": "#bcbd22"}
#: the largest figure any of these functions draws (width, height), inches
MAX_INCHES = (16.0, 20.0)
#: more groups than this are coloured by depth with a colour bar instead of a legend
MAX_LEGEND = 12
#: at most this many epochs get a tick each; more are thinned
MAX_EPOCH_TICKS = 16
#: the smallest vertical distance between two labelled heat-map rows
LABEL_PITCH_IN = 0.14
#: names longer than this are shortened in the middle on ticks and legends
MAX_NAME = 32
_SMALL = 7  # pt: tick labels, legends, cell values

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _positive(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 0 and bool((finite > 0).all())


def plain_linear_axis(ax: Any, values: np.ndarray) -> None:
    """No offset notation (``1e−12+1``) on a linear axis, and a readable range when the
    values are (nearly) constant, as the cosine of unchanged weights is."""
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    finite = values[np.isfinite(values)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        scale = max(abs(lo), abs(hi), 1e-12)
        if hi - lo <= 1e-9 * scale:
            pad = 0.05 * scale if scale > 1e-12 else 1.0
            ax.set_ylim(lo - pad, hi + pad)


def short_name(name: str, limit: int = MAX_NAME) -> str:
    """``encoder.layers.0.…n.out_proj``: long names shortened in the middle."""
    if len(name) <= limit:
        return name
    keep = limit - 1
    return name[: keep // 2] + "…" + name[len(name) - (keep - keep // 2):]


def wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize`` points."""
    chars = max(20, int(width_in * 72 / (0.56 * fontsize)))
    return "\n".join(textwrap.fill(part, chars) for part in text.split("\n"))


def name_list(names: Sequence[str], limit: int = 90) -> str:
    """``a, b, c`` when short, else ``37 groups (conv1 … fc)``."""
    text = ", ".join(names)
    if len(text) <= limit:
        return text or "none"
    return f"{len(names)} groups ({short_name(names[0], 20)} … {short_name(names[-1], 20)})"


def epoch_ticks(ax: Any, epochs: Sequence[int] | np.ndarray) -> None:
    """Every epoch as a tick up to :data:`MAX_EPOCH_TICKS` epochs, else about ten."""
    from matplotlib.ticker import MaxNLocator

    values = [int(e) for e in epochs]
    if len(values) <= MAX_EPOCH_TICKS:
        ax.set_xticks(values)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))


def bounded(width: float, height: float) -> tuple[float, float]:
    """A figure size within :data:`MAX_INCHES`."""
    return min(width, MAX_INCHES[0]), min(height, MAX_INCHES[1])


def _base(name: str) -> str:
    return name.removesuffix(".bias") if name.endswith(".bias") else name


class LayerColours:
    """One colour per module (a group's weights and biases share it; biases are dashed).

    With at most :data:`MAX_LEGEND` groups the colours are categorical and a legend names
    each; beyond, they run dark→light through the model (``viridis``) and
    :meth:`colourbar` names a few of them.
    """

    def __init__(self, names: Sequence[str], is_bias: Callable[[str], bool]) -> None:
        import matplotlib.pyplot as plt

        self.names = list(names)
        self.bias = {n: is_bias(n) for n in self.names}
        self.modules = list(dict.fromkeys(_base(n) if self.bias[n] else n for n in self.names))
        self.legend = len(self.names) <= MAX_LEGEND
        index = {m: i for i, m in enumerate(self.modules)}
        if self.legend:
            cmap = plt.get_cmap("tab10" if len(self.modules) <= 10 else "tab20")
            self.cmap = cmap
            colour = {m: cmap(i % cmap.N) for m, i in index.items()}
        else:
            self.cmap = plt.get_cmap("viridis")
            top = max(len(self.modules) - 1, 1)
            colour = {m: self.cmap(0.92 * i / top) for m, i in index.items()}
        self._colour = colour

    def style(self, name: str) -> dict[str, Any]:
        """Keyword arguments for ``ax.plot`` of group ``name``."""
        module = _base(name) if self.bias.get(name) else name
        return {"color": self._colour[module], "linestyle": "--" if self.bias.get(name)
                else "-", "label": name}

    def colourbar(self, fig: Any, axes: Any, *, what: str = "parameter group") -> Any:
        """A colour bar naming a few groups in model order (at most 8 labels)."""
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        top = max(len(self.modules) - 1, 1)
        mappable = ScalarMappable(norm=Normalize(0, top / 0.92), cmap=self.cmap)
        bar = fig.colorbar(mappable, ax=axes, fraction=0.03, pad=0.01, aspect=40)
        step = max(1, math.ceil(len(self.modules) / 8))
        ticks = list(range(0, len(self.modules), step))
        if ticks[-1] != len(self.modules) - 1:
            if len(self.modules) - 1 - ticks[-1] < step / 2:
                ticks.pop()
            ticks.append(len(self.modules) - 1)
        bar.set_ticks(ticks, labels=[short_name(self.modules[t], 24) for t in ticks])
        bar.ax.tick_params(labelsize=_SMALL)
        dashed = any(self.bias.values())
        bar.set_label(f"{what}, in model order{' (dashed: its biases)' if dashed else ''}",
                      fontsize=8)
        return bar


def outside_legend(fig: Any, handles: list[Any], labels: list[str], *,
                   title: str | None = None) -> Any:
    """A figure legend below the panels (never on them), at most six columns."""
    ncol = min(len(labels), 6)
    return fig.legend(handles, [short_name(lab) for lab in labels], loc="outside lower center",
                      ncol=ncol, fontsize=_SMALL, frameon=False, title=title,
                      title_fontsize=_SMALL)


def _coverage_text(coverage: Coverage | None) -> str:
    if coverage is None:
        return ""
    text = f" — {coverage.describe()}"
    if coverage.share < 1:
        text += " (the rest was not recorded: record the run again to see it)"
    return text


def plot_training_curves(dyn: Dynamics, *, title: str | None = None) -> Figure:
    """Loss (log y) and accuracy against epoch, train and test; axes labelled ``"loss"`` and
    ``"accuracy"``; lines labelled ``"train"``/``"test"``."""
    import matplotlib.pyplot as plt

    has_acc = dyn.has("train_accuracy") or dyn.has("test_accuracy")
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(9 if has_acc else 5, 3.4),
                             squeeze=False, layout="constrained")
    markers = {"marker": "o", "ms": 3} if len(dyn.epochs) <= 40 else {}
    ax = axes[0, 0]
    ax.set_label("loss")
    for split in ("train", "test"):
        vals = dyn.scalars[f"{split}_loss"]
        if np.isfinite(vals).any():
            ax.plot(dyn.epochs, vals, label=split, **markers)
    if _positive(np.concatenate([dyn.scalars["train_loss"], dyn.scalars["test_loss"]])):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss" + (" (log)" if ax.get_yscale() == "log" else ""))
    if ax.get_lines():
        ax.legend(fontsize=8)
    if has_acc:
        ax = axes[0, 1]
        ax.set_label("accuracy")
        for split in ("train", "test"):
            vals = dyn.scalars[f"{split}_accuracy"]
            if np.isfinite(vals).any():
                ax.plot(dyn.epochs, vals, label=split, **markers)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)
    for a in axes.ravel():
        epoch_ticks(a, dyn.epochs)
    fig.suptitle(title or f"loss and accuracy (epoch 0 = {epoch0_words()})", fontsize=11)
    return fig


def _nothing_moved(status: LayerStatus | None) -> str | None:
    """The model-wide 'unchanged' warning, when there is one."""
    if status is None:
        return None
    for w in status.warnings:
        if w.kind == "unchanged":
            return w.message
    return None


def plot_layer_dynamics(dyn: Dynamics, *, status: LayerStatus | None = None,
                        title: str | None = None) -> Figure:
    """Small multiples of the per-group metrics against epoch (one line per parameter
    group), plus the dead-unit fraction per activation; ratios and gradient norms on log
    scales. The title says what share of the model's parameters the lines cover, and —
    given ``status`` — when no parameter changed at all."""
    import matplotlib.pyplot as plt

    panels = [p for p in LAYER_PANELS if dyn.has(p[0])]
    n = len(panels) + (1 if dyn.dead_units else 0)
    cols = 3 if n > 4 else max(n, 1)
    rows = max(1, -(-n // cols))
    colours = LayerColours(dyn.layers, dyn.is_bias)
    legend_rows = -(-len(dyn.layers) // 6) if colours.legend else 0
    width, height = bounded(4.2 * cols + (0 if colours.legend else 1.6),
                            3.1 * rows + 0.9 + 0.2 * legend_rows)
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False,
                             layout="constrained")
    flat = axes.ravel()
    markers = {"marker": "o", "ms": 3} if len(dyn.epochs) <= 40 and len(dyn.layers) <= 40 \
        else {}
    if len(dyn.epochs) <= 3:  # an update ratio with one epoch after init is a single point
        markers = {"marker": "o", "ms": 3 if len(dyn.layers) <= 40 else 2}
    width_lines = 1.5 if colours.legend else 0.8
    for ax, (key, label, log) in zip(flat, panels, strict=False):
        ax.set_label(key)
        values = dyn.layer_metric(key)
        for i, layer in enumerate(dyn.layers):
            ax.plot(dyn.epochs, values[i], lw=width_lines, **markers, **colours.style(layer))
        if log and _positive(values):
            ax.set_yscale("log")
        else:
            plain_linear_axis(ax, values)
        ax.set_title(label + (" (log)" if ax.get_yscale() == "log" else ""), fontsize=9)
        ax.set_xlabel("epoch")
        epoch_ticks(ax, dyn.epochs)
        ax.tick_params(labelsize=8)
    if dyn.dead_units:
        _dead_units_panel(flat[len(panels)], dyn, markers)
    for ax in flat[n:]:
        ax.set_visible(False)
    shown = [ax for ax in flat[:len(panels)]]
    if panels and colours.legend:
        handles = shown[0].get_lines()
        outside_legend(fig, list(handles), [h.get_label() for h in handles])
    elif panels:
        colours.colourbar(fig, axes)
    headline = title or ("how each parameter group moves during training"
                         + _coverage_text(dyn.coverage))
    warning = _nothing_moved(status)
    if warning:
        headline += "\nWARNING: " + warning
    fig.suptitle(wrap(headline, width - 0.4, 11), fontsize=11,
                 color="#d62728" if warning else "black")
    return fig


def _dead_units_panel(ax: Any, dyn: Dynamics, markers: dict[str, Any]) -> None:
    """Dead-unit fraction per activation. A few activations get a legend in the band above
    1.0, where no fraction can be; many are coloured by depth."""
    import matplotlib.pyplot as plt

    ax.set_label("dead_units")
    names = list(dyn.dead_units)
    few = len(names) <= MAX_LEGEND
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "viridis")
    for i, name in enumerate(names):
        colour = cmap(i % 10) if len(names) <= 10 else cmap(0.92 * i / max(len(names) - 1, 1))
        ax.plot(dyn.epochs, dyn.dead_units[name], color=colour, label=name, **markers)
    ncol = min(len(names), 3)
    band = 0.13 * -(-len(names) // ncol) if few else 0.0
    ax.set_ylim(-0.02, 1.02 + band)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_title("dead units (fraction zero for every test input)" if few else
                 "dead units (fraction zero for every test input; colour: depth)", fontsize=9)
    ax.set_xlabel("epoch")
    epoch_ticks(ax, dyn.epochs)
    ax.tick_params(labelsize=8)
    if few:
        ax.legend([short_name(n, 18) for n in names], loc="upper center", ncol=ncol,
                  fontsize=_SMALL, frameon=False, borderaxespad=0.1, handlelength=1.2,
                  columnspacing=0.8)


def _status_codes(dyn: Dynamics, status: LayerStatus) -> np.ndarray:
    order = list(STATUS_COLOURS)
    return np.array([[order.index(status.status.get(name, "unknown"))] for name in dyn.layers],
                    dtype=float).reshape(len(dyn.layers), 1)


def _thinned(n: int, step: int) -> list[int]:
    """Every ``step``-th index from 0, the last index always included."""
    picks = list(range(0, n, step))
    if picks and picks[-1] != n - 1:
        if n - 1 - picks[-1] < step:
            picks.pop()
        picks.append(n - 1)
    return picks or [0]


def _ordinal(k: int) -> str:
    return {2: "2nd", 3: "3rd"}.get(k, f"{k}th")


def plot_layer_status(dyn: Dynamics, status: LayerStatus, *, title: str | None = None) -> Figure:
    """Which layers still move: a groups × epochs heat map of log10 ‖Δw‖/‖w‖ (the image
    array is exactly that, NaN for epoch 0 and for no movement at all), a strip with every
    group's status at the last epoch, and the warnings listed under the figure."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n_rows, n_cols = max(len(dyn.layers), 1), len(dyn.epochs)
    ratio = dyn.layer_metrics.get("update_ratio",
                                  np.full((len(dyn.layers), n_cols), np.nan))
    with np.errstate(divide="ignore", invalid="ignore"):
        logr = np.where(ratio > 0, np.log10(np.where(ratio > 0, ratio, 1.0)), np.nan)
    # ---- size: rows and warnings share the height budget; columns the width budget
    width = bounded(max(7.0, min(0.5 * n_cols, 9.0) + 5.5), 0)[0]
    messages = [w.message for w in status.warnings]
    wrapped = [wrap(m, width - 0.6, _SMALL) for m in messages]
    fixed = 2.3  # title, epoch axis, status legend
    budget_lines = int((MAX_INCHES[1] - fixed - 0.06 * n_rows) / 0.135)
    shown: list[str] = []
    used = 1
    for text in wrapped:
        lines = text.count("\n") + 1
        if used + lines > min(budget_lines, 40) - 1:
            break
        shown.append(text)
        used += lines
    if len(shown) < len(wrapped):
        shown.append(f"… and {len(wrapped) - len(shown)} more warnings (see dynamics.json)")
        used += 1
    warn_h = 0.135 * used + 0.2
    row_in = min(0.4, max(0.06, (MAX_INCHES[1] - fixed - warn_h) / n_rows))
    height = bounded(0, max(3.8, row_in * n_rows + fixed + warn_h))[1]
    fig, (ax, strip) = plt.subplots(1, 2, figsize=(width, height), sharey=True,
                                    gridspec_kw={"width_ratios": [max(n_cols, 2), 0.6]},
                                    layout="constrained")
    ax.set_label("update_ratio_log10")
    strip.set_label("status")
    finite = logr[np.isfinite(logr)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (-3.0, 0.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    image = ax.imshow(logr, aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                      interpolation="nearest")
    # ---- epoch ticks, thinned to ~0.35 in apart
    heat_w = (width - 4.5) * max(n_cols, 2) / (max(n_cols, 2) + 0.6)
    step_x = max(1, math.ceil(n_cols * 0.35 / max(heat_w, 1.0)))
    cols = _thinned(n_cols, step_x)
    ax.set_xticks(cols, [str(dyn.epochs[j]) for j in cols])
    ax.tick_params(axis="x", labelsize=_SMALL + 1)
    # ---- group labels: every k-th, k so that labels are LABEL_PITCH_IN apart
    step_y = max(1, math.ceil(LABEL_PITCH_IN / row_in))
    picks = _thinned(len(dyn.layers), step_y) if dyn.layers else []
    label_size = _SMALL if row_in >= 0.12 else 6
    states = [status.status.get(dyn.layers[i], "unknown") for i in picks]
    ax.set_yticks(picks, [f"{short_name(dyn.layers[i])}  [{state}]"
                          for i, state in zip(picks, states, strict=True)])
    ax.tick_params(axis="y", labelsize=label_size)
    for tick, state in zip(ax.get_yticklabels(), states, strict=True):
        tick.set_color(STATUS_COLOURS.get(state, "black"))
    if row_in >= 0.2 and heat_w / n_cols >= 0.42:
        for i in range(len(dyn.layers)):
            for j in range(n_cols):
                if np.isfinite(ratio[i, j]):
                    ax.text(j, i, f"{ratio[i, j]:.2g}", ha="center", va="center",
                            fontsize=_SMALL, color="white" if not np.isfinite(logr[i, j])
                            or logr[i, j] < (vmin + vmax) / 2 else "black")
    ax.set_xlabel("epoch")
    ax.set_ylabel("parameter group [status at the last epoch]" if step_y == 1 else
                  f"parameter group [status]: every {_ordinal(step_y)} of {len(dyn.layers)} "
                  "labelled, all drawn", fontsize=9)
    # ---- status strip: every row's status, whether labelled or not
    cmap = ListedColormap(list(STATUS_COLOURS.values()))
    strip.imshow(_status_codes(dyn, status), aspect="auto", cmap=cmap, vmin=-0.5,
                 vmax=len(STATUS_COLOURS) - 0.5, interpolation="nearest")
    strip.set_xticks([])
    strip.tick_params(axis="y", left=False)
    strip.set_title("status", fontsize=8)
    fig.colorbar(image, ax=[ax, strip], label="log10 ‖Δw‖/‖w‖", fraction=0.04, pad=0.02)
    present = [s for s in STATUS_COLOURS if s in status.status.values()]
    fig.legend([Patch(color=STATUS_COLOURS[s]) for s in present], present,
               loc="outside upper center", ncol=len(present) or 1, fontsize=_SMALL,
               frameon=False)
    th = status.thresholds
    moving, settled = name_list(status.moving), name_list(status.settled)
    headline = title or (f"which layers still move (epoch {status.epoch}): moving: {moving}; "
                         f"settled: {settled}"
                         + (f"; unchanged: {name_list(status.unchanged)}"
                            if status.unchanged else "")
                         + f"\nsettled = last ratio < {th['settled_below']:g} or < "
                         f"{th['settled_fraction']:g}× its peak")
    ax.set_title(wrap(headline, width - 2.5, 9), fontsize=9)
    if status.warnings:
        fig.supxlabel("warnings:\n" + "\n".join(shown), fontsize=_SMALL, color="#d62728",
                      ha="left", x=0.01)
    else:
        fig.supxlabel("no warnings: no vanishing/exploding layer, no layer with many dead "
                      "units", fontsize=8, color="#2ca02c")
    return fig
