"""The seeds' models by name, sized to the input, with the layer names users expect.

Every activation is its own module (``relu1``, ``relu2`` …) so that capture can hook the
post-activation features the seeds talk about; seed 004's extractor dropped them.
"""

from __future__ import annotations

import importlib
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

import torch
from torch import nn

from shenjing.errors import MissingExtraError, ShapeMismatchError, unknown_name
from shenjing.models.recurrent import build_row_lstm
from shenjing.models.vit import build_vit


@dataclass(frozen=True)
class TrainDefaults:
    """The hyper-parameters a seed used for a model (what ``shenjing train`` starts from)."""

    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 5
    loss: str = "cross_entropy"
    passes_per_epoch: int = 1
    #: learning-rate schedule: ``constant`` or ``cosine`` (warm-up, then cosine to zero)
    schedule: str = "constant"
    #: random translation of each training image by up to this many pixels (0: none)
    shift: int = 0


# The seeds' hyper-parameters were chosen for 60,000 MNIST images. On the 1,347 training
# digits the same 5 epochs of batch 128 are only 55 steps, so the small embedded set gets
# more, smaller steps unless the user sets them. A one-pixel shift is an eighth of a digit
# image: no translation there.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 10, "batch_size": 32, "lr": 3e-3, "shift": 0},
}


class MLP(nn.Module):
    """Fully connected ReLU net: ``fc1, relu1, …, fcN`` (seed 000: 784-128-10)."""

    def __init__(self, in_features: int, n_outputs: int, hidden: Sequence[int] = (128,)) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        widths = [in_features, *hidden]
        for i, (a, b) in enumerate(itertools.pairwise(widths), start=1):
            self.add_module(f"fc{i}", nn.Linear(a, b))
            self.add_module(f"relu{i}", nn.ReLU())
        self.add_module(f"fc{len(widths)}", nn.Linear(widths[-1], n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        for module in list(self.children())[1:]:
            x = module(x)
        return x


class SimpleCNN(nn.Module):
    """Seed 000/001's CNN: conv(1→32,3,p1)-relu-pool-conv(32→64,3,p1)-relu-pool-fc-fc.

    On 28×28 inputs fc1 takes 64·7·7 = 3136 features, as in the seeds.
    """

    def __init__(self, in_channels: int, height: int, width: int, n_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * (height // 4) * (width // 4), 128)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(128, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(self.flatten(x))))


class DropoutCNN(nn.Module):
    """Seed 002's net (PyTorch's MNIST example): two unpadded convs, max-pool, dropout,
    log_softmax; trained with NLLLoss. 1,199,882 parameters on 28×28 inputs."""

    def __init__(self, in_channels: int, height: int, width: int, n_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.dropout1 = nn.Dropout(0.25)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * ((height - 4) // 2) * ((width - 4) // 2), 128)
        self.relu3 = nn.ReLU()
        self.dropout2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, n_classes)
        self.log_softmax = nn.LogSoftmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        x = self.flatten(self.dropout1(self.pool(x)))
        x = self.dropout2(self.relu3(self.fc1(x)))
        return self.log_softmax(self.fc2(x))


def _image_shape(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ShapeMismatchError(
            f"model {name!r} takes images shaped (channels, height, width), got input shape "
            f"{tuple(input_shape)}; use 'mlp' for vector data"
        )
    c, h, w = (int(v) for v in input_shape)
    if h < 4 or w < 4:
        raise ShapeMismatchError(f"model {name!r} needs images of at least 4×4, got {h}×{w}")
    return c, h, w


def _mlp(input_shape: Sequence[int], n_outputs: int, hidden: Sequence[int] = (128,)) -> nn.Module:
    return MLP(math.prod(input_shape), n_outputs, tuple(int(h) for h in hidden))


def _mnistnet(input_shape: Sequence[int], n_outputs: int) -> nn.Module:
    return MLP(math.prod(input_shape), n_outputs, (128, 64))


def _curve_mlp(input_shape: Sequence[int], n_outputs: int, hidden: int = 64,
               depth: int = 1) -> nn.Module:
    return MLP(math.prod(input_shape), n_outputs, (int(hidden),) * int(depth))


def _simple_cnn(input_shape: Sequence[int], n_outputs: int) -> nn.Module:
    return SimpleCNN(*_image_shape("simple_cnn", input_shape), n_outputs)


def _mnist_cnn(input_shape: Sequence[int], n_outputs: int) -> nn.Module:
    return SimpleCNN(*_image_shape("mnist_cnn", input_shape), n_outputs)


def _dropout_cnn(input_shape: Sequence[int], n_outputs: int) -> nn.Module:
    c, h, w = _image_shape("dropout_cnn", input_shape)
    if h < 6 or w < 6:
        raise ShapeMismatchError(f"model 'dropout_cnn' needs images of at least 6×6, got {h}×{w}")
    return DropoutCNN(c, h, w, n_outputs)


def matching_torchvision(torch_version: str) -> tuple[str | None, str | None]:
    """(the torchvision release built for ``torch_version``, the PyTorch wheel index that
    serves it) — e.g. ``'2.13.0+cpu'`` → ``('0.28.0', 'https://download.pytorch.org/whl/cpu')``.

    Since torch 2.1, torchvision 0.(minor + 15).patch is built for torch 2.minor.patch
    (2.9.1 ↔ 0.24.1, 2.13 ↔ 0.28; torchvision's README); the local tag (``+cpu``,
    ``+cu126``, ``+rocm6.4``) names the index. None where no rule is known (torch 2.0: see
    the table in docs/data.md) or, for the index, where the build came from PyPI.
    """
    public, _, local = torch_version.partition("+")
    parts = public.split(".")
    version = None
    if len(parts) >= 2 and parts[0] == "2" and parts[1].isdigit() and int(parts[1]) >= 1:
        patch = parts[2] if len(parts) > 2 and parts[2].isdigit() else "0"
        version = f"0.{int(parts[1]) + 15}.{patch}"
    index = f"https://download.pytorch.org/whl/{local}" if local else None
    return version, index


def torchvision_advice(torch_version: str) -> str:
    """The pip line that installs a torchvision working with ``torch_version``, and why."""
    version, index = matching_torchvision(torch_version)
    if version is None:
        return (f"install the torchvision built for your torch {torch_version} (see the "
                "torch ↔ torchvision table in docs/data.md#torchvision)")
    pin = f"torchvision=={version}"
    if index is None:
        return f"install the one built for your torch {torch_version}: pip install {pin}"
    return (f"install the one built for your torch {torch_version}, from PyTorch's index so "
            f"pip keeps that torch: pip install {pin} --index-url {index} (PyPI's torchvision "
            "is built for PyPI's CUDA torch: pinned, it fails to import beside this torch; "
            "unpinned, it replaces this torch; see docs/data.md#torchvision)")


def import_torchvision(purpose: str) -> ModuleType:
    """torchvision, or :class:`MissingExtraError` with one line of advice.

    An import that raises anything counts as "not usable": PyPI's torchvision beside a CPU
    torch raises ``RuntimeError: operator torchvision::nms does not exist``, not an
    ImportError. The ``vision`` extra installs nothing (pip would replace a CPU torch by the
    CUDA one PyPI's torchvision pins), so the advice is a pip line for the matching build.
    """
    try:
        return importlib.import_module("torchvision")
    except ImportError as exc:
        missing = getattr(exc, "name", None) == "torchvision"
        why = ("torchvision is not installed" if missing else
               f"torchvision does not import ({type(exc).__name__}: {_first_line(exc)})")
    except Exception as exc:
        why = (f"torchvision is installed but does not import ({type(exc).__name__}: "
               f"{_first_line(exc)}), so it was built for another torch")
    raise MissingExtraError(f"{purpose} needs torchvision, and {why}; "
                            f"{torchvision_advice(torch.__version__)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else "no message"


def _vgg16(input_shape: Sequence[int], n_outputs: int) -> nn.Module:
    torchvision = import_torchvision("model 'vgg16'")
    return torchvision.models.vgg16(weights=None, num_classes=n_outputs)


@dataclass(frozen=True)
class ModelEntry:
    """A zoo model: how to build it, which seed it comes from, and how that seed trained it."""

    build: Callable[..., nn.Module]
    seed: str
    description: str
    defaults: TrainDefaults
    #: this model's own values for a dataset, over :data:`DATASET_DEFAULTS`
    data_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


MODELS: dict[str, ModelEntry] = {
    "mlp": ModelEntry(_mlp, "000", "MLP 784-128-10 (ReLU)", TrainDefaults()),
    "simple_cnn": ModelEntry(_simple_cnn, "000", "SimpleCNN conv32-pool-conv64-pool-fc128-fc",
                             TrainDefaults(batch_size=64)),
    "mnist_cnn": ModelEntry(_mnist_cnn, "001", "MnistCnn conv32-conv64-fc128-fc (AdamW)",
                            TrainDefaults(optimizer="adamw", batch_size=64)),
    "dropout_cnn": ModelEntry(_dropout_cnn, "002",
                              "two convs, dropout, log_softmax (NLL loss)",
                              TrainDefaults(batch_size=64, loss="nll")),
    "mnistnet": ModelEntry(_mnistnet, "004", "MNISTNet 784-128-64-10 (ReLU)",
                           TrainDefaults(batch_size=64)),
    "curve_mlp": ModelEntry(_curve_mlp, "001", "MLP 1-hidden-1 fitting a curve (MSE)",
                            TrainDefaults(batch_size=100, epochs=20, loss="mse",
                                          passes_per_epoch=250)),
    # A ViT learns slowly from few images: warm-up + cosine and a one-pixel shift take it
    # over 95 % in 5 epochs of 8,000 MNIST images (docs/acceptance/issue-15.md)
    "vit": ModelEntry(build_vit, "001",
                      "ViT: 4×4 patches + CLS, 4 pre-norm blocks, dim 64, 4 heads",
                      TrainDefaults(optimizer="adamw", lr=3e-3, batch_size=32,
                                    schedule="cosine", shift=1),
                      data_defaults={"digits": {"lr": 2e-3, "batch_size": 16}}),
    "row_lstm": ModelEntry(build_row_lstm, "001", "LSTM reading the image row by row, 64 units",
                           TrainDefaults(lr=2e-3, batch_size=64)),
    "vgg16": ModelEntry(_vgg16, "003",
                        "torchvision's VGG16 (needs the torchvision built for your torch)",
                        TrainDefaults(optimizer="sgd", lr=1e-2, batch_size=32)),
}

MODEL_NAMES = tuple(MODELS)


def build_model(name: str, input_shape: Sequence[int] = (1, 28, 28), n_outputs: int = 10,
                **kwargs: Any) -> nn.Module:
    """Build a zoo model sized for ``input_shape`` (without the batch dimension).

    >>> build_model("mlp", (1, 8, 8)).fc1
    Linear(in_features=64, out_features=128, bias=True)
    """
    if name not in MODELS:
        raise unknown_name("model", name, MODEL_NAMES)
    return MODELS[name].build(tuple(input_shape), int(n_outputs), **kwargs)


def train_defaults(name: str, data: str | None = None) -> TrainDefaults:
    """The seed's training hyper-parameters for a zoo model (plain defaults otherwise), with
    ``data``'s values over them (:data:`DATASET_DEFAULTS`, then the model's own for it).

    >>> train_defaults("vit").lr, train_defaults("vit", "digits").batch_size
    (0.003, 16)
    """
    entry = MODELS.get(name)
    defaults = entry.defaults if entry is not None else TrainDefaults()
    if data is None:
        return defaults
    own = entry.data_defaults.get(data, {}) if entry is not None else {}
    return replace(defaults, **{**DATASET_DEFAULTS.get(data, {}), **own})
