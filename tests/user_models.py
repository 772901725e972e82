"""Models written the way third-party users write them, sized for the 8×8 digits.

Every model takes one batch of digits ``(N, 1, 8, 8)`` and predicts 10 classes; all are
small enough to run a forward pass in milliseconds on a CPU. They imitate the shapes that
real users' code has and shenjing must handle:

- :class:`RowLSTM` — an ``nn.LSTM`` reading the image row by row (a tuple output
  ``(seq, (h_n, c_n))``; keys ``lstm.0``, ``lstm.1.0``, ``lstm.1.1``);
- :class:`TinyResNet` — BatchNorm, skip connections, blocks as top-level children
  (``stem``, ``layer1``, ``layer2``, ``layer3``, ``pool``, ``fc``), a shortcut
  ``short = Sequential(conv, bn)`` in ``layer2``/``layer3`` and a ReLU called twice per block;
- :class:`SharedBlock` — one block called twice in forward (``block#0``, ``block#1``);
- :class:`DictNet` — returns ``{"features": …, "logits": …}``;
- :class:`TinyViT` — ``nn.TransformerEncoder`` over 2×2 patches with a CLS token and a
  position embedding (free parameters), modules inside ``nn.MultiheadAttention``;
- :class:`SignalNet` — ``nn.Conv1d`` over a 1-D signal (the 64 pixels in reading order,
  or any ``(N, L)`` / ``(N, 1, L)`` signal such as mnist1d);
- :func:`deep_mlp` / :func:`deep_cnn` — generated N-layer models (figures for 100 layers).

Importable as ``user_models:Name`` once ``tests/`` is on ``sys.path`` (a test does
``sys.path.insert(0, str(TESTS))``), or as ``tests/user_models.py:Name`` (a file path) from
the command line. Each factory's first argument is
``n_classes`` (keyword ``n_classes=10``), as ``shenjing inspect --model-arg`` passes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RowLSTM(nn.Module):
    """An LSTM reading an 8×8 image row by row (8 steps of 8 pixels); ``fc`` reads the last
    step's hidden state (``seq[:, -1]``, equal to ``h_n[-1]``)."""

    def __init__(self, n_classes: int = 10, width: int = 8, hidden: int = 24,
                 num_layers: int = 1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=width, hidden_size=hidden, num_layers=num_layers,
                            batch_first=True)
        self.fc = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x.reshape(x.shape[0], -1, self.lstm.input_size))
        return self.fc(seq[:, -1])


class BasicBlock(nn.Module):
    """torchvision's BasicBlock in miniature: conv-bn-relu-conv-bn, plus the shortcut, relu.

    ``relu`` is one module called twice per forward (``layerK.relu#0``, ``layerK.relu#1``),
    and ``short`` is ``Sequential(conv 1×1, bn)`` when the shape changes, else ``Identity``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.short(x))


class TinyResNet(nn.Module):
    """A ResNet for 8×8 digits: stem, three residual stages, global pooling, a linear head.

    Widths 8 → 8 → 16 → 32, spatial 8 → 8 → 4 → 2; ``fc`` reads the pooled ``(N, 32)``.
    """

    def __init__(self, n_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.layer3 = BasicBlock(2 * width, 4 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class FunctionalPoolResNet(TinyResNet):
    """The same ResNet pooling with ``F.adaptive_avg_pool2d`` in forward (no pool module run):
    the classifier's input is then no module's output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SharedBlock(nn.Module):
    """One block applied twice in forward (weights shared between the two calls)."""

    def __init__(self, n_classes: int = 10, in_features: int = 64, hidden: int = 32) -> None:
        super().__init__()
        self.inp = nn.Linear(in_features, hidden)
        self.block = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.inp(x.flatten(1)))
        h = self.block(self.block(h))
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


class TinyViT(nn.Module):
    """A vision transformer for 8×8 digits: 2×2 patches (16 tokens of 4 pixels), a CLS
    token and a learned position embedding (free parameters), ``nn.TransformerEncoder``,
    LayerNorm on the CLS token, a linear head."""

    def __init__(self, n_classes: int = 10, patch: int = 2, image: int = 8, dim: int = 16,
                 depth: int = 2, heads: int = 2) -> None:
        super().__init__()
        self.patch = patch
        n_tokens = (image // patch) ** 2
        self.to_tokens = nn.Linear(patch * patch, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embedding = nn.Parameter(torch.randn(1, n_tokens + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        n = x.shape[0]
        # (N, 1, H, W) → (N, H/p · W/p, p·p): patches in reading order
        patches = x.unfold(2, p, p).unfold(3, p, p).reshape(n, -1, p * p)
        tokens = torch.cat([self.cls_token.expand(n, -1, -1), self.to_tokens(patches)], 1)
        z = self.encoder(tokens + self.pos_embedding)
        return self.head(self.norm(z[:, 0]))


class SignalNet(nn.Module):
    """A Conv1d net on 1-D signals: two conv-ReLU stages, global average pool, linear head.

    Takes ``(N, L)``, ``(N, 1, L)`` or an image ``(N, 1, H, W)`` read as a signal of H·W.
    """

    def __init__(self, n_classes: int = 10, channels: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, padding=2), nn.ReLU(),
            nn.Conv1d(channels, 2 * channels, 5, stride=2, padding=2), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(2 * channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        signal = x.reshape(x.shape[0], 1, -1)
        return self.fc(self.pool(self.features(signal)).flatten(1))


def deep_mlp(n_layers: int = 100, n_classes: int = 10, in_features: int = 64,
             width: int = 16) -> nn.Sequential:
    """An MLP of ``n_layers`` Linear layers (ReLU between them) as one ``nn.Sequential``:
    layer keys ``0`` (Flatten), ``1`` (Linear), ``2`` (ReLU), …"""
    if n_layers < 1:
        raise ValueError(f"n_layers must be ≥ 1, got {n_layers}")
    modules: list[nn.Module] = [nn.Flatten()]
    widths = [in_features] + [width] * (n_layers - 1) + [n_classes]
    for i in range(n_layers):
        modules.append(nn.Linear(widths[i], widths[i + 1]))
        if i < n_layers - 1:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def deep_cnn(n_layers: int = 60, n_classes: int = 10, channels: int = 4) -> nn.Sequential:
    """A CNN of ``n_layers`` conv-BN-ReLU layers at 8×8, then pool and a linear head
    (``n_layers`` + 1 weighted layers, 3·``n_layers`` + 4 modules)."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be ≥ 1, got {n_layers}")
    modules: list[nn.Module] = []
    c_in = 1
    for _ in range(n_layers):
        modules += [nn.Conv2d(c_in, channels, 3, padding=1, bias=False),
                    nn.BatchNorm2d(channels), nn.ReLU()]
        c_in = channels
    modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes)]
    return nn.Sequential(*modules)


MODELS = {"lstm": RowLSTM, "resnet": TinyResNet, "shared": SharedBlock, "dict": DictNet,
          "vit": TinyViT, "conv1d": SignalNet, "deep_mlp": deep_mlp}
"""Name → factory, for tests that run the same check over every user model."""


def build(name: str, seed: int = 0) -> nn.Module:
    """``MODELS[name]()`` built under a fixed torch seed, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS[name]()
    return model.eval()
