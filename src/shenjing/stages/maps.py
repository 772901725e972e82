"""Stages ``maps`` and ``filters``: feature maps and filters of a run, as files.

Files written (``<L>`` = layer name with characters other than letters, digits, ``._-``
replaced by ``_``; epochs as three digits):

``figures/maps-<L>-<split><index>-e<A>-e<B>.png|svg``
    the layer's output for one input at the chosen epochs, side by side (vector layers:
    heat strip + bars). ``-e<A>-e<B>`` lists every epoch shown.
``maps/maps-<L>-<split><index>-e<A>-e<B>.json``
    ``{"layer", "split", "index", "source_index", "label", "epochs", "view", "shape",
    "scale", "order", "top_k", "channels_shown", "dead_channels": {epoch: [...]},
    "change": {"epochs", "mean_abs_change", "relative_change", "per_channel_change",
    "top_changed": [{"channel", "mean_abs_change", "mean_before", "mean_after"}]} | null,
    "figures": [...], "strip": path | null, "gif": path | null}``
``maps/maps-….npz``
    ``values`` ``(epochs, channels, H, W)`` or ``(epochs, features)``, ``epochs``, ``input``.
``figures/maps-<L>-<split><index>-strip.png|svg`` and ``maps/maps-<L>-<split><index>.gif``
    (with ``gif=True``) the most-changed channels at every epoch, and one frame per epoch.
``figures/filters-<L>-e<E>.png|svg``
    kernels of a conv layer (RGB for 3 input channels, grey for 1, the capped out×in
    kernel grid otherwise) or a first linear layer's units as input-shaped images.
``figures/filters-<L>-epochs.png|svg``, ``maps/filters-<L>.gif``
    (with several epochs) kernels at every epoch and an animation.
``maps/filters-<L>.json``
    ``{"layer", "shape", "kind", "view", "epochs", "figures", "gif", "change": {...} | null}``.

The stage record in ``run.json`` is ``stages.maps`` / ``stages.filters`` with the last
call's ``layer``, ``json`` path and numbers.
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
    FeatureMaps,
    MapChange,
    check_layer,
    compare_feature_maps,
    feature_maps,
    require_spatial,
    select_channels,
)
from shenjing.analysis.filters import (
    Filters,
    filter_change,
    first_conv_layer,
    layer_filters,
    unit_images,
)
from shenjing.errors import UsageError
from shenjing.plot.save import save_figure
from shenjing.runs import Run

AUTO_TOP_K_ABOVE = 64  # layers with more channels show the top 32 unless asked otherwise
AUTO_TOP_K = 32


def safe_name(layer: str) -> str:
    """A layer name usable in a file name: ``features.0`` stays, ``a/b`` → ``a_b``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", layer) or "model"




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
    if split not in ("train", "test"):
        raise UsageError(f"split {split!r} must be 'train' or 'test'")
    data = run.data
    part = getattr(data, split)
    n = len(part)
    if cls is not None:
        classes = list(data.classes)
        if isinstance(cls, str) and not cls.lstrip("-").isdigit():
            if cls not in classes:
                raise UsageError(f"class {cls!r} is not one of {', '.join(classes)}")
            target = classes.index(cls)
        else:
            target = int(cls)
        hits = (part.y == target).nonzero().flatten()
        if data.task != "classification" or len(hits) == 0:
            raise UsageError(f"no {split} sample of class {cls!r} in {data.name!r}; classes: "
                             f"{', '.join(f'{i}={c}' for i, c in enumerate(classes))}")
        position = int(hits[0])
    else:
        position = 0 if index is None else int(index)
        if not -n <= position < n:
            raise UsageError(f"input index {position} is out of range: the {split} split of "
                             f"{data.name!r} has {n} samples (0…{n - 1})")
        position %= n
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
        lines = [f"{self.layer}: {self.view} of input #{self.index} (label {self.label}) at "
                 f"epochs {', '.join(map(str, self.epochs))}"]
        if self.change is not None:
            a, b = self.change.epochs
            lines.append(f"mean |Δ activation| epoch {a}→{b}: {self.change.mean_abs_change:.4g}"
                         f" ({self.change.relative_change:.0%} of mean |activation| at "
                         f"epoch {a}); most changed channels: "
                         f"{', '.join(map(str, self.change.top[:5]))}")
            lines.append("  channel  mean|Δ|     mean before → after")
            lines += [f"  {r['channel']:>7}  {r['mean_abs_change']:<10.4g} "
                      f"{r['mean_before']:.4g} → {r['mean_after']:.4g}"
                      for r in self.change.table()[:5]]
        groups: dict[tuple[int, ...], list[str]] = {}
        for e, chans in self.extra.get("dead_channels", {}).items():
            groups.setdefault(tuple(chans), []).append(str(e))
        for chans, epochs in groups.items():
            if chans:
                more = " …" if len(chans) > 16 else ""
                lines.append(f"epoch {', '.join(epochs)}: {len(chans)} channels off for this "
                             f"input: {', '.join(map(str, chans[:16]))}{more}")
        lines += [f"wrote {p}" for p in (*self.figures, self.json_path)]
        if self.gif:
            lines.append(f"wrote {self.gif}")
        return "\n".join(lines)




def maps_stage(run: Run, layer: str, *, index: int | None = 0, cls: int | str | None = None,
               split: str = "test", epochs: Sequence[int | str] | str = ("init", "final"),
               scale: str = "shared", order: str = "layer", top_k: int | None = None,
               view: str = "auto", gif: bool = False,
               device: str | torch.device = "auto") -> MapsResult:
    """Feature maps of ``layer`` for one input at ``epochs``, side by side, with the change.

    ``view``: ``'grid'`` (channel maps; refused for vector layers with the reason),
    ``'vector'`` (heat strip + bars), or ``'auto'``. Layers with more than 64 channels
    show the top 32 by mean activation unless ``top_k`` says otherwise. ``gif=True`` also
    draws the most-changed channels at every epoch given (a strip) and one GIF frame per
    epoch with a fixed colour scale.
    """
    from shenjing.plot.animate import save_gif
    from shenjing.plot.featuremaps import (
        plot_feature_map_strip,
        plot_feature_maps,
        plot_feature_vector,
    )

    if view not in ("auto", "grid", "vector"):
        raise UsageError(f"view {view!r} must be 'auto', 'grid' or 'vector'")
    chosen_epochs = resolve_epochs(run, epochs)
    x, position, label, source = select_input(run, index=index, cls=cls, split=split)
    dev = resolve_device(device)
    run.update_stage("maps", "running", layer=layer)
    maps: list[FeatureMaps] = []
    for e in chosen_epochs:
        model = run.model(e, device=dev)
        check_layer(model, layer)
        maps.append(feature_maps(model, x, layer, epoch=e, index=position, label=label))
        del model
    spatial = maps[0].spatial
    if view == "grid":
        require_spatial(maps[0])
    use_grid = spatial and view != "vector"
    view_name = "grid" if use_grid else "vector"
    n_channels = maps[0].n_channels
    if top_k is None and n_channels > AUTO_TOP_K_ABOVE:
        top_k = AUTO_TOP_K
    change = compare_feature_maps(maps[0], maps[-1]) if len(maps) > 1 else None
    tag = "-".join(f"e{e:03d}" for e in chosen_epochs)
    base = f"maps-{safe_name(layer)}-{split}{position}"
    stem = f"{base}-{tag}"
    where = f"{split} #{position} (file index {source}), label {label}"
    if use_grid:
        fig = plot_feature_maps(maps, scale=scale, order=order, top_k=top_k,  # type: ignore[arg-type]
                                change=change, title=f"{layer} feature maps · {where}")
    else:
        flat = [FeatureMaps(m.layer, m.values.reshape(-1), m.epoch, m.index, m.label, m.input)
                for m in maps]
        fig = plot_feature_vector(flat, order=order, top_k=top_k, change=change,  # type: ignore[arg-type]
                                  title=f"{layer} activations (a vector) · {where}")
    figures = save_figure(fig, run.figures_dir, stem)
    shown = select_channels(maps[-1].values, order=order, top_k=top_k)  # type: ignore[arg-type]
    strip_path: Path | None = None
    gif_path: Path | None = None
    out_dir = run.subdir("maps")
    if gif and use_grid:
        top = list(change.top[:8]) if change is not None else [int(c) for c in shown[:8]]
        strip = plot_feature_map_strip(maps, top, title=f"{layer}: most changed channels "
                                       f"across epochs · {where}")
        figures += save_figure(strip, run.figures_dir, f"{base}-strip")
        strip_path = next(p for p in reversed(figures) if p.suffix == ".png")
        values = np.stack([m.values[shown] for m in maps])
        lo, hi = float(values.min()), float(values.max())
        import matplotlib.pyplot as plt

        from shenjing.plot.animate import figure_to_array

        frames = []
        for m in maps:  # render and close one frame at a time: bounded memory
            frame = plot_feature_maps([m], channels=[int(c) for c in shown],
                                      limits=(lo, hi if hi > lo else lo + 1))
            frames.append(figure_to_array(frame))
            plt.close(frame)
        gif_path = save_gif(frames, out_dir / f"{base}.gif")
    dead = {str(m.epoch): [int(c) for c in np.flatnonzero(m.dead())] for m in maps}
    record = {
        "layer": layer, "split": split, "index": position, "source_index": source,
        "label": label, "epochs": chosen_epochs, "view": view_name,
        "shape": list(maps[0].values.shape), "scale": scale, "order": order, "top_k": top_k,
        "channels_shown": [int(c) for c in shown], "dead_channels": dead,
        "change": change.to_dict() if change is not None else None,
        "figures": [str(p.relative_to(run.path)) for p in figures],
        "strip": str(strip_path.relative_to(run.path)) if strip_path else None,
        "gif": str(gif_path.relative_to(run.path)) if gif_path else None,
    }
    json_path = _io.write_json(out_dir / f"{stem}.json", record)
    _io.save_npz(out_dir / f"{stem}.npz", values=np.stack([m.values for m in maps]),
                 epochs=np.array(chosen_epochs), input=maps[0].input)
    run.update_stage("maps", "done", layer=layer, json=str(json_path.relative_to(run.path)),
                     mean_abs_change=change.mean_abs_change if change else None)
    return MapsResult(layer=layer, epochs=tuple(chosen_epochs), index=position, label=label,
                      view=view_name, maps=tuple(maps), change=change,
                      figures=tuple(figures), json_path=json_path, gif=gif_path,
                      extra={"dead_channels": dead})


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


def _input_shape(run: Run) -> tuple[int, ...]:
    spec = run.manifest.get("model", {})
    if spec.get("input_shape"):
        return tuple(int(s) for s in spec["input_shape"])
    return tuple(run.data.input_shape)


def filters_stage(run: Run, layer: str | None = None, *,
                  epochs: Sequence[int | str] | str = ("final",), max_filters: int = 64,
                  max_in: int = 16, scale: str = "filter", gif: bool = False) -> FiltersResult:
    """Draw ``layer``'s filters (default: the first conv layer) at each of ``epochs``.

    Conv layers with 1 or 3 input channels: one image per filter (RGB for 3); more input
    channels: the out×in kernel grid capped at ``max_filters × max_in``. A linear layer on
    image input: each unit's weights as an image of the input (``max_filters`` units).
    With several epochs, also the kernels at every epoch (and a GIF with ``gif=True``) and
    the relative change of each filter between the first and last epoch.
    """
    from shenjing.plot.animate import save_gif
    from shenjing.plot.filters import (
        plot_filters,
        plot_filters_over_epochs,
        plot_kernel_grid,
        plot_unit_images,
    )

    chosen_epochs = resolve_epochs(run, epochs)
    states = {e: run.state_dict(e) for e in chosen_epochs}
    first = states[chosen_epochs[0]]
    if layer is None:
        try:
            layer = first_conv_layer(first)
        except UsageError:
            layer = next((k[:-7] for k, v in first.items()
                          if k.endswith(".weight") and v.ndim == 2), None)
            if layer is None:
                raise UsageError("the run's model has no conv or linear weight to draw; "
                                 "name a layer with --layer") from None
    history = [layer_filters(states[e], layer, epoch=e) for e in chosen_epochs]
    kind = history[0].kind
    input_shape = _input_shape(run)
    if kind == "linear":
        images = [unit_images(f, input_shape, max_units=max_filters, scale=scale)  # type: ignore[arg-type]
                  for f in history]  # raises when the layer's inputs are not the image
        view = "unit images"
    else:
        view = "filters" if history[0].n_in in (1, 3) else "kernel grid"
    run.update_stage("filters", "running", layer=layer)
    figures: list[Path] = []
    frames = []
    for i, f in enumerate(history):
        if kind == "linear":
            fig = plot_unit_images(images[i], layer=layer, epoch=f.epoch, scale=scale)  # type: ignore[arg-type]
        elif view == "filters":
            fig = plot_filters(f, max_filters=max_filters, scale=scale)  # type: ignore[arg-type]
        else:
            fig = plot_kernel_grid(f, max_out=min(max_filters, 16), max_in=max_in)
        if gif and len(history) > 1:
            from shenjing.plot.animate import figure_to_array

            frames.append(figure_to_array(fig))
        figures += save_figure(fig, run.figures_dir,
                                  f"filters-{safe_name(layer)}-e{f.epoch:03d}")
    change = filter_change(history[0], history[-1]) if len(history) > 1 else None
    if len(history) > 1 and kind == "conv":
        fig = plot_filters_over_epochs(history, max_filters=min(max_filters, 16))
        figures += save_figure(fig, run.figures_dir, f"filters-{safe_name(layer)}-epochs")
    gif_path = None
    out_dir = run.subdir("maps")
    if frames:
        gif_path = save_gif(frames, out_dir / f"filters-{safe_name(layer)}.gif")
    record = {"layer": layer, "shape": list(history[0].weight.shape), "kind": kind,
              "view": view, "epochs": chosen_epochs,
              "figures": [str(p.relative_to(run.path)) for p in figures],
              "gif": str(gif_path.relative_to(run.path)) if gif_path else None,
              "change": change}
    json_path = _io.write_json(out_dir / f"filters-{safe_name(layer)}.json", record)
    run.update_stage("filters", "done", layer=layer, json=str(json_path.relative_to(run.path)))
    return FiltersResult(layer=layer, view=view, epochs=tuple(chosen_epochs),
                         filters=tuple(history), change=change, figures=tuple(figures),
                         json_path=json_path, gif=gif_path)
