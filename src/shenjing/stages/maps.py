"""Stage ``maps``: feature maps of one layer for one input at chosen epochs, as files.

Files written (``<L>`` = layer name or output key with characters other than letters,
digits, ``._-`` replaced by ``_`` — ``block#1`` → ``block_1``; epochs as three digits):

``figures/maps-<L>-<split><index>-e<A>-e<B>.png|svg``
    the layer's output for one input at the chosen epochs, side by side, its axes kept (see
    :mod:`shenjing.analysis.maps` for the views): channel grids of ``spatial`` maps;
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
The stage record in ``run.json`` is ``stages.maps`` with the last
call's ``layer``, ``json`` path and numbers: ``done``, ``failed`` (with the error) or
``skipped`` (with the reason: the view does not apply to that layer, e.g. the filters of an
LSTM). Options are checked before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing import _io
from shenjing._device import resolve_device
from shenjing.analysis.maps import (
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
from shenjing.errors import ShapeMismatchError, UsageError
from shenjing.filenames import safe_name
from shenjing.plot.save import save_figure
from shenjing.runs import Run
from shenjing.stages._inputs import resolve_epochs

AUTO_TOP_K_ABOVE = 64  # layers with more channels show the top 32 unless asked otherwise
AUTO_TOP_K = 32
MAP_VIEWS = ("auto", "grid", "heatmap", "vector")
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

    Every option is checked before anything is written; then the stage is marked running
    and ends ``done``, ``failed`` or ``skipped`` (the layer returns no activations to draw).
    The first epoch's output is computed first: an unknown layer or a ``view`` that does
    not fit it puts run.json back as it was.
    """
    from shenjing.plot.animate import save_gif
    from shenjing.plot.maps import (
        heatmap_units,
        plot_feature_heatmap,
        plot_feature_map_strip,
        plot_feature_maps,
        plot_feature_vector,
    )

    check_maps_options(view=view, scale=scale, order=order, top_k=top_k, split=split)
    chosen_epochs = resolve_epochs(run, epochs)
    x, position, label, source = select_input(run, index=index, cls=cls, split=split)
    dev = resolve_device(device, option="--device")
    with run.running_stage("maps", layer=layer):
        # the first epoch's output checks the layer and its view before any file is written
        first = feature_maps(run.model(chosen_epochs[0], device=dev), x, layer,
                             epoch=chosen_epochs[0], index=position, label=label)
        drawn_as = _drawn_as(first, view)
        if gif and drawn_as != "grid":
            raise UsageError(f"--gif animates channel grids; layer {layer!r} is drawn as a "
                             f"{drawn_as} ({first.view}), which shows every epoch given side "
                             "by side already: leave out --gif")
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
    from shenjing.plot.maps import plot_feature_maps

    values = np.stack([m.values[shown] for m in maps])
    lo, hi = float(values.min()), float(values.max())
    frames = []
    for m in maps:  # bounded memory
        frame = plot_feature_maps([m], channels=shown, limits=(lo, hi if hi > lo else lo + 1))
        frames.append(figure_to_array(frame))
        plt.close(frame)
    return Path(save_gif(frames, path))
