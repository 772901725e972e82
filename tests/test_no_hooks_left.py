"""No hook is ever left on a model: every library call that registers hooks, run normally
and with a model whose forward raises midway (one check generated per hook user).

The list covers everything that registers forward hooks or pre-hooks
(``grep -rn "forward_hooks\\|forward_pre_hooks\\|register_forward" src``), through public
functions only. A failed call must also let the model's error through and leave no file.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent / "capture"))  # attention_models
from attention_models import Fused, FuseError
from attention_models import inputs as attention_inputs

from shenjing.analysis.attribute import attribute, randomization_test
from shenjing.analysis.fit import linear_regions
from shenjing.analysis.gan import classifier_outputs
from shenjing.analysis.landscape import (
    EngineConfig,
    Evaluator,
    find_first_layer,
    flat_params,
    plane,
    random_directions,
)
from shenjing.analysis.maps import compare_feature_maps, feature_maps, layer_output
from shenjing.analysis.visualize import visualize_units
from shenjing.analysis.warp import layer_outputs
from shenjing.capture import (
    capture,
    capture_dataset,
    default_layers,
    list_layers,
    resolve_keys,
)
from shenjing.capture.attention import capture_attention, find_attention_layers
from shenjing.data.types import Split
from shenjing.hooks import count_hooks
from shenjing.training.evaluate import evaluate

N_SAMPLES = 10


class Midway(nn.Module):
    """``fc1 → ReLU → fc2``; while :attr:`fuse` is set, that many more forwards succeed and
    the next one raises between the ReLU and ``fc2``. The fuse is a class attribute, so the
    copies a library makes of the model (landscapes, linear regions) raise as well."""

    fuse: int | None = None

    def __init__(self, n_in: int = 4, n_out: int = 3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_in, 8)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(8, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.fc1(x))
        if Midway.fuse is not None:
            if Midway.fuse == 0:
                raise RuntimeError("boom midway through forward")
            Midway.fuse -= 1
        return self.fc2(h)


@pytest.fixture(autouse=True)
def _unarmed() -> Iterator[None]:
    Midway.fuse = Fused.fuse = None
    yield
    Midway.fuse = Fused.fuse = None
    Fused.where = "after_first"


def _inputs(n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(N_SAMPLES, n_in, generator=g), torch.arange(N_SAMPLES) % 3


def _in_block(model: nn.Module) -> None:
    x, _ = _inputs(4)
    with capture(model, ["fc1", "relu"]):
        model(x[:5])
        model(x[5:])


def _maps(model: nn.Module) -> None:
    x, _ = _inputs(4)
    compare_feature_maps(feature_maps(model, x[0], "relu", epoch=0),
                         feature_maps(model, x[1], "relu", epoch=1))


def _evaluator(path: str) -> Callable[[nn.Module, Path], Evaluator]:
    def build(model: nn.Module, _tmp: Path) -> Evaluator:
        x, y = _inputs(4)
        return Evaluator(model, flat_params(model), random_directions(model, 2, seed=0).vectors,
                         x, y, loss="cross_entropy", classification=True,
                         config=EngineConfig(path=path, batch_size=4))
    return build


def _dead_units(model: nn.Module) -> None:
    x, y = _inputs(4)
    evaluate(model, Split(x, y, torch.arange(N_SAMPLES)), nn.functional.cross_entropy,
             batch_size=4, dead_units=True)


@dataclass(frozen=True)
class HookUser:
    """One library call that registers hooks.

    ``prepare`` runs before the fuse is armed and gives ``call`` its argument (by default
    the model; the landscape's ``Evaluator`` is built there, so its own copy of the model
    is checked too). ``fails_at`` lists how many forwards succeed before the model raises
    in the failing runs (1: the error comes in a later batch, after the first was recorded).
    """

    id: str
    call: Callable[[Any, Path], object]
    prepare: Callable[[nn.Module, Path], Any] = lambda model, _tmp: model
    shape: tuple[int, int] = (4, 3)
    fails_at: tuple[int, ...] = (0,)


HOOK_USERS = [
    HookUser("capture", lambda m, _t: _in_block(m), fails_at=(0, 1)),
    HookUser("capture_dataset in memory", lambda m, _t: capture_dataset(
        m, _inputs(4), ["fc1", "relu", "fc2"], batch_size=4), fails_at=(0, 1)),
    HookUser("capture_dataset to disk", lambda m, t: capture_dataset(
        m, _inputs(4), ["fc1", "relu", "fc2"], batch_size=4, out_dir=t / "acts"),
        fails_at=(0, 1)),
    HookUser("list_layers", lambda m, _t: list_layers(m, _inputs(4)[0])),
    HookUser("resolve_keys", lambda m, _t: resolve_keys(m, _inputs(4)[0], ["fc1", "relu"])),
    HookUser("default_layers", lambda m, _t: default_layers(m, _inputs(4)[0]),
             fails_at=(0, 1)),
    HookUser("feature_maps", lambda m, _t: _maps(m), fails_at=(0, 1)),
    HookUser("layer_output", lambda m, _t: layer_output(m, _inputs(4)[0], "fc1")),
    HookUser("trainer dead units", lambda m, _t: _dead_units(m), fails_at=(0, 1)),
    HookUser("find_first_layer", lambda m, _t: find_first_layer(m, _inputs(4)[0])),
    HookUser("Evaluator linear", lambda ev, _t: ev.evaluate(torch.zeros(3, 2)),
             prepare=_evaluator("linear")),
    # the chain path evaluates without forward: its hooks are the checks made when built
    HookUser("Evaluator chain", lambda m, t: _evaluator("chain")(m, t).evaluate(
        torch.zeros(3, 2)), fails_at=(0, 1)),
    HookUser("plane linear", lambda m, _t: plane(m, *_inputs(4), loss="cross_entropy",
                                                  steps=3, device="cpu", engine="linear")),
    HookUser("plane chain", lambda m, _t: plane(m, *_inputs(4), loss="cross_entropy",
                                                 steps=3, device="cpu", engine="chain")),
    HookUser("linear_regions", lambda m, _t: linear_regions(m, -1.0, 1.0, n_grid=11),
             shape=(1, 1)),
    HookUser("warp layer_outputs", lambda m, _t: layer_outputs(
        m, _inputs(2)[0].numpy(), ["relu", "fc2"]), shape=(2, 3)),
    HookUser("visualize_units", lambda m, _t: visualize_units(
        m, "fc2", [0], input_shape=(4,), steps=2, data=torch.randn(10, 4)), fails_at=(0, 1)),
    HookUser("gan classifier_outputs", lambda m, _t: classifier_outputs(
        m, _inputs(4)[0], "relu", batch_size=4), fails_at=(0, 1)),
]


def _as_image_model(model: nn.Module, _tmp: Path) -> nn.Module:
    """The model reading 1×2×2 images (attribution takes images): its fuse still fires."""
    return nn.Sequential(nn.Flatten(), model)


def _images() -> torch.Tensor:
    return torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))


HOOK_USERS += [
    HookUser(f"attribute {method}", lambda m, _t, method=method: attribute(
        m, _images(), method=method, steps=4, n_noise=2, window=1),
        prepare=_as_image_model, fails_at=(0, 1))
    for method in ("saliency", "integrated_gradients", "smoothgrad", "occlusion")
] + [
    HookUser("randomization_test", lambda m, _t: randomization_test(
        m, _images(), method="saliency", targets=[0] * 6), prepare=_as_image_model,
        fails_at=(0, 1)),
]


def _modules_of(*objects: Any, depth: int = 3) -> list[nn.Module]:
    """The models among ``objects`` and, a few attributes deep, inside them (the copy of
    the model an Evaluator keeps in its evaluation path)."""
    found = []
    for obj in objects:
        if isinstance(obj, nn.Module):
            found.append(obj)
        elif depth and hasattr(obj, "__dict__"):
            found += _modules_of(*vars(obj).values(), depth=depth - 1)
    return found


def _model(user: HookUser) -> Midway:
    torch.manual_seed(0)
    return Midway(*user.shape).eval()


@pytest.mark.parametrize("user", HOOK_USERS, ids=lambda u: u.id)
def test_no_hook_is_left_after_a_normal_call(user: HookUser, tmp_path: Path) -> None:
    model = _model(user)
    target = user.prepare(model, tmp_path)
    user.call(target, tmp_path)
    modules = _modules_of(model, target)
    assert len(modules) > (target is not model), "the prepared object holds no model copy"
    for module in modules:
        assert count_hooks(module) == 0


@pytest.mark.parametrize(("user", "fails_at"),
                         [(u, n) for u in HOOK_USERS for n in u.fails_at],
                         ids=lambda v: v.id if isinstance(v, HookUser) else f"raises after {v}")
def test_no_hook_is_left_when_forward_raises(user: HookUser, fails_at: int,
                                             tmp_path: Path) -> None:
    model = _model(user)
    target = user.prepare(model, tmp_path)
    Midway.fuse = fails_at
    with pytest.raises(Exception, match="boom midway through forward"):
        user.call(target, tmp_path)
    assert Midway.fuse == 0, "the model did not reach the forward that raises"
    for module in _modules_of(model, target):
        assert count_hooks(module) == 0
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


# ---- attention capture: hooks, forward wrappers and the function mode --------------------
# The attention capture also replaces the forward of torch's attention modules on the
# instance and pushes a TorchFunctionMode; ``Fused`` (tests/capture/attention_models.py)
# computes attention in every way the capture knows and raises after its first attention,
# or inside a TransformerEncoderLayer while the capture has popped its mode.
ATTENTION_USERS: dict[str, tuple[Callable[[nn.Module, Path], object], tuple[int, ...]]] = {
    "capture_attention in memory": (lambda m, _t: capture_attention(
        m, attention_inputs(6), batch_size=3), (0, 1)),
    "capture_attention to disk": (lambda m, t: capture_attention(
        m, attention_inputs(6), batch_size=3, out=t / "attention.npy"), (0, 1)),
    "find_attention_layers": (lambda m, _t: find_attention_layers(m, attention_inputs(2)),
                              (0,)),
}


def _no_attention_instrument_left(model: nn.Module) -> None:
    assert count_hooks(model) == 0
    assert not [name for name, m in model.named_modules() if "forward" in vars(m)]
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("user", list(ATTENTION_USERS))
def test_attention_capture_leaves_nothing(user: str, tmp_path: Path) -> None:
    model = Fused().eval()
    ATTENTION_USERS[user][0](model, tmp_path)
    _no_attention_instrument_left(model)


@pytest.mark.parametrize(("user", "where", "fails_at"), [
    (user, where, n) for user, (_, fails) in ATTENTION_USERS.items()
    for where in ("after_first", "inside_encoder") for n in fails])
def test_attention_capture_leaves_nothing_when_forward_raises(
        user: str, where: str, fails_at: int, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Fused().eval()
    Fused.where, Fused.fuse = where, fails_at
    with pytest.raises(FuseError, match="boom midway through forward"):
        ATTENTION_USERS[user][0](model, tmp_path)
    assert Fused.fuse == 0, "the model did not reach the forward that raises"
    _no_attention_instrument_left(model)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
