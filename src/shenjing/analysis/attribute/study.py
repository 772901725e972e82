"""One epoch's attribution maps and checks, the study over epochs, and their files.

:func:`epoch_attribution` runs every method on the same inputs and classes (the trained
model's prediction by default), and with ``checks=True`` the randomization test and the
deletion / insertion curves of each; :func:`attribution_study` collects epochs.
:meth:`AttributionStudy.save` writes, atomically (``shenjing._io``), per epoch
``attribute-e<NNN>.json`` (options, layers, stages, verdicts) and ``attribute-e<NNN>.npz``
(inputs, maps, raw outputs, per-sample numbers), and ``summary.json``;
:func:`load_attribution` reads them back into the same objects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from shenjing import _io
from shenjing.errors import UsageError

from .faithfulness import DeletionInsertion, deletion_insertion
from .methods import METHODS, AttributionMaps, Completeness, attribute
from .randomization import RandomizationResult, randomization_test

_COMP = ("sum_attr", "f_x", "f_baseline", "delta", "relative_error")
_CURVES = ("deletion", "insertion", "deletion_random", "insertion_random")
#: options of attribute() that the checks take too
_SHARED = ("steps", "ig_method", "noise", "n_noise", "window", "stride", "layer",
           "baseline", "data_mean", "batch_size", "device")


@dataclass(frozen=True)
class EpochAttribution:
    """Maps of each method at one epoch on ``inputs`` ``(N, C, H, W)``, for ``targets``,
    with the model's ``predictions`` / ``probabilities`` and the checks per method."""

    epoch: int
    inputs: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray
    maps: dict[str, AttributionMaps]
    randomization: dict[str, RandomizationResult] = field(default_factory=dict)
    faithfulness: dict[str, DeletionInsertion] = field(default_factory=dict)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.maps)

    def lines(self) -> list[str]:
        """The numbers per method: completeness, the randomization verdict, the AUCs."""
        out = [f"epoch {self.epoch}: {len(self.inputs)} input(s), accuracy "
               f"{float(np.mean(self.predictions == self.labels)):.1%}"]
        for m, a in self.maps.items():
            if a.completeness is not None:
                out.append(f"  {m} {a.completeness.text()}")
            if m in self.randomization:
                r = self.randomization[m]
                out.append(f"  {r.verdict}")
                out.extend("  " + line for line in r.stage_lines())
            if m in self.faithfulness:
                out.extend(f"  {m} {line}" for line in self.faithfulness[m].lines())
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "n_samples": len(self.inputs),
                "labels": self.labels.tolist(), "targets": self.targets.tolist(),
                "predictions": self.predictions.tolist(),
                "maps": {m: a.to_dict() for m, a in self.maps.items()},
                "randomization": {m: r.to_dict() for m, r in self.randomization.items()},
                "faithfulness": {m: f.to_dict() for m, f in self.faithfulness.items()}}

    def _meta(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "methods": list(self.maps),
                "maps": {m: {"method": a.method, "signed": a.signed, "layer": a.layer,
                             "options": _io.to_jsonable(a.options),
                             "completeness": a.completeness is not None}
                         for m, a in self.maps.items()},
                "randomization": {m: {"method": r.method, "stages": list(r.stages),
                                      "threshold": r.threshold, "seed": r.seed,
                                      "options": _io.to_jsonable(r.options),
                                      "verdict": r.verdict}
                                  for m, r in self.randomization.items()},
                "faithfulness": {m: {"baseline": f.baseline, "seed": f.seed}
                                 for m, f in self.faithfulness.items()}}

    def _arrays(self) -> dict[str, np.ndarray]:
        arr: dict[str, np.ndarray] = {
            "inputs": self.inputs, "labels": self.labels, "targets": self.targets,
            "predictions": self.predictions, "probabilities": self.probabilities}
        for m, a in self.maps.items():
            arr[f"{m}-maps"], arr[f"{m}-raw"] = a.maps, a.raw
            if a.completeness is not None:
                for k in _COMP:
                    arr[f"{m}-completeness-{k}"] = getattr(a.completeness, k)
        for m, r in self.randomization.items():
            arr[f"{m}-rand-spearman"], arr[f"{m}-rand-ssim"] = r.spearman, r.ssim
            arr[f"{m}-rand-original"], arr[f"{m}-rand-maps"] = r.original, r.randomized
        for m, f in self.faithfulness.items():
            arr[f"{m}-faith-fractions"], arr[f"{m}-faith-targets"] = f.fractions, f.targets
            for k in _CURVES:
                arr[f"{m}-faith-{k}"] = getattr(f, k)
        return arr

    def save(self, folder: str | os.PathLike[str]) -> list[Path]:
        """``attribute-e<NNN>.json`` and ``.npz`` in ``folder`` (each written atomically)."""
        folder = _io.make_folder(folder)
        stem = f"attribute-e{self.epoch:03d}"
        return [_io.save_npz(folder / f"{stem}.npz", **self._arrays()),
                _io.write_json(folder / f"{stem}.json", self._meta())]


def _load_epoch(json_path: Path) -> EpochAttribution:
    meta = _io.read_json(json_path)
    with np.load(json_path.with_suffix(".npz"), allow_pickle=False) as z:
        arr = {k: z[k] for k in z.files}
    maps = {}
    order = list(meta["methods"])  # the JSON is written with sorted keys
    for m in order:
        d = meta["maps"][m]
        comp = (Completeness(**{k: arr[f"{m}-completeness-{k}"] for k in _COMP})
                if d["completeness"] else None)
        maps[m] = AttributionMaps(
            method=d["method"], maps=arr[f"{m}-maps"], raw=arr[f"{m}-raw"],
            targets=arr["targets"], predictions=arr["predictions"],
            probabilities=arr["probabilities"], signed=d["signed"], options=d["options"],
            layer=d["layer"], completeness=comp)
    rand = {m: RandomizationResult(
        method=d["method"], stages=tuple(d["stages"]), spearman=arr[f"{m}-rand-spearman"],
        ssim=arr[f"{m}-rand-ssim"], original=arr[f"{m}-rand-original"],
        randomized=arr[f"{m}-rand-maps"], threshold=d["threshold"], seed=d["seed"],
        options=d["options"]) for m in order if (d := meta["randomization"].get(m))}
    faith = {m: DeletionInsertion(
        fractions=arr[f"{m}-faith-fractions"], targets=arr[f"{m}-faith-targets"],
        baseline=d["baseline"], seed=d["seed"],
        **{k: arr[f"{m}-faith-{k}"] for k in _CURVES})
        for m in order if (d := meta["faithfulness"].get(m)) is not None}
    return EpochAttribution(
        epoch=int(meta["epoch"]), inputs=arr["inputs"], labels=arr["labels"],
        targets=arr["targets"], predictions=arr["predictions"],
        probabilities=arr["probabilities"], maps=maps, randomization=rand,
        faithfulness=faith)


def epoch_attribution(model: nn.Module, x: Any, *, labels: Any,
                      methods: Sequence[str] = METHODS, epoch: int = 0,
                      target: Any = "predicted", checks: bool = True, seed: int = 0,
                      fractions: int = 20, **options: Any) -> EpochAttribution:
    """Every method on ``x`` at one epoch for the same classes (``target`` resolved once),
    with the randomization test and deletion / insertion of each when ``checks``;
    ``options`` go to :func:`attribute` (steps, baseline, layer, …)."""
    for m in methods:
        if m not in METHODS:
            from shenjing.errors import unknown_name

            raise unknown_name("attribution method", m, METHODS)
    if not methods:
        raise UsageError("epoch_attribution needs at least one method, e.g. "
                         "methods=('saliency',)")
    out: dict[str, AttributionMaps] = {}
    first = attribute(model, x, method=methods[0], target=target, labels=labels, seed=seed,
                      **options)
    targets = first.targets
    out[methods[0]] = first
    for m in methods[1:]:
        out[m] = attribute(model, x, method=m, target=targets, seed=seed, **options)
    rand, faith = {}, {}
    if checks:
        shared = {k: v for k, v in options.items() if k in _SHARED}
        for m in methods:
            rand[m] = randomization_test(model, x, method=m, targets=targets, seed=seed,
                                         **options)
            faith[m] = deletion_insertion(
                model, x, out[m].maps, targets=targets, fractions=fractions,
                baseline=shared.get("baseline", "zeros"), data_mean=shared.get("data_mean"),
                seed=seed)
    return EpochAttribution(
        epoch=int(epoch), inputs=_np_inputs(x),
        labels=np.asarray(labels).astype(np.int64).reshape(-1), targets=targets,
        predictions=first.predictions, probabilities=first.probabilities, maps=out,
        randomization=rand, faithfulness=faith)


def _np_inputs(x: Any) -> np.ndarray:
    import torch

    return torch.as_tensor(x).detach().float().cpu().numpy()


@dataclass(frozen=True)
class AttributionStudy:
    """The epochs' attributions, first to last; ``extra`` is stored in ``summary.json``."""

    epochs: tuple[EpochAttribution, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def epoch_numbers(self) -> tuple[int, ...]:
        return tuple(e.epoch for e in self.epochs)

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods of the last epoch (every epoch of a stage run has the same)."""
        return self.epochs[-1].methods

    def summary_lines(self) -> list[str]:
        """For the CLI: per epoch, the completeness, Spearman / SSIM per stage, the AUCs."""
        return [line for e in self.epochs for line in e.lines()]

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": [e.to_dict() for e in self.epochs], "extra": dict(self.extra),
                "lines": self.summary_lines()}

    def save(self, folder: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None
             ) -> list[Path]:
        """Each epoch's files, then ``summary.json`` (written last: its presence means the
        study is complete): ``extra`` (this study's, then the argument's) at the top level,
        with the study's own keys :data:`STUDY_KEYS` beside it."""
        files = [p for e in self.epochs for p in e.save(folder)]
        summary = {**_io.to_jsonable({**self.extra, **(extra or {})}),
                   "study_epochs": list(self.epoch_numbers),
                   "study_lines": self.summary_lines(),
                   "study_files": [p.name for p in files]}
        files.append(_io.write_json(Path(folder) / "summary.json", summary))
        return files


#: the keys of summary.json the study owns (everything else there is ``extra``)
STUDY_KEYS = ("study_epochs", "study_lines", "study_files")


def attribution_study(epochs: Sequence[EpochAttribution], *,
                      extra: Mapping[str, Any] | None = None) -> AttributionStudy:
    if not epochs:
        raise UsageError("an attribution study needs at least one epoch")
    return AttributionStudy(epochs=tuple(sorted(epochs, key=lambda e: e.epoch)),
                            extra=dict(extra or {}))


def load_attribution(folder: str | os.PathLike[str]) -> AttributionStudy:
    """The study saved in ``folder`` by :meth:`AttributionStudy.save`."""
    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise UsageError(f"no attribution study in {folder} (summary.json missing); run "
                         "`shenjing attribute RUN` first")
    summary = _io.read_json(summary_path)
    epochs = [_load_epoch(folder / f"attribute-e{int(e):03d}.json")
              for e in summary["study_epochs"]]
    extra = {k: v for k, v in summary.items() if k not in STUDY_KEYS}
    return AttributionStudy(epochs=tuple(epochs), extra=extra)
