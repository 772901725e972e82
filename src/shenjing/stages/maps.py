"""Stages ``maps`` and ``filters``: feature maps and filters of a run, as files.

Files written (``<L>`` = layer name or output key with characters other than letters,
digits, ``._-`` replaced by ``_`` — ``block#1`` → ``block_1``; epochs as three digits):

``figures/maps-<L>-<split><index>-e<A>-e<B>.png|svg``
    the layer's output for one input at the chosen epochs, side by side, its axes kept (see
    :mod:`shenjing.analysis.featuremaps` for the views): channel grids of ``spatial`` maps;
    heat maps (position × unit) with traces of the most changed units for ``sequence``,
    ``tokens`` and ``signal`` outputs; heat strip + bars for ``vector`` outputs.
``maps/maps-<L>-<split><index>-e<A>-e<B>.json``
    ``{"layer", "key", "module_type", "split", "index", "source_index", "label", "epochs",
    "view", "axes", "shape", "flattened_from", "drawn_as", "scale", "order", "top_k",
    "channels_shown", "dead_channels": {epoch: [...]} | null, "dead_channels_rule",
    "dead_channels_reason", "change": {"epochs", "mean_abs_change", "relative_change",
    "unit", "per_channel_change", "top_changed": [{"channel", "mean_abs_change",
    "mean_before", "mean_after"}], "position", "per_position_change",
    "top_changed_positions"} | null, "figures": [...], "strip": path | null,
    "gif": path | null}``. ``view`` is ``spatial | signal | sequence | tokens | vector``;
    ``dead_channels`` is null (with the reason) where "off" means nothing (a Tanh, LSTM,
    LayerNorm, GELU, Linear or pre-activation conv output), see ``OFF_RULE``.
``maps/maps-….npz``
    ``values`` ``(epochs, *one sample's output)``, ``epochs``, ``input``.
``figures/maps-<L>-<split><index>-strip.png|svg`` and ``maps/maps-<L>-<split><index>.gif``
    (with ``gif=True``, channel grids only) the most-changed channels at every epoch, and
    one frame per epoch.
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

The stage record in ``run.json`` is ``stages.maps`` / ``stages.filters`` with the last
call's ``layer``, ``json`` path and numbers: ``done``, ``failed`` (with the error) or
``skipped`` (with the reason: the view does not apply to that layer, e.g. the filters of an
LSTM). Options are checked before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing import _io
from shenjing._device import resolve_device
from shenjing.analysis.featuremaps import (
    ORDERS,
    SCALES,
    FeatureMaps,
    MapChange,
    as_vector,
    compare_feature_maps,
    feature_maps,
    require_spatial,
    select_channels,
)
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
from shenjing.errors import CheckpointError, NotApplicableError, ShapeMismatchError, UsageError
from shenjing.plot.save import save_figure
from shenjing.runs import Run

AUTO_TOP_K_ABOVE = 64  # layers with more channels show the top 32 unless asked otherwise
AUTO_TOP_K = 32
MAP_VIEWS = ("auto", "grid", "heatmap", "vector")
FILTER_SCALES = ("filter", "shared")
#: the most filters (or input channels) a figure may be asked to draw
MAX_FILTERS = 4096


def safe_name(layer: str) -> str:
    """A layer name usable in a file name: ``features.0`` stays, ``a/b`` → ``a_b``,
    ``block#1`` → ``block_1``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", layer) or "model"


def _record(run: Run, stage: str, exc: BaseException, **info: Any) -> None:
    """Record what ``exc`` means for ``stage`` the way :meth:`Run.running_stage` does:
    ``skipped`` with the reason for a :class:`NotApplicableError`, else ``failed`` with the
    error. For errors met before the stage's work began; the caller re-raises."""
    try:
        with run.running_stage(stage, **info):
            raise exc
    except BaseException:  # recorded; the caller re-raises the original
        pass


def _outcome_recorded(run: Run, stage: str, exc: Exception, **info: Any) -> bool:
    """Whether ``exc``, raised while checking a stage's input, is recorded in run.json: a
    view that does not apply (skipped) or a failure (failed) is; a usage error is not —
    nothing is written for a bad option."""
    if isinstance(exc, NotApplicableError) or not isinstance(exc, UsageError):
        _record(run, stage, exc, **info)
        return True
    return False


SPLITS = ("test", "train")
#: the most channels ``--top-k`` may ask for (heat maps show up to 256 anyway)
MAX_TOP_K = 4096


def check_maps_options(*, view: str, scale: str, order: str, top_k: int | None,
                       split: str) -> None:
    """Refuse options that cannot work, before anything is computed or written."""
    from shenjing._checks import bounded_int, choice

    choice("--view", view, MAP_VIEWS)
    choice("--scale", scale, SCALES)
    choice("--order", order, ORDERS)
    if top_k is not None:
        bounded_int("--top-k", top_k, low=1, high=MAX_TOP_K, example=16)
    choice("--split", split, SPLITS)


def resolve_epochs(run: Run, epochs: Sequence[int | str] | str) -> list[int]:
    """Epoch words/numbers → existing epochs, in the order given, without repeats.

    ``'all'`` means every saved epoch.
    """
    if isinstance(epochs, str):
        epochs = run.epochs if epochs == "all" else [epochs]
    out: list[int] = []
    for e in epochs:
        values = run.epochs if e == "all" else [run.resolve_epoch(e)]
        out += [v for v in values if v not in out]
    if not out:
        raise UsageError(f"run {run.name!r} has no epochs to show; train it first")
    return out


def select_input(run: Run, *, index: int | None = 0, cls: int | str | None = None,
                 split: str = "test") -> tuple[torch.Tensor, int, Any, int]:
    """One input of the run's data: ``(x, position in split, label, index in source)``.

    By ``index`` (position in the split) or by ``cls``: the first sample of that class
    (a class index or class name).
    """
    from shenjing._checks import choice

    choice("--split", split, SPLITS)
    data = run.data
    part = getattr(data, split)
    n = len(part)
    if cls is not None:
        classes = list(data.classes)
        if isinstance(cls, str) and not cls.lstrip("-").isdigit():
            target = classes.index(choice("--class", cls, classes))
        else:
            target = int(cls)
        hits = (part.y == target).nonzero().flatten()
        if data.task != "classification" or len(hits) == 0:
            raise UsageError(f"--class {cls!r}: no {split} sample of this class in "
                             f"{data.name!r}; choose one of "
                             f"{', '.join(f'{i}={c}' for i, c in enumerate(classes))}")
        position = int(hits[0])
    else:
        position = 0 if index is None else int(index)
        if not 0 <= position < n:
            raise UsageError(f"--index {position}: input index {position} is out of range: "
                             f"the {split} split of {data.name!r} has {n} samples; give one "
                             f"from 0 to {n - 1}, e.g. --index 0")
    label: Any = None
    if data.task == "classification":
        y = int(part.y[position])
        label = data.classes[y] if y < len(data.classes) else y
    return part.x[position], position, label, int(part.indices[position])


@dataclass(frozen=True)
class MapsResult:
    """What the maps stage wrote and measured."""

    layer: str
    epochs: tuple[int, ...]
    index: int
    label: Any
    view: str
    maps: tuple[FeatureMaps, ...]
    change: MapChange | None
    figures: tuple[Path, ...]
    json_path: Path
    gif: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """Lines for the CLI."""
        last = self.maps[-1]
        key = f" (output {last.key})" if last.key and last.key != self.layer else ""
        lines = [f"{self.layer}{key}: {self.view} ({' × '.join(last.axes)}) of input "
                 f"#{self.index} (label {self.label}) at epochs "
                 f"{', '.join(map(str, self.epochs))}"]
        unit = last.unit_name
        if self.change is not None:
            a, b = self.change.epochs
            lines.append(f"mean |Δ activation| epoch {a}→{b}: {self.change.mean_abs_change:.4g}"
                         f" ({self.change.relative_text()}); most changed {unit}s: "
                         f"{', '.join(map(str, self.change.top[:5]))}")
            if self.change.top_positions:
                lines.append(f"most changed {self.change.position_name}s: "
                             f"{', '.join(map(str, self.change.top_positions[:5]))}")
            lines.append(f"  {unit:>11}  mean|Δ|     mean before → after")
            lines += [f"  {r['channel']:>11}  {r['mean_abs_change']:<10.4g} "
                      f"{r['mean_before']:.4g} → {r['mean_after']:.4g}"
                      for r in self.change.table()[:5]]
        dead = self.extra.get("dead_channels")
        if dead is None:
            what = f"{last.module_type} outputs" if last.module_type else "these outputs"
            lines.append(f"'off' {unit}s not counted: {what} have no hard zero (counted only "
                         "after ReLU-family activations; see dead_channels_reason in the json)")
        groups: dict[tuple[int, ...], list[str]] = {}
        for e, chans in (dead or {}).items():
            groups.setdefault(tuple(chans), []).append(str(e))
        for chans, epochs in groups.items():
            if chans:
                more = " …" if len(chans) > 16 else ""
                lines.append(f"epoch {', '.join(epochs)}: {len(chans)} {unit}s off for this "
                             f"input: {', '.join(map(str, chans[:16]))}{more}")
        lines += [f"wrote {p}" for p in (*self.figures, self.json_path)]
        if self.gif:
            lines.append(f"wrote {self.gif}")
        return "\n".join(lines)


def _drawn_as(fm: FeatureMaps, view: str) -> str:
    """``grid``, ``heatmap`` or ``vector``: how ``--view`` draws this layer's output."""
    if view == "grid":
        require_spatial(fm)
    if view == "heatmap" and fm.view in ("spatial", "vector"):
        raise ShapeMismatchError(
            f"layer {fm.layer!r} gives a {fm.view} {fm.values.shape}, not a sequence, tokens or "
            f"a 1-D signal; draw it with --view {'grid' if fm.spatial else 'vector'} (the "
            "default, --view auto)")
    if view == "vector" or fm.view == "vector":
        return "vector"
    return "grid" if fm.spatial else "heatmap"


def maps_stage(run: Run, layer: str, *, index: int | None = 0, cls: int | str | None = None,
               split: str = "test", epochs: Sequence[int | str] | str = ("init", "final"),
               scale: str = "shared", order: str = "layer", top_k: int | None = None,
               view: str = "auto", gif: bool = False,
               device: str | torch.device = "auto") -> MapsResult:
    """Feature maps of ``layer`` for one input at ``epochs``, side by side, with the change.

    ``layer`` is a module name or an output key as ``shenjing layers`` prints it
    (``lstm.0``, ``block#1``). ``view``: ``'auto'`` draws each output with its axes —
    channel grids for maps, heat maps (with traces of the most changed units) for
    sequences, tokens and 1-D signals, strips for vectors; ``'grid'`` / ``'heatmap'``
    insist on one (refused with the reason when it does not fit); ``'vector'`` flattens
    any output into units. Grids and vectors of more than 64 channels show the top 32 by
    mean activation unless ``top_k`` says otherwise; heat maps show up to 256 units (or
    ``top_k``). ``gif=True`` (channel grids) also draws the most-changed channels at every
    epoch given (a strip) and one GIF frame per epoch with a fixed colour scale.

    Every option is checked, and the first epoch's output computed, before anything is
    written; then the stage is marked running, and ``done`` or ``failed`` (or ``skipped``
    when the layer returns no activations to draw).
    """
    from shenjing.plot.animate import save_gif
    from shenjing.plot.featuremaps import (
        heatmap_units,
        plot_feature_heatmap,
        plot_feature_map_strip,
        plot_feature_maps,
        plot_feature_vector,
    )

    check_maps_options(view=view, scale=scale, order=order, top_k=top_k, split=split)
    chosen_epochs = resolve_epochs(run, epochs)
    x, position, label, source = select_input(run, index=index, cls=cls, split=split)
    dev = resolve_device(device)
    try:  # the first epoch's output checks the layer and its view before any write
        first = feature_maps(run.model(chosen_epochs[0], device=dev), x, layer,
                             epoch=chosen_epochs[0], index=position, label=label)
    except Exception as exc:
        _outcome_recorded(run, "maps", exc, layer=layer)
        raise
    drawn_as = _drawn_as(first, view)
    if gif and drawn_as != "grid":
        raise UsageError(f"--gif animates channel grids; layer {layer!r} is drawn as a "
                         f"{drawn_as} ({first.view}), which shows every epoch given side by "
                         "side already: leave out --gif")
    with run.running_stage("maps", layer=layer):
        maps = [first]
        for e in chosen_epochs[1:]:
            maps.append(feature_maps(run.model(e, device=dev), x, layer, epoch=e,
                                     index=position, label=label))
        if drawn_as == "vector":
            maps = [as_vector(m) for m in maps]
        last = maps[-1]
        if top_k is None and drawn_as != "heatmap" and last.n_channels > AUTO_TOP_K_ABOVE:
            top_k = AUTO_TOP_K
        change = compare_feature_maps(maps[0], last) if len(maps) > 1 else None
        tag = "-".join(f"e{e:03d}" for e in chosen_epochs)
        base = f"maps-{safe_name(layer)}-{split}{position}"
        stem = f"{base}-{tag}"
        where = f"{split} #{position} (file index {source}), label {label}"
        if drawn_as == "grid":
            fig = plot_feature_maps(maps, scale=scale, order=order, top_k=top_k,  # type: ignore[arg-type]
                                    change=change, title=f"{layer} feature maps · {where}")
            shown = select_channels(last.values, order=order, top_k=top_k)  # type: ignore[arg-type]
        elif drawn_as == "heatmap":
            fig = plot_feature_heatmap(maps, change=change, max_units=top_k or 256,
                                       title=f"{layer}: {last.view} "
                                             f"({' × '.join(last.axes)}) · {where}")
            shown = heatmap_units(last, change, top_k or 256)
        else:
            fig = plot_feature_vector(maps, order=order, top_k=top_k, change=change,  # type: ignore[arg-type]
                                      title=f"{layer} activations (a vector) · {where}")
            shown = select_channels(last.values, order=order, top_k=top_k)  # type: ignore[arg-type]
        figures = save_figure(fig, run.figures_dir, stem)
        strip_path: Path | None = None
        gif_path: Path | None = None
        out_dir = run.subdir("maps")
        if gif:
            top = list(change.top[:8]) if change is not None else [int(c) for c in shown[:8]]
            strip = plot_feature_map_strip(maps, top, title=f"{layer}: most changed channels "
                                           f"across epochs · {where}")
            figures += save_figure(strip, run.figures_dir, f"{base}-strip")
            strip_path = next(p for p in reversed(figures) if p.suffix == ".png")
            gif_path = _maps_gif(maps, [int(c) for c in shown], out_dir / f"{base}.gif",
                                 save_gif)
        dead = ({str(m.epoch): [int(c) for c in np.flatnonzero(m.dead())] for m in maps}
                if last.counts_off else None)
        record = {
            "layer": layer, "key": last.key, "module_type": last.module_type, "split": split,
            "index": position, "source_index": source, "label": label,
            "epochs": chosen_epochs, "view": last.view, "axes": list(last.axes),
            "shape": list(last.values.shape),
            "flattened_from": list(last.flattened_from) if last.flattened_from else None,
            "drawn_as": drawn_as, "scale": scale, "order": order, "top_k": top_k,
            "channels_shown": [int(c) for c in shown], "dead_channels": dead,
            "dead_channels_rule": last.off_rule, "dead_channels_reason": last.off_reason(),
            "change": change.to_dict() if change is not None else None,
            "figures": [str(p.relative_to(run.path)) for p in figures],
            "strip": str(strip_path.relative_to(run.path)) if strip_path else None,
            "gif": str(gif_path.relative_to(run.path)) if gif_path else None,
        }
        json_path = _io.write_json(out_dir / f"{stem}.json", record)
        _io.save_npz(out_dir / f"{stem}.npz", values=np.stack([m.values for m in maps]),
                     epochs=np.array(chosen_epochs), input=maps[0].input)
        run.update_stage("maps", "done", layer=layer, view=last.view,
                         json=str(json_path.relative_to(run.path)),
                         mean_abs_change=change.mean_abs_change if change else None)
    return MapsResult(layer=layer, epochs=tuple(chosen_epochs), index=position, label=label,
                      view=last.view, maps=tuple(maps), change=change,
                      figures=tuple(figures), json_path=json_path, gif=gif_path,
                      extra={"dead_channels": dead, "dead_reason": last.off_reason()})


def _maps_gif(maps: Sequence[FeatureMaps], shown: list[int], path: Path,
              save_gif: Any) -> Path:
    """One frame per epoch with one fixed colour scale, rendered and closed one at a time."""
    import matplotlib.pyplot as plt

    from shenjing.plot.animate import figure_to_array
    from shenjing.plot.featuremaps import plot_feature_maps

    values = np.stack([m.values[shown] for m in maps])
    lo, hi = float(values.min()), float(values.max())
    frames = []
    for m in maps:  # bounded memory
        frame = plot_feature_maps([m], channels=shown, limits=(lo, hi if hi > lo else lo + 1))
        frames.append(figure_to_array(frame))
        plt.close(frame)
    return Path(save_gif(frames, path))


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
    try:  # which layer, and whether it has kernels: from the checkpoint's shapes alone
        layer, kind = _filters_layer(run, layer, chosen_epochs[-1])
    except Exception as exc:
        _outcome_recorded(run, "filters", exc, layer=layer)
        raise
    types = module_types(run)
    input_shape = _input_shape(run)
    with run.running_stage("filters", layer=layer):
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
