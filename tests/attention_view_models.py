"""Models the attention view's tests share: the tiny zoo ViT's sizes, and a user model file
whose 9 tokens (8 rows of an 8×8 digit and a CLS token) form no patch grid.

Importable as ``attention_view_models`` (tests/ is on ``sys.path``, see conftest.py).
"""

from __future__ import annotations

import textwrap

#: sizes of a tiny zoo ``vit`` (2 blocks, dim 16, 2 heads)
TINY = {"depth": 2, "dim": 16, "heads": 2, "mlp_dim": 32}

#: a user model file: ``nn.MultiheadAttention(need_weights=False)`` over row tokens
ROW_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    class RowAttention(nn.Module):
        """Reads an 8×8 digit row by row: 8 row tokens and a CLS token (9 tokens: no patch
        grid), one nn.MultiheadAttention called with need_weights=False."""

        def __init__(self, n_classes=10, dim=16):
            super().__init__()
            self.embed = nn.Linear(8, dim)
            self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
            self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
            self.head = nn.Linear(dim, n_classes)

        def forward(self, x):
            t = self.embed(x[:, 0])
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
            a, _ = self.attn(t, t, t, need_weights=False)
            return self.head((t + a)[:, 0])
''')
