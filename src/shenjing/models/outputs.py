"""Make a model that returns a tuple, list, dict or output object look like ``x → tensor``.

Every view of shenjing (evaluation, landscapes, predictions) calls ``model(x)`` and expects
the prediction tensor. Users' models often return more: ``(logits, (h, c))`` from an LSTM,
``{"logits": …, "aux": …}``, a Hugging Face-style output object. :func:`select_output`
picks the prediction from such an output by an ``output`` key/index (``"logits"``, ``0``,
a dotted path ``"1.0"``), and :func:`with_output` makes the model return it.

Default (``output=None``): a tensor is used as is; from a dict or an object the ``logits``
entry if there is one, else the first tensor; from a tuple/list the first tensor.

Why the model is changed in place (its class swapped for a subclass whose ``forward`` selects)
rather than put inside a wrapper: a wrapper adds a prefix to every layer name and state-dict
key (``model.fc1``), so the user's ``--layers fc1`` and weights files would no longer match.
The subclass keeps the user's class name, layer names and state-dict keys unchanged.
:class:`OutputSelector`, a plain wrapper module, is the fallback for modules whose class
cannot be swapped (TorchScript).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from shenjing.errors import UsageError

Output = str | int | None

#: the attribute that marks a model whose forward selects its output
ATTR = "_shenjing_output"
_SUBCLASSES: dict[type, type] = {}


def describe_output(out: Any, depth: int = 0) -> str:
    """A short structural description: ``tuple(0: Tensor(2, 10), 1: tuple(…))``."""
    if isinstance(out, torch.Tensor):
        return f"Tensor{tuple(out.shape)}"
    if depth > 2:
        return type(out).__name__
    if isinstance(out, Mapping):
        inner = ", ".join(f"{k!r}: {describe_output(v, depth + 1)}" for k, v in out.items())
        return f"{type(out).__name__}({inner})"
    if isinstance(out, (tuple, list)):
        inner = ", ".join(f"{i}: {describe_output(v, depth + 1)}" for i, v in enumerate(out))
        return f"{type(out).__name__}({inner})"
    fields = _object_fields(out)
    if fields:
        inner = ", ".join(f"{k}: {describe_output(v, depth + 1)}" for k, v in fields.items())
        return f"{type(out).__name__}({inner})"
    return type(out).__name__


def _object_fields(out: Any) -> dict[str, Any]:
    """Tensor-holding attributes of an output object (dataclass / namedtuple-like)."""
    data = getattr(out, "__dict__", None)
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _step(out: Any, part: str | int, full: Output) -> Any:
    if isinstance(out, Mapping):
        if part in out:
            return out[part]
        if isinstance(part, int) and 0 <= part < len(out):
            return list(out.values())[part]
        raise UsageError(f"--output {full!r}: the model's output has no key {part!r}; it "
                         f"returns {describe_output(out)}. Choose one of its keys")
    if isinstance(out, (tuple, list)):
        if isinstance(part, str) and hasattr(out, "_fields") and part in out._fields:
            return getattr(out, part)
        try:
            index = int(part)
            return out[index]
        except (ValueError, IndexError):
            raise UsageError(
                f"--output {full!r}: the model returns a {type(out).__name__} of "
                f"{len(out)} items ({describe_output(out)}); use an index 0…{len(out) - 1}"
            ) from None
    if isinstance(part, str) and hasattr(out, part):
        return getattr(out, part)
    raise UsageError(f"--output {full!r}: cannot select {part!r} from the model's output "
                     f"{describe_output(out)}")


def _parts(output: str | int) -> list[str | int]:
    if isinstance(output, int):
        return [output]
    parts: list[str | int] = []
    for p in str(output).split("."):
        parts.append(int(p) if p.lstrip("-").isdigit() else p)
    return parts


def default_output(out: Any) -> Output:
    """The key/index the default rule picks from ``out`` (None for a plain tensor).

    >>> default_output((torch.zeros(2, 3), torch.zeros(1)))
    0
    >>> default_output({"aux": torch.zeros(1), "logits": torch.zeros(2, 3)})
    'logits'
    """
    if isinstance(out, torch.Tensor):
        return None
    if isinstance(out, Mapping):
        if "logits" in out and isinstance(out["logits"], torch.Tensor):
            return "logits"
        for key, value in out.items():
            if isinstance(value, torch.Tensor):
                return key
    elif isinstance(out, (tuple, list)):
        for i, value in enumerate(out):
            if isinstance(value, torch.Tensor):
                return i
    else:
        fields = _object_fields(out)
        if isinstance(fields.get("logits"), torch.Tensor):
            return "logits"
        for key, value in fields.items():
            if isinstance(value, torch.Tensor):
                return key
    raise UsageError(f"the model returns {describe_output(out)}, with no tensor at the top "
                     "level to use as its prediction; pass --output with a dotted path, "
                     "e.g. --output 0.logits")


def select_output(out: Any, output: Output = None) -> torch.Tensor:
    """The prediction tensor in a model's output, chosen by ``output`` (key, index, path).

    >>> select_output({"logits": torch.ones(2, 3), "aux": 1}).shape
    torch.Size([2, 3])
    >>> select_output((torch.zeros(1), torch.ones(2)), "1").tolist()
    [1.0, 1.0]
    """
    if output is None:
        key = default_output(out)
        if key is None:
            return out
        output = key
    value = out
    for part in _parts(output):
        value = _step(value, part, output)
    if not isinstance(value, torch.Tensor):
        raise UsageError(f"--output {output!r} selects a {type(value).__name__} "
                         f"({describe_output(value)}), not a tensor; go one level deeper, "
                         f"e.g. --output {output}.0")
    return value


class _SelectsOutput:
    """Mixin placed before the user's class: ``forward`` returns the selected tensor."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = super().forward(*args, **kwargs)  # type: ignore[misc]
        return select_output(out, getattr(self, ATTR))


def _subclass_of(cls: type) -> type:
    if cls not in _SUBCLASSES:
        sub = type(cls.__name__, (_SelectsOutput, cls), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__, "_shenjing_original_class": cls})
        _SUBCLASSES[cls] = sub
    return _SUBCLASSES[cls]


class OutputSelector(nn.Module):
    """Fallback wrapper: ``OutputSelector(model, "logits")(x)`` is the selected tensor.

    Layer names gain the prefix ``model.``; prefer :func:`with_output`, which uses this only
    when the model's class cannot be swapped.
    """

    def __init__(self, model: nn.Module, output: Output) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return select_output(self.model(*args, **kwargs), self.output)


def with_output(model: nn.Module, output: Output | str) -> nn.Module:
    """Make ``model(x)`` return the tensor selected by ``output`` (``None``: default rule).

    The model is changed in place and returned; its layer names and ``state_dict`` keys do
    not change. Calling it again replaces the selection.

    >>> class Net(nn.Module):
    ...     def __init__(self): super().__init__(); self.fc = nn.Linear(2, 3)
    ...     def forward(self, x): return {"logits": self.fc(x), "hidden": x}
    >>> net = with_output(Net(), "logits")
    >>> net(torch.zeros(4, 2)).shape, type(net).__name__, list(net.state_dict())
    (torch.Size([4, 3]), 'Net', ['fc.weight', 'fc.bias'])
    """
    if isinstance(output, str) and output.lstrip("-").isdigit():
        output = int(output)
    cls = type(model)
    if isinstance(model, _SelectsOutput):
        setattr(model, ATTR, output)
        return model
    try:
        model.__class__ = _subclass_of(cls)
    except TypeError:
        return OutputSelector(model, output)
    setattr(model, ATTR, output)
    return model


def selected_output(model: nn.Module) -> Output | str:
    """The output selection applied by :func:`with_output` (``'none'`` if not applied)."""
    if isinstance(model, OutputSelector):
        return model.output
    return getattr(model, ATTR, "none") if isinstance(model, _SelectsOutput) else "none"


def original_class(model: nn.Module) -> type:
    """The user's class of ``model`` (looking through :func:`with_output`)."""
    if isinstance(model, OutputSelector):
        return type(model.model)
    return getattr(type(model), "_shenjing_original_class", type(model))


__all__ = ["Output", "OutputSelector", "default_output", "describe_output",
           "original_class", "select_output", "selected_output", "with_output"]
