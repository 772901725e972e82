"""Stage ``attention``: what every attention head looks at, untrained next to trained.

For each epoch asked for, the run's model is built and
:func:`shenjing.capture.attention.capture_attention` records the per-head patterns of every
attention layer (fused ``F.scaled_dot_product_attention``, ``nn.MultiheadAttention`` and
explicit softmax attention alike, each verified: pattern @ V must reproduce the layer's real
output) for the chosen test inputs and a fixed subset of ``n`` test inputs, and the CLS and
mean tokens of a fixed subset of ``n_probe`` train inputs for the probe. The numbers come
from :mod:`shenjing.analysis.attention` (the functions a notebook calls).

Files written (``<I>`` = a test index, epochs as three digits):

``attention/attention-e<NNN>.json|npz``
    one epoch: the layout (prefix tokens, patch grid or the reason there is none), the
    check (error per layer, tolerance, passed), per-head mean distance (pixels), prefix
    share and entropy (nats) over the ``n`` inputs, the probe by layer; the npz holds the
    chosen inputs' ``patterns`` ``(samples, layers, heads, queries, keys)``, ``images``,
    CLS → patch ``maps``, ``rollout`` and ``rollout_map``.
``attention/summary.json``
    every epoch's numbers side by side, the change between the first and last epoch
    (per head Δ distance, Δ entropy, which became local / global, the heads that changed
    most), the figures, the options.
``figures/attention-maps-test<I>-e<NNN>.png|svg`` layer × head CLS → patch maps on the input
``figures/attention-rollout-test<I>.png|svg``     rollout on the input, one panel per epoch
``figures/attention-matrix-test<I>-e<NNN>.png|svg`` the query × key matrices (first input;
                                                  small token counts, or no patch grid)
``figures/attention-distance|entropy|probe.png|svg`` per head by layer, first vs last epoch

Stage record: ``stages.attention`` — ``done`` with the numbers, ``skipped`` when the model
has no attention (the reason lists what it has), ``failed`` with the error. Options are
checked before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing._device import resolve_device
from shenjing.analysis.attention import (
    AttentionStudy,
    EpochAttention,
    attention_study,
    epoch_attention,
    probe_by_layer,
)
from shenjing.errors import ShenjingError, UsageError
from shenjing.plot.save import save_figure
from shenjing.runs import Run
from shenjing.stages._inputs import fixed_samples, layer_names, resolve_epochs

#: the most inputs drawn as maps in one call (one figure per input and epoch)
MAX_SAMPLES = 8
#: the most inputs the per-head numbers may average over
MAX_N = 100_000
#: the matrix view is drawn (besides the maps) up to this many tokens
MATRIX_TOKENS = 64
#: the capture's batch size
BATCH_SIZE = 64


def check_attention_options(*, samples: Sequence[int | str], n: int, n_probe: int,
                            seed: int = 0) -> list[int]:
    """Refuse options that cannot work, before anything is read or written; return the
    sample positions as ints."""
    from shenjing._checks import bounded_int, random_seed

    picks = [bounded_int("--samples", s, low=0, example="0,1") for s in samples]
    if not picks:
        raise UsageError("--samples names no input; give test positions, e.g. --samples 0,1")
    if len(picks) > MAX_SAMPLES:
        raise UsageError(f"--samples: {len(picks)} inputs asked, at most {MAX_SAMPLES} are "
                         "drawn (one maps figure per input and epoch); e.g. --samples 0,1")
    bounded_int("--n", n, low=1, high=MAX_N, example=256,
                why="the test inputs the per-head numbers average over")
    bounded_int("--n-probe", n_probe, low=0, high=MAX_N, example=1000,
                why="train inputs for the probe; 0 = no probe")
    random_seed("--seed", seed)
    return list(dict.fromkeys(picks))


def _check_samples(run: Run, picks: Sequence[int]) -> None:
    size = len(run.data.test)
    for s in picks:
        if s >= size:
            raise UsageError(f"--samples {s}: sample index {s} is out of range: the test split "
                             f"of {run.data.name!r} has {size} samples; give indices from 0 to "
                             f"{size - 1}, e.g. --samples 0,1")


@dataclass(frozen=True)
class AttentionResult:
    """What the attention stage measured and wrote."""

    study: AttentionStudy
    figures: tuple[Path, ...]
    files: tuple[Path, ...]
    json_path: Path
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """Lines for the CLI: the layout, the check, numbers per layer, the change, the
        probe, the files."""
        study = self.study.summary_lines()
        lines = [*study[:2], *self.notes, *study[2:]]  # what was studied first (inspect)
        lines += [f"wrote {p}" for p in (*self.figures, self.json_path)]
        return "\n".join(lines)


def _memory_check(layers: Sequence[Any], *, n_rows: int, n_probe: int,
                  on_plan: Callable[[str], None] | None = None) -> None:
    """Refuse a capture whose patterns would not fit: the larger of the two captures of an
    epoch (chosen + ``n`` test inputs, ``n_probe`` train inputs) is held at once.
    ``on_plan`` gets one line with the size first (the CLI prints it)."""
    from shenjing.capture.activations import format_bytes
    from shenjing.capture.dataset import memory_budget
    from shenjing.errors import ResourceError

    per_sample = 0
    for layer in layers:
        shape = getattr(layer, "shape", None) or (layer.heads, layer.tokens, layer.tokens)
        per_sample += int(np.prod(shape)) * 4 + 2 * 4 * int(getattr(layer, "dim", 0) or 0)
    need = per_sample * (n_rows + n_probe)
    budget = memory_budget()
    if on_plan is not None:
        on_plan(f"attention capture: {len(layers)} layer(s), {format_bytes(per_sample)} per "
                f"input × ({n_rows} test + {n_probe} train inputs) = {format_bytes(need)} per "
                f"epoch (allowed: {format_bytes(budget)})")
    if need > budget:
        raise ResourceError(
            f"attention patterns of {len(layers)} layer(s) ({format_bytes(per_sample)} per "
            f"input) for {n_rows} test and {n_probe} train inputs need about "
            f"{format_bytes(need)} of memory but only {format_bytes(budget)} is allowed (half "
            "the memory available now); reduce --n, --n-probe or the --layers")


def attention_stage(run: Run, *, layers: Sequence[str] | str | None = None,
                    samples: Sequence[int | str] = (0, 1),
                    epochs: Sequence[int | str] | str = ("init", "final"), n: int = 256,
                    n_probe: int = 1000, seed: int = 0,
                    device: str | torch.device = "auto",
                    on_plan: Callable[[str], None] | None = None) -> AttentionResult:
    """The attention view of ``run`` at ``epochs``: maps of the test inputs ``samples``,
    per-head distance and entropy over ``n`` test inputs, the probe by layer from
    ``n_probe`` train inputs (0: none), and the change of every head from the first epoch
    to the last.

    ``layers``: attention layer names (default: every attention layer); a name that is not
    one is a :class:`~shenjing.errors.LayerNotFoundError` listing them, nothing written. A
    model without attention records the stage ``skipped`` (the reason lists what the model
    has) and raises :class:`~shenjing.errors.NotApplicableError`.
    """
    from shenjing.capture.attention import capture_attention, find_attention_layers

    picks = check_attention_options(samples=samples, n=n, n_probe=n_probe, seed=seed)
    chosen_epochs = resolve_epochs(run, epochs)
    wanted = layer_names(layers) if layers is not None else None
    dev = resolve_device(device, option="--device")
    _check_samples(run, picks)
    data = run.data
    test = data.test
    notes: list[str] = []
    x_maps = test.x[picks]
    labels: list[Any] = []
    if data.task == "classification":
        labels = [data.classes[int(y)] if int(y) < len(data.classes) else int(y)
                  for y in test.y[picks]]
    if n > len(test):
        notes.append(f"--n {n} capped to the {len(test)} test samples")
    x_stats, y_stats, stats_index = fixed_samples(run, n, seed, "test")
    classify = data.task == "classification" and n_probe > 0
    x_train = y_train = None
    if classify:
        if n_probe > len(data.train):
            notes.append(f"--n-probe {n_probe} capped to the {len(data.train)} train samples")
        x_train, y_train, _ = fixed_samples(run, n_probe, seed, "train")
    elif data.task != "classification":
        notes.append(f"no probe: the task is {data.task}, not classification")
    image_shape = tuple(int(s) for s in test.x.shape[1:])
    first_model = run.model(chosen_epochs[0], device=dev)
    try:
        found = find_attention_layers(first_model, x_maps[:1].to(dev))
    except ShenjingError:
        raise
    except Exception:  # the model's own failure: met again by the capture in the stage's
        found = []     # block, which records it as the stage's error
    if found:
        use = [f for f in found if wanted is None or f.name in wanted]
        # a name that is no attention layer is refused by the capture: no size line for it
        known = wanted is None or len(use) == len(set(wanted))
        _memory_check(use or found, n_rows=len(picks) + len(x_stats),
                      n_probe=len(x_train) if x_train is not None else 0,
                      on_plan=on_plan if known else None)
    with run.running_stage("attention", epochs=chosen_epochs):
        results: list[EpochAttention] = []
        for e in chosen_epochs:
            model = first_model if e == chosen_epochs[0] else run.model(e, device=dev)
            results.append(_one_epoch(
                capture_attention, model, e, x_maps=x_maps, x_stats=x_stats, y_stats=y_stats,
                x_train=x_train, y_train=y_train, layers=wanted, device=dev,
                image_shape=image_shape, picks=picks, labels=labels))
            del model
        options = {"samples": picks, "n": len(x_stats), "n_probe":
                   len(x_train) if x_train is not None else 0, "seed": seed,
                   "stats_indices": stats_index.tolist(), "notes": notes}
        study = attention_study(results, extra={"options": options})
        out = run.subdir("attention")
        figures = _draw(run, study)
        rel = [str(p.relative_to(run.path)) for p in figures]
        files = study.save(out, extra={"figures": rel})
        json_path = out / "summary.json"
        run.update_stage("attention", "done", **_record(run, study, json_path))
    return AttentionResult(study=study, figures=tuple(figures), files=tuple(files),
                           json_path=json_path, notes=tuple(notes))


def _one_epoch(capture: Any, model: torch.nn.Module, epoch: int, *, x_maps: torch.Tensor,
               x_stats: torch.Tensor, y_stats: torch.Tensor, x_train: torch.Tensor | None,
               y_train: torch.Tensor | None, layers: list[str] | None, device: torch.device,
               image_shape: tuple[int, ...], picks: list[int], labels: list[Any]
               ) -> EpochAttention:
    """Capture one epoch (the chosen inputs with the ``n`` test inputs, then the probe's
    train inputs) and compute its numbers."""
    k = len(picks)
    cap = capture(model, torch.cat([x_maps, x_stats]), layers=layers, batch_size=BATCH_SIZE,
                  device=device)
    names = [layer.name for layer in cap.layers]
    errors = dict(cap.check_error)
    scale = dict(getattr(cap, "check_scale", {}) or {})
    probe = None
    if x_train is not None and y_train is not None:
        train = capture(model, x_train, layers=names, batch_size=BATCH_SIZE, device=device)
        for name, err in train.check_error.items():  # the check covers both captures
            if not err <= errors.get(name, 0.0):
                errors[name] = float(err)
                scale[name] = max(scale.get(name, 1.0),
                                  (getattr(train, "check_scale", {}) or {}).get(name, 1.0))
        feats_train = {"cls": train.cls_tokens, "mean": train.mean_tokens}
        feats_test = {"cls": None if cap.cls_tokens is None else cap.cls_tokens[k:],
                      "mean": None if cap.mean_tokens is None else cap.mean_tokens[k:]}
        if any(v is not None for v in feats_train.values()):
            probe = probe_by_layer(feats_train, y_train.cpu().numpy(), feats_test,
                                   y_stats.cpu().numpy(), layers=names)
        del train
    patterns = np.asarray(cap.patterns)
    return epoch_attention(
        patterns[:k], patterns[k:], image_shape=image_shape, layers=names,
        kinds=[layer.kind for layer in cap.layers], images=x_maps.cpu().numpy(),
        epoch=epoch, samples=picks, labels=labels, probe=probe, check_error=errors,
        tolerance=float(cap.tolerance), check_scale=scale,
        extra={"module_types": [layer.module_type for layer in cap.layers]})


def _draw(run: Run, study: AttentionStudy) -> list[Path]:
    """Every figure of the study into ``RUN/figures/attention-*``."""
    from shenjing.plot.attention import (
        plot_attention_distance,
        plot_attention_entropy,
        plot_attention_maps,
        plot_attention_matrix,
        plot_attention_probe,
        plot_attention_rollout,
    )

    folder = run.figures_dir
    layout = study.layout
    figures: list[Path] = []
    last = study.epochs[-1]
    for s, index in enumerate(last.samples):
        if layout.grid:
            for e in study.epochs:
                figures += save_figure(plot_attention_maps(e, s), folder,
                                       f"attention-maps-test{index}-e{e.epoch:03d}")
            if all(e.rollout_map is not None for e in study.epochs):
                figures += save_figure(plot_attention_rollout(study.epochs, s), folder,
                                       f"attention-rollout-test{index}")
        if s == 0 and (not layout.grid or layout.n_tokens <= MATRIX_TOKENS):
            for e in study.epochs:
                figures += save_figure(plot_attention_matrix(e, s), folder,
                                       f"attention-matrix-test{index}-e{e.epoch:03d}")
    if layout.grid:
        figures += save_figure(plot_attention_distance(study), folder, "attention-distance")
    figures += save_figure(plot_attention_entropy(study), folder, "attention-entropy")
    if any(e.probe is not None for e in study.epochs):
        figures += save_figure(plot_attention_probe(study), folder, "attention-probe")
    return figures


def _record(run: Run, study: AttentionStudy, json_path: Path) -> dict[str, Any]:
    """The numbers ``run.json`` keeps for the stage."""
    def per_layer(e: EpochAttention, what: str) -> list[float] | None:
        values = getattr(e.stats, what)
        return None if values is None else [round(float(v), 4) for v in values.mean(1)]

    record: dict[str, Any] = {
        "epochs": list(study.epoch_numbers), "layers": list(study.layers),
        "heads": study.epochs[-1].n_heads, "layout": study.layout.describe(),
        "grid": study.layout.grid, "grid_reason": study.layout.reason,
        "check_max_error": study.max_check_error(),
        "check_tolerance": max(e.tolerance for e in study.epochs),
        "check_passed": study.passed,
        "distance_by_layer": {str(e.epoch): per_layer(e, "distance") for e in study.epochs},
        "entropy_by_layer": {str(e.epoch): per_layer(e, "entropy") for e in study.epochs},
        "json": str(json_path.relative_to(run.path))}
    if study.change is not None:
        record["changed_most"] = [study.change.head_text(r) for r in study.change.top(3)]
        record["head_counts"] = study.change.counts_text()
    probes = {str(e.epoch): {f: [round(float(a), 4) for a in acc]
                             for f, acc in e.probe.accuracy.items()}
              for e in study.epochs if e.probe is not None}
    if probes:
        record["probe_by_layer"] = probes
    return record


__all__ = ["AttentionResult", "attention_stage", "check_attention_options"]
