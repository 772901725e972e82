"""What the run's numbers refer to, in words the report repeats: what epoch 0 is, how the
inputs were scaled, which epochs were saved.

Every caption that mentions epoch 0 takes its wording from :func:`epoch0_label`, so a run
whose epoch 0 is not the real initial state (an ``inspect`` run without ``--init-weights``)
is never called "untrained" anywhere in its report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shenjing.runs import Run

_EPOCH0 = {
    "trained": "the untrained net",
    "fresh": "a fresh seeded initialisation",
    "weights": "the initial weights given with --init-weights",
    "checkpoints": "the first checkpoint of the series given with --checkpoints",
}


def init_kind(run: Run) -> str:
    """What epoch 0 of ``run`` is (:attr:`shenjing.runs.Run.init_kind`): ``trained``,
    ``fresh``, ``weights`` or ``checkpoints``."""
    return run.init_kind


def epoch0_label(run: Run) -> str:
    """What epoch 0 is, for captions: ``"the untrained net"``, ``"a fresh seeded
    initialisation"`` … (used as "epoch 0 = …")."""
    return _EPOCH0[init_kind(run)]


def epoch0_note(run: Run) -> str | None:
    """The overview's plain statement when epoch 0 is not the user's real initial weights."""
    if init_kind(run) != "fresh":
        return None
    seed = run.manifest.get("seed")
    return ("Epoch 0 is a fresh seeded initialisation of the architecture"
            + (f" (torch seed {seed})" if seed is not None else "")
            + ", not your model's real initial weights: every comparison with epoch 0 "
            "(\"cosine to init\", the line from θ₀, the epoch-0 maps) compares with a random "
            "start, not with where your training began. To compare with your own training, "
            "run inspect again with --init-weights FILE (the real initial weights) or "
            "--checkpoints 'ckpt/epoch-*.safetensors' (a series of saved epochs).")


def input_scaling(spec: Mapping[str, Any]) -> str | None:
    """How the inputs were scaled, from the data spec's ``normalize`` (``standard``, ``unit``,
    ``none``) — with the exact constants the data loader uses — or None when not recorded."""
    mode = spec.get("normalize")
    if mode is None:
        pixels = spec.get("pixels")  # older runs describe the scaling in words
        return str(pixels) if pixels else None
    if mode == "unit":
        return "pixels scaled to [0, 1]"
    if mode == "none":
        return "raw values, not rescaled"
    if mode == "standard":
        mean, std = spec.get("mean"), spec.get("std")
        if mean is None or std is None:
            from shenjing.data.mnist import SOURCES

            source = SOURCES.get(str(spec.get("name")))
            if source is not None:
                mean, std = source.mean, source.std
        if mean is None or std is None:
            return "standardised per pixel with the training set's mean and std"
        return f"(x − {mean:g})/{std:g} per pixel, x in [0, 1]"
    return f"normalize={mode}"


def epoch_summary(epochs: Sequence[int], *, max_listed: int = 8) -> str:
    """Epochs in a few words: ``"0, 1, 5"`` for a short list, ``"0–150 (151 checkpoints)"``
    for a run of consecutive epochs, ``"0, 10, 20 … 150 (16 checkpoints)"`` otherwise."""
    epochs = sorted(int(e) for e in epochs)
    if not epochs:
        return "none"
    if len(epochs) <= max_listed:
        return ", ".join(map(str, epochs))
    n = f"({len(epochs)} checkpoints)"
    if epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"{epochs[0]}–{epochs[-1]} {n}"
    return f"{', '.join(map(str, epochs[:3]))} … {epochs[-1]} {n}"
