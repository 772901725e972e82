"""Stage ``filters``: the kernels of a run's layer at chosen epochs, as files.

Files written (``<L>`` = layer name, see :func:`shenjing.filenames.safe_name`):

``figures/filters-<L>-e<E>.png|svg``
    kernels of a Conv2d layer (RGB for 3 input channels, grey for 1, the capped out×in
    kernel grid otherwise), of a Conv1d layer as small line plots, or a first linear
    layer's units as input-shaped images.
``figures/filters-<L>-epochs.png|svg``, ``maps/filters-<L>.gif``
    (with several epochs) kernels at every epoch and an animation.
``maps/filters-<L>.json``
    ``{"layer", "module_type", "shape", "kind", "view", "epochs", "figures", "gif",
    "change": {...} | null, "reference_epoch"}``; ``change`` compares the first and last
    epoch shown, or, with one epoch, that epoch with the run's first (untrained) one.

The stage record in ``run.json`` is ``stages.filters``: ``done``, ``failed`` (with the
error) or ``skipped`` (with the reason, e.g. the filters of an LSTM).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing import _io
from shenjing.analysis.filters import (
    WHAT_FILTERS_ARE,
    Filters,
    check_weight_layer,
    filter_change,
    first_conv_layer,
    layer_filters,
    not_applicable_reason,
    unit_images,
)
from shenjing.errors import CheckpointError, NotApplicableError, UsageError
from shenjing.filenames import safe_name
from shenjing.plot.save import save_figure
from shenjing.runs import Run
from shenjing.stages._inputs import resolve_epochs

FILTER_SCALES = ("filter", "shared")
#: the most filters (or input channels) a figure may be asked to draw
MAX_FILTERS = 4096


@dataclass(frozen=True)
class FiltersResult:
    """What the filters stage wrote."""

    layer: str
    view: str
    epochs: tuple[int, ...]
    filters: tuple[Filters, ...]
    change: dict[str, Any] | None
    figures: tuple[Path, ...]
    json_path: Path
    gif: Path | None = None

    def summary(self) -> str:
        shape = "×".join(map(str, self.filters[-1].weight.shape))
        lines = [f"{self.layer} ({shape}): {self.view} at epochs "
                 f"{', '.join(map(str, self.epochs))}"]
        if self.change is not None:
            a, b = self.change["epochs"]
            top = ", ".join(str(r["filter"]) for r in self.change["top_changed"][:5])
            lines.append(f"relative weight change epoch {a}→{b}: "
                         f"{self.change['relative_change']:.4g}; most changed filters: {top}")
        lines += [f"wrote {p}" for p in (*self.figures, self.json_path)]
        if self.gif:
            lines.append(f"wrote {self.gif}")
        return "\n".join(lines)


def module_types(run: Run) -> dict[str, str]:
    """Layer name → module type from the run's ``layers.json`` (saved when it was created),
    in the model's module order; empty for runs made before it existed. Reading it runs no
    code."""
    table = run.saved_layer_table() or {}
    try:
        return {str(r["name"]): str(r["type"]) for r in table.get("rows", [])}
    except (KeyError, TypeError):
        return {}


def _input_shape(run: Run) -> tuple[int, ...] | None:
    """One sample's shape: from the model spec, the layer table, or built-in data (never
    by running a data factory)."""
    spec = run.manifest.get("model", {})
    if spec.get("input_shape"):
        return tuple(int(s) for s in spec["input_shape"])
    table = run.saved_layer_table()
    if table is not None:
        try:
            return tuple(int(s) for s in table["input_shape"])
        except (ValueError, KeyError, TypeError):
            pass
    if run.data_is_code:
        return None
    return tuple(run.data.input_shape)


def _read_tensors(run: Run, epoch: int, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of one checkpoint whose names start with ``prefix`` (all with None): only
    those are read, so a big model's other layers cost nothing."""
    from safetensors import safe_open

    path = run.checkpoint_path(epoch)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()  # noqa: SIM118 - not a dict
                    if prefix is None or k.startswith(prefix)}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from None


def _checkpoint_shapes(run: Run, epoch: int, order: Sequence[str] = ()) -> dict[str, Any]:
    """Name → a shape-only stand-in for each tensor of a checkpoint (no data read), in the
    model's module ``order`` (a checkpoint stores its tensors sorted by name, which puts
    ``layer1.conv1`` before ``stem.0``); names not in ``order`` after, in natural order."""
    from safetensors import safe_open

    path = run.checkpoint_path(epoch)
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: _Shape(tuple(f.get_slice(k).get_shape())) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from None
    rank = {name: i for i, name in enumerate(order)}

    def key(name: str) -> tuple[int, list[Any]]:
        module = name.rpartition(".")[0]
        natural = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
        return rank.get(module, len(rank)), natural

    return {k: shapes[k] for k in sorted(shapes, key=key)}


@dataclass(frozen=True)
class _Shape:
    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _default_filters_layer(shapes: dict[str, Any], types: dict[str, str],
                           input_shape: tuple[int, ...] | None) -> tuple[str, str | None]:
    """``(layer, reason it does not apply or None)``: the first Conv1d/Conv2d layer, else
    the first Linear layer (which applies only if it reads the whole input)."""
    try:
        return first_conv_layer(shapes, types), None
    except UsageError:
        pass
    linear = next((k[: -len(".weight")] for k, v in shapes.items()
                   if k.endswith(".weight") and v.ndim == 2
                   and types.get(k[: -len(".weight")], "Linear").endswith("Linear")), None)
    if linear is None:
        kinds = sorted({t for t in types.values() if t}) if types else []
        what = f" (its layers: {', '.join(kinds[:8])})" if kinds else ""
        return "model", (f"filters: the model has no Conv1d/Conv2d or Linear layer{what}; "
                         f"{WHAT_FILTERS_ARE}")
    if input_shape is None or int(np.prod(input_shape)) != shapes[f"{linear}.weight"].shape[1]:
        return linear, (f"filters: the model has no Conv1d/Conv2d layer, and its first "
                        f"Linear layer {linear!r} reads {shapes[f'{linear}.weight'].shape[1]} "
                        f"features, not the whole input {input_shape}; {WHAT_FILTERS_ARE}")
    return linear, None


def _filters_layer(run: Run, layer: str | None, epoch: int) -> tuple[str, str]:
    """``(layer, kind)`` to draw — ``kind`` is ``conv``, ``conv1d`` or ``linear`` — or a
    :class:`NotApplicableError` saying why the layer (or, with None, the model) has no
    filters, or a :class:`LayerNotFoundError` for a name with no weights."""
    types = module_types(run)
    shapes = _checkpoint_shapes(run, epoch, list(types))
    input_shape = _input_shape(run)
    if layer is None:
        layer, reason = _default_filters_layer(shapes, types, input_shape)
    else:
        reason = not_applicable_reason(shapes, layer, types.get(layer))
        if reason is None:
            check_weight_layer(shapes, layer)
    if reason is not None:
        raise NotApplicableError(reason)
    weight = shapes[f"{layer}.weight"]
    kind = {4: "conv", 3: "conv1d"}.get(weight.ndim, "linear")
    n_in = weight.shape[1]
    if kind == "linear" and (input_shape is None or len(input_shape) < 2
                             or int(np.prod(input_shape)) != n_in):
        raise NotApplicableError(f"filters: layer {layer!r} reads {n_in} features, not the "
                                 f"whole image input {input_shape}; {WHAT_FILTERS_ARE}")
    return layer, kind


def filters_stage(run: Run, layer: str | None = None, *,
                  epochs: Sequence[int | str] | str = ("final",), max_filters: int = 64,
                  max_in: int = 16, scale: str = "filter", gif: bool = False) -> FiltersResult:
    """Draw ``layer``'s filters (default: the first conv layer) at each of ``epochs``.

    Conv2d layers with 1 or 3 input channels: one image per filter (RGB for 3); more input
    channels: the out×in kernel grid capped at ``max_filters × max_in``. Conv1d layers:
    their kernels as small line plots (up to 16 filters × 8 inputs, most changed first,
    the untrained kernel dashed under each). A linear layer that reads the whole input:
    each unit's weights as an image of the input (``max_filters`` units). The relative
    change of each filter is measured between the first and last epoch, or with one epoch
    since the run's first one; with several epochs also every filter across the epochs
    (and a GIF with ``gif=True``).

    A layer with no kernels to draw (an LSTM, a norm layer, attention, a hidden Linear)
    raises :class:`~shenjing.errors.NotApplicableError` with the reason and the stage is
    recorded ``skipped``. Only the checkpoints are read: the model is never built, so no
    user code runs.
    """
    from shenjing._checks import bounded_int, choice
    from shenjing.plot.animate import figure_to_array, save_gif
    from shenjing.plot.filters import (
        plot_filters,
        plot_filters_over_epochs,
        plot_kernel_grid,
        plot_kernel_signals,
        plot_unit_images,
    )

    choice("--scale", scale, FILTER_SCALES)
    bounded_int("--max-filters", max_filters, low=1, high=MAX_FILTERS, example=64)
    bounded_int("--max-in", max_in, low=1, high=MAX_FILTERS, example=16)
    chosen_epochs = resolve_epochs(run, epochs)
    with run.running_stage("filters", layer=layer):
        # which layer, and whether it has kernels: from the checkpoint's shapes alone
        layer, kind = _filters_layer(run, layer, chosen_epochs[-1])
        types = module_types(run)
        input_shape = _input_shape(run)
        prefix = f"{layer}."
        history = [layer_filters(_read_tensors(run, e, prefix), layer, epoch=e,
                                 module_type=types.get(layer)) for e in chosen_epochs]
        reference = history[0] if len(history) > 1 else None
        if reference is None and run.epochs and run.epochs[0] < chosen_epochs[0]:
            reference = layer_filters(_read_tensors(run, run.epochs[0], prefix), layer,
                                      epoch=run.epochs[0])
        if kind == "linear":
            view = "unit images"
            images = [unit_images(f, input_shape or (), max_units=max_filters,
                                  scale=scale) for f in history]  # type: ignore[arg-type]
        elif kind == "conv1d":
            view = "kernel signals"
        else:
            view = "filters" if history[0].n_in in (1, 3) else "kernel grid"
        figures: list[Path] = []
        frames = []
        for i, f in enumerate(history):
            if kind == "linear":
                fig = plot_unit_images(images[i], layer=layer, epoch=f.epoch, scale=scale)  # type: ignore[arg-type]
            elif kind == "conv1d":
                ref = reference if reference is not None and reference.epoch != f.epoch \
                    else None
                fig = plot_kernel_signals(f, reference=ref, max_out=min(max_filters, 16),
                                          max_in=min(max_in, 8))
            elif view == "filters":
                fig = plot_filters(f, max_filters=max_filters, scale=scale)  # type: ignore[arg-type]
            else:
                fig = plot_kernel_grid(f, max_out=min(max_filters, 16), max_in=max_in)
            if gif and len(history) > 1:
                frames.append(figure_to_array(fig))
            figures += save_figure(fig, run.figures_dir,
                                   f"filters-{safe_name(layer)}-e{f.epoch:03d}")
        change = filter_change(reference, history[-1]) if reference is not None else None
        if len(history) > 1 and kind in ("conv", "conv1d"):
            fig = plot_filters_over_epochs(history, max_filters=min(max_filters, 32))
            figures += save_figure(fig, run.figures_dir, f"filters-{safe_name(layer)}-epochs")
        gif_path = None
        out_dir = run.subdir("maps")
        if frames:
            gif_path = save_gif(frames, out_dir / f"filters-{safe_name(layer)}.gif")
        record = {"layer": layer, "module_type": types.get(layer),
                  "shape": list(history[0].weight.shape), "kind": kind, "view": view,
                  "epochs": chosen_epochs,
                  "reference_epoch": reference.epoch if reference is not None else None,
                  "figures": [str(p.relative_to(run.path)) for p in figures],
                  "gif": str(gif_path.relative_to(run.path)) if gif_path else None,
                  "change": change}
        json_path = _io.write_json(out_dir / f"filters-{safe_name(layer)}.json", record)
        run.update_stage("filters", "done", layer=layer, view=view,
                         json=str(json_path.relative_to(run.path)))
    return FiltersResult(layer=layer, view=view, epochs=tuple(chosen_epochs),
                         filters=tuple(history), change=change, figures=tuple(figures),
                         json_path=json_path, gif=gif_path)
