"""A recurrent net from seed 001: an LSTM that reads an image row by row.

Each row of pixels is one time step (28 steps of 28 pixels for MNIST, 8 of 8 for digits);
``fc`` reads the last step's hidden state. "At which row does it know the digit?" is the
question the recurrent view answers for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shenjing.errors import ShapeMismatchError


class RowLSTM(nn.Module):
    """``lstm`` over the rows of a ``(batch, channels, height, width)`` image, then ``fc``.

    >>> model = RowLSTM(1, 28, 28, 10)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, height: int, width: int, n_classes: int, *,
                 hidden: int = 64) -> None:
        super().__init__()
        self.rows = height
        self.lstm = nn.LSTM(input_size=in_channels * width, hidden_size=hidden,
                            batch_first=True)
        self.fc = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, channels, height, width) → (batch, height, channels · width): row t is step t
        steps = x.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)
        seq, _ = self.lstm(steps)
        return self.fc(seq[:, -1])


def build_row_lstm(input_shape: Sequence[int], n_outputs: int, hidden: int = 64) -> nn.Module:
    """The zoo's ``row_lstm`` for ``input_shape`` ``(channels, height, width)``."""
    if len(input_shape) != 3:
        raise ShapeMismatchError(f"model 'row_lstm' reads images row by row, so it takes "
                                 f"(channels, height, width); got {tuple(input_shape)}")
    c, h, w = (int(v) for v in input_shape)
    return RowLSTM(c, h, w, n_outputs, hidden=int(hidden))
