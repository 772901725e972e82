"""Users' models, written the way users write them, for the ``inspect`` tests.

Each factory takes ``n_classes`` (and a size) and works on the embedded digits
(``(N, 1, 8, 8)``) as well as on MNIST-sized images. Importable as ``inspect_models:Name``
(``tests/`` is on ``sys.path`` under pytest) or as ``tests/inspect_models.py:Name``.
"""

from __future__ import annotations

from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import nn


class ResBN(nn.Module):
    """Conv + BatchNorm stem, a residual block with a skip connection, global pooling."""

    def __init__(self, n_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(width * 4, 32)
        self.fc2 = nn.Linear(32, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn0(self.stem(x)))
        r = F.relu(self.bn1(self.conv1(h)))
        h = F.relu(h + self.bn2(self.conv2(r)))  # the skip connection
        h = torch.flatten(self.pool(h), 1)
        return self.fc2(F.relu(self.fc1(h)))


class RowLSTM(nn.Module):
    """An LSTM reading an image row by row; returns ``(logits, (h, c))`` like nn.LSTM does."""

    def __init__(self, n_classes: int = 10, width: int = 8, hidden: int = 24) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=width, hidden_size=hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        rows = x.squeeze(1)  # (N, H, W): H steps of W features
        seq, (h, c) = self.lstm(rows)
        return self.head(seq[:, -1]), (h, c)


class Shared(nn.Module):
    """One block applied twice in forward (weights shared between the two calls)."""

    def __init__(self, n_classes: int = 10, in_features: int = 64, hidden: int = 32) -> None:
        super().__init__()
        self.inp = nn.Linear(in_features, hidden)
        self.block = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.inp(x.flatten(1)))
        h = self.block(h)
        h = self.block(h) + h
        return self.out(h)


class DictNet(nn.Module):
    """Returns a dict whose prediction is not the first entry: ``{"features", "logits"}``."""

    def __init__(self, n_classes: int = 10, in_features: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_features, 48), nn.ReLU())
        self.classifier = nn.Linear(48, n_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        return {"features": features, "logits": self.classifier(features)}


class TokenTransformer(nn.Module):
    """Image rows as tokens → ``nn.TransformerEncoder`` → mean pool → linear classifier."""

    def __init__(self, n_classes: int = 10, width: int = 8, height: int = 8,
                 d_model: int = 16, n_layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(width, d_model)
        self.pos = nn.Parameter(torch.zeros(1, height, d_model))
        layer = nn.TransformerEncoderLayer(d_model, nhead=2, dim_feedforward=32,
                                           dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.squeeze(1)) + self.pos
        return self.fc(self.norm(self.encoder(tokens).mean(1)))


Out = namedtuple("Out", ["logits", "aux"])


class NamedTupleNet(nn.Module):
    """Returns a namedtuple ``Out(logits, aux)``."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> Out:
        logits = self.fc(x.flatten(1))
        return Out(logits, logits.sum())


def make_shared(n_classes: int = 10, hidden: int = 32) -> nn.Module:
    """A factory function (not a class) returning the shared-block model."""
    return Shared(n_classes=n_classes, hidden=hidden)


def broken_factory(n_classes: int = 10) -> nn.Module:
    """A factory that raises, as a user's buggy code would."""
    raise ValueError(f"cannot build with n_classes={n_classes}: width must be even")


def not_a_module() -> str:
    return "a string"


MODELS = {"resbn": ResBN, "lstm": RowLSTM, "shared": Shared, "dict": DictNet,
          "transformer": TokenTransformer}


def quick_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 30,
                lr: float = 1e-2, seed: int = 0, output: str | int | None = None) -> nn.Module:
    """A few Adam steps so the weights differ from the initialisation (and learn a bit)."""
    from shenjing.models.outputs import select_output

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        pick = torch.randint(0, len(x), (64,), generator=gen)
        loss = F.cross_entropy(select_output(model(x[pick]), output), y[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
