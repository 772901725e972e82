"""A model spec: the JSON-able recipe a run stores to rebuild its architecture."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shenjing._imports import import_reference, where
from shenjing.errors import UsageError
from shenjing.models.zoo import MODELS, build_model


def model_spec(name: str, input_shape: tuple[int, ...], n_outputs: int,
               **kwargs: Any) -> dict[str, Any]:
    """The spec of a zoo model."""
    return {"name": name, "input_shape": list(input_shape), "n_outputs": n_outputs,
            "kwargs": kwargs}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a model from a spec: a zoo ``name`` or a user ``factory`` (``pkg.mod:Name``).

    A spec may also carry ``output`` (key/index of the prediction in a tuple/dict output, see
    :mod:`shenjing.models.outputs`) and ``init_seed`` (the torch seed set before building, so
    the fresh initialisation is reproducible).
    """
    kwargs = dict(spec.get("kwargs") or {})
    seeded = spec.get("init_seed") is not None
    # a seeded build must not move the caller's global RNG: fork it
    with torch.random.fork_rng(devices=[], enabled=seeded):
        if seeded:
            torch.manual_seed(int(spec["init_seed"]))
        if "factory" in spec:
            model = nn_from_factory(spec["factory"], kwargs)
        else:
            model = build_model(spec["name"], tuple(spec["input_shape"]),
                                int(spec["n_outputs"]), **kwargs)
    if spec.get("output") is not None:
        from shenjing.models.outputs import with_output

        model = with_output(model, spec["output"])
    return model


def zoo_name(ref: str) -> str | None:
    """The zoo model a ``--model`` reference names (``simple_cnn``, ``shenjing.models:mlp``)."""
    if ref in MODELS:
        return ref
    module, _, attr = ref.rpartition(":")
    if module in ("shenjing.models", "shenjing.models.zoo", "shenjing") and attr in MODELS:
        return attr
    return None


def user_model_spec(ref: str, kwargs: dict[str, Any] | None = None, *,
                    input_shape: tuple[int, ...] | None = None, n_outputs: int | None = None,
                    output: str | int | None = None, init_seed: int | None = None
                    ) -> dict[str, Any]:
    """The spec for ``--model ref`` (+ ``--model-arg``): a zoo spec or a factory spec.

    Zoo names (``simple_cnn`` or ``shenjing.models:simple_cnn``) take their sizes from the
    data (``input_shape``, ``n_outputs``); anything else is ``{"factory": ref, "kwargs": …}``.
    A ``file.py:Factory`` path is stored absolute so the run can be reopened from elsewhere.
    """
    name = zoo_name(ref)
    spec: dict[str, Any]
    if name is not None:
        if input_shape is None or n_outputs is None:
            raise UsageError(f"zoo model {name!r} needs the data's input shape and number of "
                             "outputs; pass --data")
        spec = model_spec(name, input_shape, n_outputs, **(kwargs or {}))
    else:
        module_ref, _, attr = ref.rpartition(":")
        if module_ref.endswith(".py"):
            ref = f"{Path(module_ref).resolve()}:{attr}"
        spec = {"factory": ref, "kwargs": dict(kwargs or {})}
    if output is not None:
        spec["output"] = output
    if init_seed is not None:
        spec["init_seed"] = int(init_seed)
    return spec


def parse_model_args(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """``["hidden=[64, 32]", "act=relu", "p=0.5"]`` → ``{"hidden": [64, 32], "act": "relu",
    "p": 0.5}``: values are Python literals when they parse as one, strings otherwise.

    >>> parse_model_args(["n=3", "name=net", "flag=True", "shape=(1, 28, 28)"])
    {'n': 3, 'name': 'net', 'flag': True, 'shape': (1, 28, 28)}
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(f"--model-arg {item!r} must look like key=value, e.g. "
                             "--model-arg hidden=128")
        out[key] = _literal(item, text.strip())
    return out


#: how a Python literal starts: text that starts so but does not parse is a typo, not a string
_LITERAL_STARTS = tuple("[({'\"")


def _literal(item: str, text: str) -> Any:
    """``text`` as a Python literal, or as the string itself when it is not one (``relu``);
    refused when it starts like a literal but is broken (``[64``), which would otherwise
    reach the factory as the string ``'[64'``."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        if text.startswith(_LITERAL_STARTS):
            why = exc.msg if isinstance(exc, SyntaxError) else type(exc).__name__
            raise UsageError(f"--model-arg {item!r}: {text!r} is not a Python literal "
                             f"({why}); write e.g. --model-arg hidden=[64,32], or quote text "
                             "as key=\"'text'\"") from None
        return text


def resolve_factory(ref: str) -> Any:
    """Import ``pkg.module:Name`` or ``path/to/file.py:Name`` and return ``Name``.

    ``Name`` may be dotted (``module:Outer.build``).
    """
    if ":" not in ref:
        from shenjing.errors import UnknownNameError, did_you_mean

        raise UnknownNameError(f"--model {ref!r} is neither a zoo model nor a reference of the "
                               "form 'pkg.module:Factory' or 'path/to/file.py:Factory'."
                               f"{did_you_mean(ref, MODELS)} Zoo models: {', '.join(MODELS)}")
    obj = import_reference(ref, kind="model", option="--model")
    if not callable(obj):
        raise UsageError(f"--model {ref!r} names a {type(obj).__name__}, not a class or "
                         "function returning an nn.Module")
    return obj


def nn_from_factory(ref: str, kwargs: dict[str, Any]) -> nn.Module:
    """Call a user factory and check that it returns an ``nn.Module``."""
    factory = resolve_factory(ref)
    try:
        model = factory(**kwargs)
    except (Exception, SystemExit) as exc:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
        raise UsageError(f"model factory {ref!r} raised {type(exc).__name__}: {exc}"
                         f"{where(exc)} when called with {args}. Fix the factory or the "
                         "--model-arg values it receives") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"model factory {ref!r} returned {type(model).__name__}, "
                         "not a torch.nn.Module")
    return model
