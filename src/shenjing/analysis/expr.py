"""Safe user functions of one variable: ``"sin(2*x) + 0.1*x**3"`` or ``"pkg.mod:func"``.

A function *expression* is parsed with :mod:`ast` and evaluated by a small interpreter that
walks the parsed tree: only numbers, the name ``x``, the constants ``pi``/``e``/``inf``,
arithmetic, comparisons, conditional expressions and a whitelist of NumPy functions
(``sin``, ``exp``, ``where`` …, also written ``np.sin`` / ``numpy.sin``) are allowed. There
is no ``eval`` of text, no builtins, no imports, no attribute access other than
``np.<whitelisted name>``, and no name with a leading underscore, so an expression cannot
reach ``__class__``/``__globals__`` or the file system.

A *module reference* ``pkg.module:function`` (or ``path/to/file.py:function``) imports the
user's own code, which they trust as they trust any module they run; the callable must map
a float64 array of x to an array of y of the same length.

>>> f = parse_function("exp(-0.1*x)*sin(2*x) + 0.1*x**3 - 3*x**2 + 2*x")
>>> round(float(f(np.array([1.0]))[0]), 6)
-0.077234
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shenjing.errors import UsageError

#: the seed's function (seed 001), as an expression the parser accepts
SEED_EXPRESSION = "exp(-0.1*x)*sin(2*x) + 0.1*x**3 - 3*x**2 + 2*x"

#: NumPy functions an expression may call (elementwise or small reductions)
FUNCTIONS: dict[str, Callable[..., Any]] = {
    name: getattr(np, name) for name in (
        "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh",
        "arcsinh", "arccosh", "arctanh", "exp", "expm1", "exp2", "log", "log1p", "log2",
        "log10", "sqrt", "cbrt", "square", "abs", "absolute", "sign", "floor", "ceil", "round",
        "maximum", "minimum", "where", "clip", "heaviside", "sinc", "hypot", "power", "mod",
        "fmod", "deg2rad", "rad2deg",
    )
}
FUNCTIONS["min"] = np.minimum
FUNCTIONS["max"] = np.maximum
FUNCTIONS["relu"] = lambda a: np.maximum(a, 0.0)
FUNCTIONS["sigmoid"] = lambda a: 1.0 / (1.0 + np.exp(-a))

#: how deeply an expression may nest (``-(-(-x))`` is 4 deep); the interpreter walks the
#: tree recursively, so a deeper one is refused before it is evaluated
MAX_DEPTH = 500
#: the longest expression text accepted
MAX_LENGTH = 10_000

CONSTANTS: dict[str, float] = {"pi": float(np.pi), "e": float(np.e), "inf": float(np.inf)}
_MODULE_ALIASES = ("np", "numpy", "math")

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos,
                                            ast.Not: np.logical_not, ast.Invert: np.logical_not}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}


@dataclass(frozen=True)
class TargetFunction:
    """A function of one variable to fit: ``f(x)`` maps an ``(n,)`` array to an ``(n,)`` array.

    ``source`` is what the user wrote (the expression, or ``module:function``), ``kind`` is
    ``"expression"`` or ``"module"``.
    """

    source: str
    kind: str
    _fn: Callable[[np.ndarray], Any]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        try:
            with np.errstate(all="ignore"):
                y = self._fn(x)
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"{_q(self.source)} failed to evaluate: "
                             f"{type(exc).__name__}: {exc}") from None
        try:
            y = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            raise UsageError(f"{_q(self.source)} returned {type(y).__name__}, "
                             "not numbers; it must return one number per x") from None
        if y.ndim == 0:
            y = np.full(x.shape, float(y))
        if y.shape != x.shape:
            raise UsageError(f"{_q(self.source)} returned shape {y.shape} for x of "
                             f"shape {x.shape}; it must return one value per x")
        return y

    def __repr__(self) -> str:
        return f"TargetFunction({self.source!r})"


def parse_function(text: str | None) -> TargetFunction:
    """A :class:`TargetFunction` from an expression in ``x`` or a ``module:function`` reference.

    ``None`` or ``"seed"`` gives seed 001's function. Raises :class:`UsageError` naming the
    offending part for syntax errors, unknown or unsafe names, and attribute access.
    """
    if text is None or text.strip() in ("", "seed", "curve"):
        text = SEED_EXPRESSION
    text = text.strip()
    if _looks_like_reference(text):
        return _from_reference(text)
    tree = _parse(text)
    _check(tree.body, text)
    body = tree.body

    def fn(x: np.ndarray) -> Any:
        return _evaluate(body, x, text)

    return TargetFunction(source=text, kind="expression", _fn=fn)


def check_finite(f: TargetFunction, x: np.ndarray, *, where: str = "the training range") -> None:
    """Raise :class:`UsageError` if ``f`` is NaN or infinite anywhere on ``x``."""
    y = f(x)
    bad = ~np.isfinite(y)
    if bad.any():
        first = float(np.asarray(x, dtype=np.float64)[bad][0])
        raise UsageError(f"{_q(f.source)} is not finite on {where} ({int(bad.sum())} of "
                         f"{y.size} points, first at x={first:.4g}); choose another range "
                         "or function")


# ---- parsing ---------------------------------------------------------------------------
def _looks_like_reference(text: str) -> bool:
    module, sep, attr = text.rpartition(":")
    if not (sep and module and attr.isidentifier()):
        return False
    return module.endswith(".py") or all(part.isidentifier() for part in module.split("."))


def _from_reference(text: str) -> TargetFunction:
    from shenjing._imports import import_reference

    attr = text.rpartition(":")[2]
    if attr.startswith("_"):
        raise UsageError(f"{_q(text)}: the reference names a private attribute {attr!r}; "
                         "name a public function")
    fn = import_reference(text, kind="function", option="--function")
    if not callable(fn):
        raise UsageError(f"{_q(text)} names a {type(fn).__name__}, not a function of x; "
                         "name a function that maps an array of x to an array of y")
    return TargetFunction(source=text, kind="module", _fn=fn)


def _q(text: str) -> str:
    """``--function 'text'`` for messages, a long expression cut to its start."""
    shown = text if len(text) <= 80 else f"{text[:60]}… ({len(text):,} characters)"
    return f"--function {shown!r}"


def _parse(text: str) -> ast.Expression:
    """The parsed expression; too long, too deep or invalid is refused in one line (Python's
    parser raises MemoryError or RecursionError for deeply nested text)."""
    simplify = "simplify it, or write it as a Python function and pass file.py:name"
    if len(text) > MAX_LENGTH:
        raise UsageError(f"{_q(text)} is longer than the {MAX_LENGTH:,} characters an "
                         f"expression may have; {simplify}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise UsageError(f"{_q(text)} is not a valid expression ({exc.msg} at column "
                         f"{exc.offset}); write it in x, e.g. 'sin(2*x) + 0.1*x**3'") from None
    except (MemoryError, RecursionError):
        raise UsageError(f"{_q(text)} nests too deeply to be parsed (more than {MAX_DEPTH} "
                         f"levels are not allowed); {simplify}") from None
    depth = _depth(tree.body)
    if depth > MAX_DEPTH:
        raise UsageError(f"{_q(text)} nests {depth} levels deep; at most {MAX_DEPTH} are "
                         f"allowed: {simplify}")
    return tree


def _depth(node: ast.AST) -> int:
    """How deeply ``node``'s tree nests, counted without recursion (it may be very deep)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in ast.iter_child_nodes(current)
                     if not isinstance(child, (ast.expr_context, ast.operator, ast.unaryop,
                                               ast.cmpop, ast.boolop)))
    return deepest


_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.Call,
                  ast.Name, ast.Constant, ast.Attribute, ast.BoolOp, ast.Load,
                  *_BINARY, *_UNARY, *_COMPARE, ast.And, ast.Or)


def _check(node: ast.AST, text: str) -> None:
    """Refuse everything outside the whitelist, naming it (before anything is evaluated)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute):
            _attribute_name(sub, text)
        elif isinstance(sub, ast.Name):
            _check_name(sub.id, text)
        elif isinstance(sub, ast.Constant):
            if isinstance(sub.value, bool) or not isinstance(sub.value, (int, float)):
                raise UsageError(f"{_q(text)}: only numbers may appear as constants, "
                                 f"not {sub.value!r}")
        elif isinstance(sub, ast.Call):
            if sub.keywords:
                raise UsageError(f"{_q(text)}: keyword arguments are not allowed "
                                 f"({sub.keywords[0].arg}=…); pass arguments by position")
            if not isinstance(sub.func, (ast.Name, ast.Attribute)):
                raise UsageError(f"{_q(text)}: only named functions may be called")
            name = sub.func.id if isinstance(sub.func, ast.Name) else _attribute_name(
                sub.func, text)
            if name not in FUNCTIONS:
                raise UsageError(f"{_q(text)} calls {name!r}, which is not allowed."
                                 f"{_suggest(name, FUNCTIONS)} Allowed: "
                                 f"{', '.join(sorted(FUNCTIONS))}")
        elif not isinstance(sub, _ALLOWED_NODES):
            raise UsageError(f"{_q(text)} uses {type(sub).__name__} "
                             f"({ast.unparse(sub) if isinstance(sub, ast.expr) else '…'}), which "
                             "is not allowed; use arithmetic, comparisons and NumPy functions of x")


def _check_name(name: str, text: str) -> None:
    if name.startswith("_"):
        raise UsageError(f"{_q(text)} uses the name {name!r}; names starting with '_' "
                         "are not allowed")
    if name not in FUNCTIONS and name not in CONSTANTS and name != "x" and (
            name not in _MODULE_ALIASES):
        raise UsageError(f"{_q(text)} uses the unknown name {name!r}."
                         f"{_suggest(name, [*FUNCTIONS, *CONSTANTS, 'x'])} The variable is x; "
                         "constants pi, e; functions like sin, exp, where")


def _attribute_name(node: ast.Attribute, text: str) -> str:
    """``np.sin`` → ``'sin'``; anything else (``x.__class__``, ``np.linalg.inv``) is refused."""
    if node.attr.startswith("_"):
        raise UsageError(f"{_q(text)} accesses the attribute {node.attr!r}; "
                         "attribute access to private or dunder names is not allowed; use "
                         "arithmetic and NumPy functions of x, e.g. 'sin(2*x) + 0.1*x**3'")
    if not (isinstance(node.value, ast.Name) and node.value.id in _MODULE_ALIASES):
        raise UsageError(f"{_q(text)}: attribute access "
                         f"{ast.unparse(node)!r} is not allowed; only np.<function> is")
    if node.attr not in FUNCTIONS and node.attr not in CONSTANTS:
        raise UsageError(f"{_q(text)} uses {ast.unparse(node)!r}, which is not allowed."
                         f"{_suggest(node.attr, FUNCTIONS)}")
    return node.attr


def _suggest(name: str, options: Any) -> str:
    from shenjing.errors import did_you_mean

    return did_you_mean(name, list(options))


def _arity(name: str) -> tuple[int, int]:
    """How many positional arguments ``name`` takes (ufuncs: exactly ``nin``, so no ``out``)."""
    special = {"where": (3, 3), "clip": (3, 3), "round": (1, 2)}
    if name in special:
        return special[name]
    fn = FUNCTIONS[name]
    n = int(getattr(fn, "nin", 1))
    return n, n


# ---- evaluation (a tree walk; never eval) --------------------------------------------
def _evaluate(node: ast.AST, x: np.ndarray, text: str) -> Any:
    if isinstance(node, ast.Constant):
        # floats, not Python ints: ``9**9**9**9`` must overflow to inf, not hang on a bigint
        return np.float64(node.value)  # type: ignore[arg-type]  # numbers only (_check)
    if isinstance(node, ast.Name):
        if node.id == "x":
            return x
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise UsageError(f"{_q(text)}: {node.id!r} is a function; call it, e.g. "
                         f"{node.id}(x)")
    if isinstance(node, ast.Attribute):
        if node.attr in CONSTANTS:
            return CONSTANTS[node.attr]
        raise UsageError(f"{_q(text)}: {ast.unparse(node)!r} is a function; call it")
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, x, text),
                                      _evaluate(node.right, x, text))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, x, text))
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, x, text)
        result: Any = True
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(comp, x, text)
            result = np.logical_and(result, _COMPARE[type(op)](left, right))
            left = right
        return result
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(v, x, text) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        out = values[0]
        for v in values[1:]:
            out = combine(out, v)
        return out
    if isinstance(node, ast.IfExp):
        return np.where(_evaluate(node.test, x, text), _evaluate(node.body, x, text),
                        _evaluate(node.orelse, x, text))
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr  # type: ignore[attr-defined]
        args = [_evaluate(a, x, text) for a in node.args]
        lo, hi = _arity(name)
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise UsageError(f"{_q(text)}: {name}(…) takes {want} argument(s), "
                             f"got {len(args)}")
        try:
            return FUNCTIONS[name](*args)
        except TypeError as exc:
            raise UsageError(f"{_q(text)}: {name}(…) got {len(args)} argument(s): "
                             f"{exc}") from None
    raise UsageError(f"{_q(text)}: cannot evaluate {type(node).__name__}")
