"""Stage ``recurrent``: what a recurrent layer knows at each step, untrained vs trained.

For the run's ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` layer (the first, or ``layer``) it calls
:func:`shenjing.analysis.recurrent.over_time` — the function a notebook calls — on fixed
subsets of the run's splits: a linear probe on ``h_t`` for every step (train subset →
test subset), 2-D PCA trajectories of the test subset, and gate saturation.

Files written (``<L>`` = the layer name, characters other than letters, digits, ``._-``
replaced by ``_``):

``recurrent/recurrent-<L>.json``
    :meth:`OverTime.to_dict <shenjing.analysis.recurrent.OverTime.to_dict>` — ``layer``,
    ``module_type``, ``num_layers``, ``bidirectional``, ``hidden_size``, ``n_steps``,
    ``epochs``, ``classes``; ``probe`` {``accuracy`` / ``train_accuracy`` [epoch][layer]
    [direction][step], ``chance``, ``n_train``, ``n_test``, ``reach``, ``reach_step``
    {epoch: step}, ``marked_steps``, ``at_marked_steps`` {epoch: [...]}}; ``saturation``
    {``epochs``, ``gates``, ``low``, ``high``, ``fractions`` [epoch][gate][layer][below,
    above], ``total`` {epoch: {gate: {below, above}}}} or null with ``saturation_reason``;
    ``trajectories`` {``epochs``, ``explained_variance``, ``n_shown``}; ``check``
    {``max_abs_error``, ``tolerance``, ``passed``, ``compared``, ``n_values``,
    ``per_epoch``}; ``notes`` — plus ``split_seed``, ``test_indices`` / ``train_indices``
    (positions of the fixed subsets in their splits) and ``figures``.
``recurrent/recurrent-<L>.npz``
    ``epochs``, ``steps``, ``probe``, ``probe_train`` ``(epochs, layers, directions,
    steps)``, ``saturation_epochs``, ``saturation`` ``(epochs, gates, layers, 2)``,
    ``trajectory_coords`` ``(epochs, shown, steps, 2)``, ``trajectory_labels``,
    ``trajectory_samples``, ``explained_variance``.
``figures/recurrent-<L>-probe.png|svg``, ``figures/recurrent-<L>-gates.png|svg`` (LSTM and
GRU), ``figures/recurrent-<L>-trajectories.png|svg``.

The stage record is ``stages.recurrent`` with the layer, the json and the numbers; a model
without a recurrent layer is recorded ``skipped`` with what it has. Options are checked
before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shenjing._device import resolve_device
from shenjing.analysis.recurrent import OverTime
from shenjing.errors import NotApplicableError
from shenjing.filenames import safe_name
from shenjing.runs import Run
from shenjing.stages._inputs import fixed_samples, resolve_epochs

STAGE = "recurrent"
#: the fewest and most test (and train) samples ``n`` may ask for: a probe per step needs a
#: few of each class; the states of 100,000 samples × steps × units stay in memory
MIN_N, MAX_N = 20, 100_000
MAX_PER_CLASS = 50


def recurrent_stem(layer: str) -> str:
    """``recurrent-<L>``: the stem of the layer's json, npz and figures."""
    return f"recurrent-{safe_name(layer)}"


def check_recurrent_options(*, n: int, n_train: int | None = None, per_class: int = 3,
                            seed: int = 0, batch_size: int = 256) -> None:
    """Refuse options that cannot work, before anything is computed or written."""
    from shenjing._checks import bounded_int, positive_int, random_seed

    why = "a probe per step needs a few samples of each class"
    bounded_int("--n", n, low=MIN_N, high=MAX_N, example=1000, why=why)
    if n_train is not None:
        bounded_int("--n-train", n_train, low=MIN_N, high=MAX_N, example=1000, why=why)
    bounded_int("--per-class", per_class, low=1, high=MAX_PER_CLASS, example=3)
    random_seed("--seed", seed)
    positive_int("--batch-size", batch_size, example=256)


@dataclass(frozen=True)
class RecurrentResult:
    """What the recurrent stage measured and wrote."""

    result: OverTime
    figures: tuple[Path, ...]
    json_path: Path
    npz_path: Path

    def summary(self) -> str:
        """Lines for the CLI: the numbers, then the files."""
        lines = self.result.summary_lines()
        lines += [f"wrote {p}" for p in (*self.figures, self.json_path, self.npz_path)]
        return "\n".join(lines)


def recurrent_stage(run: Run, *, layer: str | None = None,
                    epochs: Sequence[int | str] | str = ("init", "final"),
                    saturation_epochs: Sequence[int | str] | str | None = "all",
                    n: int = 1000, n_train: int | None = None, per_class: int = 3,
                    seed: int = 0, batch_size: int = 256,
                    device: str | torch.device = "auto") -> RecurrentResult:
    """Probe accuracy of ``h_t`` by step at ``epochs``, gate saturation at
    ``saturation_epochs`` (``'all'``: every saved epoch; None: ``epochs``), and PCA
    trajectories, for recurrent ``layer`` (default: the model's first).

    ``n`` test samples (and ``n_train`` train samples, default ``n``) are fixed subsets
    drawn with ``seed``; splits with fewer samples are used whole. Every option is checked
    before anything is written; inside the stage a layer that does not exist or is not
    recurrent puts run.json back as it was, and a model with no recurrent layer (or a run
    that is not classification) is recorded ``skipped`` with the reason.
    """
    from shenjing.analysis.recurrent import find_recurrent_layer, over_time
    from shenjing.plot.recurrent import (
        plot_gate_saturation,
        plot_probe_by_step,
        plot_state_trajectories,
    )
    from shenjing.plot.save import save_figure

    check_recurrent_options(n=n, n_train=n_train, per_class=per_class, seed=seed,
                            batch_size=batch_size)
    chosen = resolve_epochs(run, epochs)
    sat = None if saturation_epochs is None else resolve_epochs(run, saturation_epochs)
    dev = resolve_device(device, option="--device")
    with run.running_stage(STAGE, layer=layer):
        # the architecture (no weights) checks the layer before any file is written
        name, _ = find_recurrent_layer(run.build_model(), layer)
        if run.task != "classification":
            raise NotApplicableError(f"recurrent: the probe on h_t reads class labels; run "
                                     f"{run.name!r} is a {run.task} task")
        x_test, y_test, test_idx = fixed_samples(run, n, seed, "test")
        x_train, y_train, train_idx = fixed_samples(run, n_train or n, seed, "train")
        result = over_time(lambda e: run.model(e, device=dev), epochs=chosen,
                           saturation_epochs=sat, x_train=x_train,
                           y_train=y_train.cpu().numpy(), x_test=x_test,
                           y_test=y_test.cpu().numpy(), layer=name, per_class=per_class,
                           batch_size=batch_size, device=dev, random_state=seed,
                           classes=run.classes)
        stem = recurrent_stem(name)
        figures = save_figure(plot_probe_by_step(result), run.figures_dir, f"{stem}-probe")
        if result.saturation is not None:
            figures += save_figure(plot_gate_saturation(result), run.figures_dir,
                                   f"{stem}-gates")
        figures += save_figure(plot_state_trajectories(result), run.figures_dir,
                               f"{stem}-trajectories")
        extra: dict[str, Any] = {
            "split_seed": seed, "test_indices": test_idx.tolist(),
            "train_indices": train_idx.tolist(),
            "figures": [str(p.relative_to(run.path)) for p in figures]}
        json_path, npz_path = result.save(run.subdir(STAGE) / stem, extra=extra)
        check = result.check()
        run.update_stage(
            STAGE, "done", layer=name, json=str(json_path.relative_to(run.path)),
            epochs=list(result.epochs),
            probe_accuracy={str(e): [float(v) for v in result.curve(e)]
                            for e in result.epochs},
            reach_step={str(e): result.reach_step(e) for e in result.epochs},
            saturation=result.to_dict()["saturation"]["total"]
            if result.saturation is not None else None,
            check_max_abs_error=check.max_abs_error, check_tolerance=check.tolerance,
            check_passed=check.passed)
    return RecurrentResult(result=result, figures=tuple(figures), json_path=json_path,
                           npz_path=npz_path)
