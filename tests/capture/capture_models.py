"""Small models with the awkward shapes capture must handle."""

from __future__ import annotations

import torch
from torch import nn


class ResBN(nn.Module):
    """Conv + BatchNorm + a skip connection (``out = relu(bn(conv(x)) + x)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.head = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(x)) + x)
        return self.head(y.flatten(1))


class LSTMNet(nn.Module):
    """``nn.LSTM`` (tuple output: ``(output, (h_n, c_n))``) then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class Shared(nn.Module):
    """One ``block`` applied twice in the same forward (shared weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.block(self.block(x)))


class DictOut(nn.Module):
    """A submodule returning a dict of tensors (and an integer tensor that is skipped)."""

    class Heads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.b = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.a(x), "aux": self.b(x), "argmax": self.a(x).argmax(1)}

    def __init__(self) -> None:
        super().__init__()
        self.heads = DictOut.Heads()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(x)


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class Boom(nn.Module):
    """Raises inside forward after its first layer ran."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fc(x)
        raise RuntimeError("boom")
