"""A model spec: the JSON-able recipe a run stores to rebuild its architecture."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from torch import nn

from shenjing.errors import UsageError
from shenjing.models.zoo import build_model


def model_spec(name: str, input_shape: tuple[int, ...], n_outputs: int,
               **kwargs: Any) -> dict[str, Any]:
    """The spec of a zoo model."""
    return {"name": name, "input_shape": list(input_shape), "n_outputs": n_outputs,
            "kwargs": kwargs}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a model from a spec: a zoo ``name`` or a user ``factory`` (``pkg.mod:Name``)."""
    kwargs = dict(spec.get("kwargs") or {})
    if "factory" in spec:
        return nn_from_factory(spec["factory"], kwargs)
    return build_model(spec["name"], tuple(spec["input_shape"]), int(spec["n_outputs"]),
                       **kwargs)


def resolve_factory(ref: str) -> Any:
    """Import ``pkg.module:Name`` or ``path/to/file.py:Name`` and return ``Name``."""
    if ":" not in ref:
        raise UsageError(f"model reference {ref!r} needs the form 'pkg.module:Factory' or "
                         "'path/to/file.py:Factory'")
    module_ref, _, attr = ref.rpartition(":")
    if module_ref.endswith(".py"):
        path = Path(module_ref)
        if not path.is_file():
            raise UsageError(f"model file {path} does not exist (from --model {ref!r})")
        mod_name = f"_shenjing_user_{abs(hash(path.resolve()))}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as exc:
            raise UsageError(f"cannot import module {module_ref!r} for --model {ref!r}: {exc}. "
                             "Is the package installed, or is its folder on PYTHONPATH?"
                             ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        public = sorted(n for n in dir(module) if not n.startswith("_"))
        raise UsageError(f"module {module_ref!r} has no attribute {attr!r}; it has: "
                         f"{', '.join(public[:30])}") from None


def nn_from_factory(ref: str, kwargs: dict[str, Any]) -> nn.Module:
    """Call a user factory and check that it returns an ``nn.Module``."""
    factory = resolve_factory(ref)
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise UsageError(f"model factory {ref!r} raised {type(exc).__name__}: {exc} "
                         f"(called with {kwargs or 'no arguments'})") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"model factory {ref!r} returned {type(model).__name__}, "
                         "not a torch.nn.Module")
    return model
