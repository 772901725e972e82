"""What makes a Lightning or Hugging Face training the same as ``shenjing.train``'s: the
same initial weights, the same batches in the same order each epoch, the same optimizer.

``shenjing.train`` seeds torch with ``seed`` and builds the zoo model, then each epoch
``e`` (from 1) shuffles with ``torch.randperm(n, generator=Generator().manual_seed(
seed * 1_000_003 + e))`` and reseeds the global RNG with that number (dropout). The samplers
below replay exactly that order, read from the trainer's own seeding function.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from shenjing.models import build_model
from shenjing.training.trainer import _epoch_seed

SEED = 0
EPOCHS = 2
BATCH = 32
LR = 3e-3  # the seed's defaults for mlp on digits (train_defaults)


def same_init_mlp(data):
    """The zoo MLP with the initial weights ``shenjing.train(seed=SEED)`` gives it."""
    torch.manual_seed(SEED)
    return build_model("mlp", data.input_shape, data.output_dim)


class TrainerOrder(torch.utils.data.Sampler[int]):
    """Sample indices in our trainer's order; each pass over it is the next epoch."""

    def __init__(self, n: int, seed: int = SEED) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        self.epoch += 1
        gen = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        torch.manual_seed(_epoch_seed(self.seed, self.epoch))  # as the trainer: dropout
        return iter(torch.randperm(self.n, generator=gen).tolist())


class TrainerBatches(torch.utils.data.Sampler[list[int]]):
    """The same order, cut into the trainer's batches (a ``batch_sampler``)."""

    def __init__(self, n: int, batch: int = BATCH, seed: int = SEED) -> None:
        self.order, self.batch = TrainerOrder(n, seed), batch

    def __len__(self) -> int:
        return -(-self.order.n // self.batch)

    def __iter__(self) -> Iterator[list[int]]:
        idx = list(self.order)
        return iter([idx[i:i + self.batch] for i in range(0, len(idx), self.batch)])


def compare_dynamics(ours: list[dict], theirs: list[dict]) -> dict[str, float]:
    """The largest relative difference of each per-layer number and of the test metrics
    between two runs' metrics lines (epochs aligned)."""
    worst: dict[str, float] = {}

    def note(key: str, a: float | None, b: float | None) -> None:
        assert (a is None) == (b is None), (key, a, b)
        if a is None or b is None:
            return
        rel = abs(a - b) / max(abs(a), 1e-12)
        worst[key] = max(worst.get(key, 0.0), rel)

    assert [r["epoch"] for r in ours] == [r["epoch"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a["layers"].keys() == b["layers"].keys()
        for layer, stats in a["layers"].items():
            for key, value in stats.items():
                note(key, value, b["layers"][layer][key])
        for key in ("test_loss", "test_accuracy"):
            note(key, a[key], b[key])
        assert a["dead_units"].keys() == b["dead_units"].keys()
        for layer, frac in a["dead_units"].items():
            note("dead_units", frac, b["dead_units"][layer])
        assert a["steps"] == b["steps"]
    return worst
