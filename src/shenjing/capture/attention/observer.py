"""Seeing every attention computation of a forward pass, without changing it.

Three instruments, all removed when :meth:`Observer.observing` exits, also when forward
raises:

- a :class:`torch.overrides.TorchFunctionMode`, pushed only for the length of each
  :meth:`Observer.forward`: it sees ``F.scaled_dot_product_attention`` however the model
  imported it, and the softmax → matmul pairs of explicit attention. Every call goes on
  to the real function unchanged, and the pattern is recomputed beside it;
- forward pre-hooks and hooks (:mod:`shenjing.hooks`) that keep the stack of running
  modules, so each call is attributed to the innermost module running at that moment,
  and remember each module's first tensor input (the token states entering attention);
- a wrapper of ``forward``, set on the instance for the duration, around each of torch's
  own ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` and
  ``nn.TransformerEncoder``. These modules choose a fused fast path only when no tensor
  argument "has a torch function" (true for every tensor while a mode is active) and, for
  the encoder layer, when none of its modules carries a hook. So no hook goes inside an
  encoder layer, and the mode is popped while these modules run: they take the same path
  as without the capture, and their outputs stay bit-identical.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from shenjing.capture.attention.multihead import encoder_layer_call, multihead_call
from shenjing.capture.attention.sdpa import (
    Workspace,
    bind_sdpa,
    compute_dtype,
    magnitude,
    max_error,
    product_error,
    sdpa_check,
    sdpa_functions,
)
from shenjing.capture.attention.softmax import (
    is_candidate,
    operands,
    product,
    product_functions,
    softmax_functions,
)
from shenjing.capture.batches import n_of
from shenjing.capture.core import forward_or_explain
from shenjing.errors import NotApplicableError, ShenjingError, UsageError
from shenjing.hooks import forward_hooks, forward_pre_hooks


@dataclass(frozen=True)
class Seen:
    """One attention computation: call ``call`` (from 0, in this forward) of module
    ``module``; ``pattern`` ``(batch, heads, queries, keys)``; ``tokens`` the states
    entering it ``(batch, tokens, dim)`` or None; the check's ``error`` and ``scale``;
    ``dtype`` the dtype the model computed it in. ``pattern`` may live in a reused
    buffer: it is valid during the sink's call only (copy what is kept)."""

    module: str
    call: int
    kind: str
    module_type: str
    pattern: torch.Tensor
    tokens: torch.Tensor | None
    error: float
    scale: float
    dtype: torch.dtype


Sink = Callable[[Seen], None]
Wants = Callable[[str, int], bool]


def _everything(_module: str, _call: int) -> bool:
    return True


class _Frame:
    """A running module, the first tensor it was called with, and whether entering it
    switched the mode on (a focused observer's)."""

    __slots__ = ("module", "name", "pushed", "tokens")

    def __init__(self, name: str, module: nn.Module, tokens: torch.Tensor | None,
                 pushed: bool = False) -> None:
        self.name, self.module, self.tokens, self.pushed = name, module, tokens, pushed


class _Mode(TorchFunctionMode):
    """Hands the functions in ``handlers`` to their handler; every other call goes on
    unchanged. Inside a handler the mode is off (torch pops it), so the handler's own
    computations are not seen."""

    def __init__(self, handlers: dict[Any, Callable[..., Any]]) -> None:
        super().__init__()
        self.handlers = handlers

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        handler = self.handlers.get(func)
        if handler is None:
            return func(*args, **(kwargs or {}))
        return handler(func, args, kwargs or {})


@contextlib.contextmanager
def _recomputing(module: str, module_type: str) -> Iterator[None]:
    """The block recomputes one attention, without gradients; an error in it (a layout the
    capture does not understand) names the layer, and is not mistaken for the model's."""
    try:
        with torch.no_grad():
            yield
    except ShenjingError:
        raise
    except Exception as exc:
        raise NotApplicableError(
            f"the attention of {module or 'the model'!r} ({module_type}) could not be "
            f"recomputed: {type(exc).__name__}: {exc}") from exc


def _with_originals(functions: set[Any]) -> set[Any]:
    """``functions`` and, for any that another tool wrapped (``functools.wraps`` leaves
    ``__wrapped__``), the functions they wrap: torch's own Python functions hand
    themselves, not the wrapper, to a function mode."""
    found = set(functions)
    for func in functions:
        while hasattr(func, "__wrapped__"):
            func = func.__wrapped__
            found.add(func)
    return found


def _first_tensor(args: tuple[Any, ...]) -> torch.Tensor | None:
    return next((a for a in args if isinstance(a, torch.Tensor)), None)


def per_sample(pattern: torch.Tensor, batch: int, module: str) -> torch.Tensor:
    """A pattern ``(..., queries, keys)`` as ``(batch, heads, queries, keys)``: leading
    axes after the batch are heads; a 3-D ``(batch·heads, q, k)`` is split batch-major."""
    n_q, n_k = pattern.shape[-2], pattern.shape[-1]
    if pattern.dim() >= 3 and pattern.shape[0] == batch:
        return pattern.reshape(batch, -1, n_q, n_k)
    if pattern.dim() == 3 and batch and pattern.shape[0] % batch == 0:
        return pattern.reshape(batch, pattern.shape[0] // batch, n_q, n_k)
    if pattern.dim() == 2 and batch == 1:
        return pattern.reshape(1, 1, n_q, n_k)
    raise UsageError(f"the attention of {module or 'the model'!r} has shape "
                     f"{tuple(pattern.shape)}, with no axis for the {batch} samples of the "
                     "batch; the capture needs (batch, [heads,] queries, keys)")


def token_states(tokens: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """A module's input as token states ``(batch, tokens, dim)``, or None if it is not."""
    if (tokens is None or tokens.is_nested or tokens.dim() != 3
            or tokens.shape[0] != batch or not tokens.is_floating_point()):
        return None
    return tokens


@contextlib.contextmanager
def _forward_replaced(module: nn.Module, forward: Callable[..., Any]) -> Iterator[None]:
    """Set ``module.forward`` on the instance for the block; put back what was there."""
    state = vars(module)
    had, old = "forward" in state, state.get("forward")
    state["forward"] = forward  # an instance attribute: what nn.Module.__call__ runs
    try:
        yield
    finally:
        if had:
            state["forward"] = old
        else:
            state.pop("forward", None)


class Observer:
    """Sees the attention computations of ``model``'s forward passes (see module doc).

    ``sink`` receives one :class:`Seen` per computation that ``wants(module, call)``
    accepts (the others are counted, not recomputed). Use as::

        with Observer(model, sink).observing() as obs:
            obs.forward(x)

    With ``focus`` (the attention modules a first forward found), only those modules get
    hooks and the mode is on only while one of them runs: the rest of the model runs
    without any Python in between. Each call is attributed the same way, since the
    innermost module running at an attention call is one of them.
    """

    def __init__(self, model: nn.Module, sink: Sink | None = None,
                 wants: Wants | None = None, focus: Iterable[str] | None = None) -> None:
        self.model = model
        self.focus = None if focus is None else set(focus)
        self.sink: Sink = sink if sink is not None else (lambda _seen: None)
        self.wants: Wants = wants if wants is not None else _everything
        handlers: dict[Any, Callable[..., Any]] = dict.fromkeys(
            _with_originals(sdpa_functions()), self._on_sdpa)
        handlers.update(dict.fromkeys(_with_originals(softmax_functions()), self._on_softmax))
        handlers.update(dict.fromkeys(_with_originals(product_functions()), self._on_product))
        self.mode = _Mode(handlers)
        self.batch = 0
        self._stack: list[_Frame] = []
        self._calls: dict[str, int] = {}
        self._softmax: dict[int, torch.Tensor] = {}
        self._lengths: list[int] = []
        self.workspace = Workspace()

    # ---- the instruments -------------------------------------------------------------
    @contextlib.contextmanager
    def observing(self) -> Iterator[Observer]:
        """Place the hooks and wrappers for the block; remove them all when it exits."""
        hooked, wrapped = _placement(self.model)
        if self.focus is not None:
            hooked = [name for name in hooked if name in self.focus]
        with contextlib.ExitStack() as stack:
            stack.enter_context(forward_pre_hooks(
                self.model, {name: self._enter(name) for name in hooked}))
            stack.enter_context(forward_hooks(self.model, dict.fromkeys(hooked, self._leave)))
            for name, module in wrapped:
                stack.enter_context(_forward_replaced(module, self._wrapper(name, module)))
            try:
                yield self
            finally:
                self._reset()
                self.workspace.clear()

    def forward(self, x: Any) -> Any:
        """Run one batch through the model with the mode on; return the model's output."""
        self._reset()
        self.batch = n_of(x)
        try:
            if self.focus is not None:  # the focus modules' hooks switch the mode
                return forward_or_explain(self.model, x)
            with self.mode:
                return forward_or_explain(self.model, x)
        finally:
            # a forward that raised inside a focus module left the mode on
            while torch.overrides._get_current_function_mode() is self.mode:
                torch.overrides._pop_mode()
            self._reset()

    def _reset(self) -> None:
        self._stack.clear()
        self._calls.clear()
        self._softmax.clear()
        self._lengths.clear()

    def _enter(self, name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def enter(module: nn.Module, args: tuple[Any, ...]) -> None:
            push = self.focus is not None and \
                torch.overrides._get_current_function_mode() is not self.mode
            self._stack.append(_Frame(name, module, _first_tensor(args), push))
            if push:
                torch.overrides._push_mode(self.mode)
        return enter

    def _leave(self, module: nn.Module, _args: tuple[Any, ...], _out: Any) -> None:
        # pop down to this module's frame: frames above it belong to calls that raised
        # and were caught inside it
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i].module is module:
                pushed = sum(frame.pushed for frame in self._stack[i:])
                del self._stack[i:]
                for _ in range(pushed):
                    if torch.overrides._get_current_function_mode() is self.mode:
                        torch.overrides._pop_mode()
                return

    def _top(self) -> _Frame:
        return self._stack[-1] if self._stack else _Frame("", self.model, None)

    def _count(self, name: str) -> int:
        call = self._calls.get(name, 0)
        self._calls[name] = call + 1
        return call

    @contextlib.contextmanager
    def _suspended(self) -> Iterator[None]:
        """The block runs with this observer's mode off (if it is on, and on top)."""
        if torch.overrides._get_current_function_mode() is not self.mode:
            yield
            return
        torch.overrides._pop_mode()
        try:
            yield
        finally:
            torch.overrides._push_mode(self.mode)

    def _emit(self, module: str, call: int, kind: str, module_type: str,
              pattern: torch.Tensor, tokens: torch.Tensor | None, error: float,
              scale: float, dtype: torch.dtype) -> None:
        self.sink(Seen(module, call, kind, module_type,
                       per_sample(pattern.detach(), self.batch, module),
                       token_states(tokens, self.batch), error, scale, dtype))

    # ---- F.scaled_dot_product_attention ----------------------------------------------
    def _on_sdpa(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = func(*args, **kwargs)
        frame = self._top()
        call = self._count(frame.name)
        if self.wants(frame.name, call):
            module_type = type(frame.module).__name__
            with _recomputing(frame.name, module_type):
                bound = bind_sdpa(args, kwargs)
                pattern, error, scale = sdpa_check(bound, out, self.workspace)
                self._emit(frame.name, call, "sdpa", module_type, pattern, frame.tokens, error,
                           scale, bound["query"].dtype)
        return out

    # ---- softmax → matmul ---------------------------------------------------------------
    def _on_softmax(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = func(*args, **kwargs)
        if is_candidate(out, args, kwargs):
            self._softmax[id(out)] = out
        return out

    def _on_product(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = func(*args, **kwargs)
        if not self._softmax:
            return out
        left, right, equation = operands(func, args)
        if not isinstance(left, torch.Tensor) or self._softmax.get(id(left)) is not left:
            return out
        del self._softmax[id(left)]
        frame = self._top()
        call = self._count(frame.name)
        if self.wants(frame.name, call) and isinstance(right, torch.Tensor):
            module_type = type(frame.module).__name__
            with _recomputing(frame.name, module_type):
                dtype = compute_dtype(left)
                if equation is None:
                    error = product_error(left.to(dtype), right.to(dtype), out,
                                          self.workspace)
                else:
                    error = max_error(product(left, right, equation), out)
                self._emit(frame.name, call, "softmax", module_type, left.to(dtype),
                           frame.tokens, error, magnitude(right), right.dtype)
        return out

    # ---- torch's own attention modules --------------------------------------------------
    def _wrapper(self, name: str, module: nn.Module) -> Callable[..., Any]:
        original = module.forward
        signature = inspect.signature(original)
        if isinstance(module, nn.TransformerEncoder):
            return self._encoder_forward(module, original, signature)
        if isinstance(module, nn.TransformerEncoderLayer):
            return self._encoder_layer_forward(name, module, original, signature)
        if isinstance(module, nn.MultiheadAttention):
            return self._multihead_forward(name, module, original, signature)
        raise AssertionError(f"no wrapper for {type(module).__name__}")

    def _multihead_forward(self, name: str, mha: nn.MultiheadAttention,
                           original: Callable[..., Any],
                           signature: inspect.Signature) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            with self._suspended():
                out = original(*args, **kwargs)
                call = self._count(name)
                if self.wants(name, call):
                    with _recomputing(name, type(mha).__name__):
                        res, error = multihead_call(mha, signature, args, kwargs, out)
                        self._emit(name, call, "multihead", type(mha).__name__, res.pattern,
                                   res.tokens, error, res.scale, _dtype_of(args))
            return out
        return forward

    def _encoder_layer_forward(self, name: str, layer: nn.TransformerEncoderLayer,
                               original: Callable[..., Any],
                               signature: inspect.Signature) -> Callable[..., Any]:
        attn_name = f"{name}.self_attn" if name else "self_attn"

        def forward(*args: Any, **kwargs: Any) -> Any:
            with self._suspended():
                out = original(*args, **kwargs)
                call = self._count(attn_name)
                if self.wants(attn_name, call):
                    length = self._lengths[-1] if self._lengths else None
                    module_type = type(layer.self_attn).__name__
                    with _recomputing(attn_name, module_type):
                        res = encoder_layer_call(layer, signature, args, kwargs, out, length)
                        self._emit(attn_name, call, "multihead", module_type,
                                   res.attention.pattern, res.attention.tokens, res.error,
                                   res.scale, _dtype_of(args))
            return out
        return forward

    def _encoder_forward(self, encoder: nn.TransformerEncoder, original: Callable[..., Any],
                         signature: inspect.Signature) -> Callable[..., Any]:
        first = next(iter(encoder.layers), None)
        batch_first = bool(getattr(getattr(first, "self_attn", None), "batch_first", False))

        def forward(*args: Any, **kwargs: Any) -> Any:
            src = signature.bind(*args, **kwargs).arguments.get("src")
            length = 0
            if isinstance(src, torch.Tensor) and not src.is_nested and src.dim() == 3:
                length = int(src.shape[1] if batch_first else src.shape[0])
            self._lengths.append(length)
            try:
                with self._suspended():
                    return original(*args, **kwargs)
            finally:
                if self._lengths:
                    self._lengths.pop()
        return forward


def _dtype_of(args: tuple[Any, ...]) -> torch.dtype:
    first = _first_tensor(args)
    return first.dtype if first is not None else torch.float32


def _placement(model: nn.Module) -> tuple[list[str], list[tuple[str, nn.Module]]]:
    """Which modules get the stack hooks, and which of torch's attention modules get a
    wrapper instead (nothing at all goes inside a ``TransformerEncoderLayer``, whose fast
    path is refused when any of its modules has a hook)."""
    hooked: list[str] = []
    wrapped: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def place(name: str, module: nn.Module) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        if isinstance(module, (nn.TransformerEncoderLayer, nn.MultiheadAttention)):
            wrapped.append((name, module))
            return
        if isinstance(module, nn.TransformerEncoder):
            wrapped.append((name, module))
        else:
            hooked.append(name)
        for child, sub in module.named_children():
            place(f"{name}.{child}" if name else child, sub)

    place("", model)
    return hooked, wrapped
