"""Small generated datasets: seed 001's curve, and 2-D moons and spirals.

They are generated, not downloaded, from a seed, so a run can always rebuild them.
"""

from __future__ import annotations

import numpy as np
import torch

from shenjing.data.types import Dataset, Split

CURVE_RANGE = (-5.0, 5.0)
CURVE_EXTRAPOLATION = (-7.0, 7.0)


def curve_function(x: np.ndarray) -> np.ndarray:
    """Seed 001's target: f(x) = exp(−0.1x)·sin(2x) + 0.1x³ − 3x² + 2x."""
    return np.exp(-0.1 * x) * np.sin(2 * x) + 0.1 * x**3 - 3 * x**2 + 2 * x


def load_curve_dataset(*, n_points: int = 100, n_test: int = 400,
                       extrapolation: tuple[float, float] = CURVE_EXTRAPOLATION,
                       seed: int = 0) -> Dataset:
    """Seed 001's regression set.

    ``train``: ``n_points`` evenly spaced x in [−5, 5] (as in the seed). ``test``: an even
    grid over the wider ``extrapolation`` range, so in-range and out-of-range error can both
    be measured (``spec['train_range']`` says which part is in range).
    """
    x_train = np.linspace(*CURVE_RANGE, n_points)
    x_test = np.linspace(*extrapolation, n_test)

    def split(x: np.ndarray) -> Split:
        xt = torch.tensor(x, dtype=torch.float32).view(-1, 1)
        yt = torch.tensor(curve_function(x), dtype=torch.float32).view(-1, 1)
        return Split(xt, yt, torch.arange(len(x)))

    return Dataset(name="curve", train=split(x_train), test=split(x_test), classes=(),
                   task="regression",
                   spec={"name": "curve", "n_points": n_points, "n_test": n_test,
                         "train_range": list(CURVE_RANGE),
                         "extrapolation": list(extrapolation), "seed": seed})


def _two_class_split(x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float) -> tuple[
        Split, Split]:
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(y))
    n_test = round(len(y) * test_fraction)
    te, tr = np.sort(order[:n_test]), np.sort(order[n_test:])
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.int64)
    return (Split(xt[tr], yt[tr], torch.from_numpy(tr)),
            Split(xt[te], yt[te], torch.from_numpy(te)))


def load_moons_dataset(*, n_samples: int = 1000, noise: float = 0.1, seed: int = 0,
                       test_fraction: float = 0.25) -> Dataset:
    """scikit-learn's two interleaving half-moons, standardised, as (n, 2) float32."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    train, test = _two_class_split(x, y, seed, test_fraction)
    return Dataset(name="moons", train=train, test=test, classes=("0", "1"),
                   spec={"name": "moons", "n_samples": n_samples, "noise": noise,
                         "seed": seed})


def load_spirals_dataset(*, n_samples: int = 1000, turns: float = 2.5, noise: float = 0.025,
                         seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """Two interleaved Archimedean spirals, as (n, 2) float32.

    With 2.5 turns a linear classifier does no better than chance (≈ 0.53), so the
    space-warping view shows separability being built layer by layer.
    """
    rng = np.random.default_rng(seed)
    n_per = n_samples // 2
    t = np.sqrt(rng.uniform(0.0, 1.0, n_per)) * turns * 2 * np.pi  # denser toward the centre
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (turns * 2 * np.pi)
    x = np.concatenate([arm, -arm]) + rng.normal(0.0, noise, (2 * n_per, 2))
    y = np.concatenate([np.zeros(n_per, dtype=np.int64), np.ones(n_per, dtype=np.int64)])
    train, test = _two_class_split(x, y, seed, test_fraction)
    return Dataset(name="spirals", train=train, test=test, classes=("0", "1"),
                   spec={"name": "spirals", "n_samples": n_samples, "turns": turns,
                         "noise": noise, "seed": seed})
