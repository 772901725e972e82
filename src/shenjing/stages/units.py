"""Stage ``units``: what real inputs excite each unit of one layer most, untrained next to
trained.

For each epoch asked for, :func:`shenjing.analysis.units.top_activations` (the function a
notebook calls) streams ``n`` inputs of the split through the model once and keeps each
unit's ``top`` inputs by mean or max activation; for conv layers
:func:`shenjing.analysis.units.receptive_field` measures the field each position sees, so
the figure shows the crop of the input under it (clipped at the image border).

Files written (``<layer>`` made file-safe, epochs as three digits):

``units/units-<layer>-e<NNN>.json|npz``
    per unit: the top values, the inputs' positions in the subset and in the split, their
    labels, the class purity of the top-k (how many share the most common label), the
    crop centres; the receptive field.
``figures/units-<layer>-e<NNN>.png|svg``
    units × (best input with its field box, then the top crops), each titled with its
    activation and label.

Stage record: ``stages.units`` — ``done`` with per epoch and unit the top values, split
indices, labels and purity. Options are checked before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing._device import resolve_device
from shenjing.analysis.units import REDUCES, ReceptiveField, TopUnits
from shenjing.errors import NotApplicableError, UsageError
from shenjing.plot.save import save_figure
from shenjing.runs import Run
from shenjing.stages._inputs import resolve_epochs

#: the most top inputs per unit
MAX_TOP = 64
#: the most inputs one pass may stream
MAX_N = 1_000_000


def _span(units: Sequence[int]) -> str:
    """Units as the user would type them: ``0:999`` for a run of numbers, else a list."""
    if len(units) > 3 and list(units) == list(range(units[0], units[-1] + 1)):
        return f"{units[0]}:{units[-1] + 1}"
    return ",".join(str(u) for u in units)


def parse_channels(text: str | Sequence[int] | None) -> list[int] | None:
    """``'0:16'`` → 0 … 15, ``'3,5,8'`` → those, ``'4'`` → [4]; None stays None (all).

    >>> parse_channels("2:5"), parse_channels("1,3")
    ([2, 3, 4], [1, 3])
    """
    from shenjing._checks import unit_list

    if text is None:
        return None
    if not isinstance(text, str):
        return [int(c) for c in text]
    return unit_list("--channels", text, example="0:16")


def check_units_options(*, top: int, reduce: str, n: int | None, batch_size: int,
                        split: str) -> None:
    """Refuse options that cannot work, before anything is read or written."""
    from shenjing._checks import bounded_int, choice

    bounded_int("--top", top, low=1, high=MAX_TOP, example=9,
                why="the top inputs shown per unit")
    choice("--reduce", reduce, REDUCES)
    if n is not None:
        bounded_int("--n", n, low=1, high=MAX_N, example=10000,
                    why="the inputs searched for each unit's top ones")
    bounded_int("--batch-size", batch_size, low=1, example=256)
    choice("--split", split, ("test", "train"))


@dataclass(frozen=True)
class UnitsEpoch:
    """One epoch of the view: the top inputs and the measured receptive field."""

    epoch: int
    top: TopUnits
    field: ReceptiveField | None


@dataclass(frozen=True)
class UnitsResult:
    """What the units stage measured and wrote."""

    layer: str
    epochs: tuple[UnitsEpoch, ...]
    figures: tuple[Path, ...]
    files: tuple[Path, ...]
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """Lines for the CLI: per epoch the field, the mean purity and the best units."""
        lines = list(self.notes)
        for e in self.epochs:
            purity = e.top.purity()
            pure = (f", mean purity {float(purity.mean()):.2f}/{e.top.k}"
                    if purity is not None else "")
            rf = f", receptive field {e.field.describe()}" if e.field is not None else ""
            lines.append(f"epoch {e.epoch}: {self.layer}: {e.top.n_units} units × top "
                         f"{e.top.k} of {e.top.n_samples} inputs by {e.top.reduce}{pure}{rf}")
        lines += [f"wrote {p}" for p in self.figures if p.suffix == ".png"]
        return "\n".join(lines)


def units_stage(run: Run, *, layer: str, top: int = 9, reduce: str = "mean",
                channels: Sequence[int] | str | None = None,
                epochs: Sequence[int | str] | str = ("init", "final"), split: str = "test",
                n: int | None = None, batch_size: int = 256,
                device: str | torch.device = "auto",
                on_plan: Callable[[str], None] | None = None) -> UnitsResult:
    """The top ``top`` inputs of each unit of ``layer`` (among ``n`` inputs of ``split``,
    None: all), by ``reduce`` activation, at ``epochs``; ``channels`` picks units
    (``'0:16'``, a list; None: all). A layer that does not exist is a
    :class:`~shenjing.errors.LayerNotFoundError` listing the layers, nothing written.
    """
    from shenjing import filenames
    from shenjing.analysis.units import receptive_field, top_activations, unit_layout

    check_units_options(top=top, reduce=reduce, n=n, batch_size=batch_size, split=split)
    units = parse_channels(channels)
    chosen = resolve_epochs(run, epochs)
    dev = resolve_device(device, option="--device")
    source = getattr(run.data, split)
    notes: list[str] = []
    if n is not None and n > len(source):
        notes.append(f"--n {n} capped to the {len(source)} {split} samples")
    data = source.subset(n, seed=0)
    first_model = run.model(chosen[0], device=dev)
    layout = unit_layout(first_model, data.x[:2].to(dev), layer)  # bad layer: nothing written
    if units is not None:
        bad = [u for u in units if not 0 <= u < layout.n_units]
        if bad or not units:
            shown = channels if isinstance(channels, str) else _span(units)
            raise UsageError(f"--channels {shown}: unit {bad[0] if bad else '?'} is out of "
                             f"range: layer {layer!r} has {layout.n_units} units "
                             f"(0–{layout.n_units - 1}); e.g. --channels "
                             f"0:{min(16, layout.n_units)}")
    if on_plan is not None:
        on_plan(f"units: {layout.key}: {layout.n_units} units, maps "
                f"{layout.map_shape or '(none)'}; top {top} of {len(data)} {split} inputs")
    image_shape = tuple(int(s) for s in data.x.shape[1:])
    split_index = data.indices.cpu().numpy()
    stem = f"units-{filenames.safe_name(layout.key)}"
    with run.running_stage("units", layer=layout.key, epochs=chosen):
        results: list[UnitsEpoch] = []
        for e in chosen:
            model = first_model if e == chosen[0] else run.model(e, device=dev)
            found = top_activations(model, data, layout.key, k=top, reduce=reduce,
                                    units=units, batch_size=batch_size, device=dev)
            field = None
            if found.positions is not None and len(image_shape) == len(found.map_shape) + 1:
                try:
                    field = receptive_field(model, layout.key, image_shape, device=dev)
                except NotApplicableError:
                    field = None
            results.append(UnitsEpoch(e, found, field))
            del model
        out = run.subdir("units")
        figures: list[Path] = []
        files: list[Path] = []
        images = data.x.cpu().numpy()
        for r in results:
            name = f"{stem}-e{r.epoch:03d}"
            figures += _draw(run, r, images, name)
            extra = {"epoch": r.epoch, "split": split,
                     "split_indices": split_index[r.top.indices].tolist(),
                     "receptive_field": None if r.field is None else r.field.to_dict(),
                     "figures": [str(p.relative_to(run.path)) for p in figures
                                 if p.stem == name]}
            files += _save(r.top, out / name, extra)
        run.update_stage("units", "done", **_record(run, results, split_index, split))
    return UnitsResult(layer=layout.key, epochs=tuple(results), figures=tuple(figures),
                       files=tuple(files), notes=tuple(notes))


def _save(top: TopUnits, path: Path, extra: dict[str, Any]) -> list[Path]:
    """The result with the stage's own fields (epoch, split indices, field, figures)."""
    import dataclasses

    return dataclasses.replace(top, extra={**top.extra, **extra}).save(path)


def _draw(run: Run, r: UnitsEpoch, images: np.ndarray, name: str) -> list[Path]:
    from shenjing.plot.units import plot_top_units

    fig = plot_top_units(r.top, images, field=r.field, classes=run.classes or None,
                         epoch=r.epoch)
    return save_figure(fig, run.figures_dir, name)


def _record(run: Run, results: list[UnitsEpoch], split_index: np.ndarray, split: str
            ) -> dict[str, Any]:
    """The numbers ``run.json`` keeps: per epoch and unit the top values, split indices,
    labels and purity."""
    per_epoch: dict[str, Any] = {}
    for r in results:
        t = r.top
        purity = t.purity()
        units = []
        for i, u in enumerate(t.units.tolist()):
            rec: dict[str, Any] = {"unit": int(u),
                                   "values": [round(float(v), 5) for v in t.values[i]],
                                   "indices": split_index[t.indices[i]].tolist()}
            if t.labels is not None and purity is not None:
                rec["labels"] = t.labels[i].tolist()
                rec["purity"] = int(purity[i])
            units.append(rec)
        per_epoch[str(r.epoch)] = {
            "k": t.k, "n_samples": t.n_samples, "reduce": t.reduce,
            "receptive_field": None if r.field is None else r.field.to_dict(),
            "mean_purity": None if purity is None else round(float(purity.mean()), 3),
            "units": units}
    last = results[-1]
    return {"layer": last.top.layer, "split": split, "epochs": [r.epoch for r in results],
            "by_epoch": per_epoch,
            "json": [f"units/units-{_safe(last.top.layer)}-e{r.epoch:03d}.json"
                     for r in results]}


def _safe(key: str) -> str:
    from shenjing import filenames

    return filenames.safe_name(key)


__all__ = ["UnitsEpoch", "UnitsResult", "check_units_options", "parse_channels",
           "units_stage"]
