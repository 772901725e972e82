"""Capture keys: the names of recorded tensors, parsed back into module, call and path.

A layer's output is recorded under a *key* (see :mod:`shenjing.capture.core`):

- ``fc1`` — the module's single tensor output;
- ``lstm.0``, ``lstm.1.0`` — an element of a tuple/list (or ``heads.logits`` of a dict)
  output; the part after the module name is the *path* into the output;
- ``block#1``, ``block#1.0``, ``block.0#1`` — call 1 (counted from 0) of a module that
  runs more than once per forward.

Every key that ``shenjing layers`` prints can be given wherever a layer is chosen; a key
*selects* the tensors it names (``lstm.1`` selects ``lstm.1.0`` and ``lstm.1.1``). This
module only parses; :func:`shenjing.capture.layers.resolve_keys` checks keys against a model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import nn

from shenjing.errors import LayerNotFoundError

_CALL = re.compile(r"(\d+)(?:\.(.+))?\Z")


class LayerKey(str):
    """A capture key that remembers how it splits: ``module``, ``call`` and ``path``.

    Returned by :func:`~shenjing.capture.layers.resolve_keys`, so :func:`split_key` can
    split it without the model (``lstm.1.0`` alone cannot say whether ``lstm.1`` is a
    module). It is a ``str`` in every other respect (JSON, file names, comparisons).
    """

    module: str
    call: int | None
    path: tuple[str, ...]

    def __new__(cls, text: str, module: str, call: int | None = None,
                path: tuple[str, ...] = ()) -> LayerKey:
        key = super().__new__(cls, text)
        key.module, key.call, key.path = module, call, tuple(path)
        return key

    def __reduce__(self) -> tuple[object, ...]:  # pickles (and copies) keep the parts
        return (LayerKey, (str(self), self.module, self.call, self.path))


def make_key(module: str, call: int | None, path: tuple[str, ...]) -> LayerKey:
    """The key text for a module, call and path: ``make_key("lstm", None, ("1", "0"))`` is
    ``lstm.1.0``; ``make_key("block", 1, ())`` is ``block#1``."""
    text = module + (f"#{call}" if call is not None else "") + "".join(f".{p}" for p in path)
    return LayerKey(text, module, call, path)


def output_key(module: str, call: int, n_calls: int, path: tuple[str, ...]) -> LayerKey:
    """The one naming rule of recorded tensors: the key of the output at ``path`` of call
    ``call`` (from 0) of a module that ran ``n_calls`` times in one forward; ``#call``
    appears only when it ran more than once.

    >>> output_key("block", 1, 2, ("0",)), output_key("lstm", 0, 1, ("1", "0"))
    ('block#1.0', 'lstm.1.0')
    """
    return make_key(module, call if n_calls > 1 else None, path)


def _module_names(model: nn.Module | Iterable[str]) -> set[str]:
    if isinstance(model, nn.Module):
        return {name for name, _ in model.named_modules() if name}
    return set(model)


def split_key(key: str, model: nn.Module | Iterable[str] | None = None
              ) -> tuple[str, int | None, tuple[str, ...]]:
    """Split a capture key into ``(module name, call index or None, path into the output)``.

    ``block#1.0`` → ``('block', 1, ('0',))``. A key without ``#`` needs the model (or its
    module names) to tell the module from the path: ``lstm.1.0`` is module ``lstm``, path
    ``('1', '0')``, because ``lstm`` has no submodule ``1``. Keys returned by
    :func:`~shenjing.capture.layers.resolve_keys` know their parts and need no model;
    another plain string without ``#`` and without a model is read as a module name.

    >>> split_key("lstm.1.0", ["lstm", "fc"])
    ('lstm', None, ('1', '0'))
    >>> split_key("block.0#1")
    ('block.0', 1, ())
    """
    if isinstance(key, LayerKey):
        return key.module, key.call, key.path
    text = str(key).strip()
    if "#" in text:
        module, _, rest = text.partition("#")
        match = _CALL.match(rest)
        if not module or match is None:
            raise LayerNotFoundError(
                f"{text!r} is not a capture key: after '#' comes the call number, e.g. "
                f"'{module or 'block'}#1' or '{module or 'block'}#1.0'. See `shenjing layers RUN`")
        path = tuple(match.group(2).split(".")) if match.group(2) else ()
        return module, int(match.group(1)), path
    if model is None:
        return text, None, ()
    names = _module_names(model)
    if text in names:
        return text, None, ()
    parts = text.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        if module in names:
            return module, None, tuple(parts[cut:])
    return text, None, ()


@dataclass(frozen=True)
class KeyFilter:
    """One selection inside a module's outputs: a call (None: every call) and a path prefix."""

    call: int | None = None
    path: tuple[str, ...] = ()

    def spec(self, module: str) -> str:
        return make_key(module, self.call, self.path)

    def selects(self, call: int, n_calls: int, path: tuple[str, ...]) -> bool:
        if self.call is not None and (n_calls == 1 or self.call != call):
            return False
        return path[:len(self.path)] == self.path


#: module name → None (record all its outputs) or the filters that choose among them
Selection = dict[str, list[KeyFilter] | None]


def merge(selection: Selection, module: str, flt: KeyFilter | None) -> None:
    """Add a module (``flt=None``: all of it) or one filter of it to ``selection``."""
    if flt is None or (flt.call is None and not flt.path):
        selection[module] = None
    elif module not in selection:
        selection[module] = [flt]
    elif selection[module] is not None:
        selection[module].append(flt)  # type: ignore[union-attr]


def output_path(module: str, key: str) -> tuple[str, ...]:
    """The path part of a key produced by :func:`~shenjing.capture.recorder.flatten_output`
    for ``module`` (``lstm.1.0`` → ``('1', '0')``)."""
    rest = key[len(module):]
    return tuple(rest[1:].split(".")) if rest else ()


def is_selected(selection: Selection, module: str, call: int, n_calls: int,
                path: tuple[str, ...]) -> bool:
    """Whether the output at ``path`` of call ``call`` (of ``n_calls``) is selected."""
    filters = selection.get(module)
    return filters is None or any(f.selects(call, n_calls, path) for f in filters)


def check_filters(selection: Selection, produced: Mapping[str, list[list[tuple[str, ...]]]],
                  model_name: str) -> None:
    """Raise :class:`LayerNotFoundError` for a filter that selects nothing that ran.

    ``produced[module]`` lists, per call, the paths of the tensors the module returned.
    """
    for module, filters in selection.items():
        per_call = produced.get(module)
        if filters is None or not per_call:
            continue
        n_calls = len(per_call)
        keys = [output_key(module, c, n_calls, p)
                for c, paths in enumerate(per_call) for p in paths]
        for flt in filters:
            if any(flt.selects(c, n_calls, p) for c, paths in enumerate(per_call)
                   for p in paths):
                continue
            spec = flt.spec(module)
            if flt.call is not None and n_calls == 1:
                why = f"{module!r} runs once per forward, so its keys have no '#'"
            elif flt.call is not None and flt.call >= n_calls:
                why = f"{module!r} runs {n_calls}× per forward (calls #0…#{n_calls - 1})"
            else:
                why = f"{module!r} returned no tensor at that place"
            raise LayerNotFoundError(
                f"no output {spec!r} in {model_name}: {why}. Its keys: "
                f"{', '.join(keys) or 'none (no floating-point tensor output)'}. "
                "See `shenjing layers RUN`")
