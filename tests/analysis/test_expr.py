"""Safe user functions: parsed with ast, walked by an interpreter, never eval'd."""

from __future__ import annotations

import builtins
import time

import numpy as np
import pytest

from shenjing.analysis.expr import SEED_EXPRESSION, check_finite, parse_function
from shenjing.data.synthetic import curve_function
from shenjing.errors import UsageError

X = np.linspace(-7, 7, 301)


def test_default_is_seed_function_exactly():
    f = parse_function(None)
    assert f.source == SEED_EXPRESSION and f.kind == "expression"
    np.testing.assert_allclose(f(X), curve_function(X), rtol=1e-15, atol=1e-12)


@pytest.mark.parametrize(("text", "expected"), [
    ("sin(2*x) + 0.1*x**3", lambda x: np.sin(2 * x) + 0.1 * x**3),
    ("np.exp(-x**2) * numpy.cos(pi*x)", lambda x: np.exp(-x**2) * np.cos(np.pi * x)),
    ("where(x > 0, x, 0.5*x)", lambda x: np.where(x > 0, x, 0.5 * x)),
    ("x if x > 1 else -x", lambda x: np.where(x > 1, x, -x)),
    ("abs(x) // 2 % 3", lambda x: np.abs(x) // 2 % 3),
    ("3", lambda x: np.full_like(x, 3.0)),
    ("relu(x) - sigmoid(x)", lambda x: np.maximum(x, 0) - 1 / (1 + np.exp(-x))),
    ("(x > -1) & (x < 1) if 0 else (-1 < x < 1) * 1.0", lambda x: ((x > -1) & (x < 1)) * 1.0),
])
def test_expressions_match_numpy(text, expected):
    np.testing.assert_allclose(parse_function(text)(X), expected(X), rtol=1e-14, atol=0)


@pytest.mark.parametrize(("text", "match"), [
    ("x.__class__", "attribute '__class__'.*dunder"),
    ("().__class__.__bases__", "attribute '__bases__'"),
    ("__import__('os').system('true')", "attribute access .* is not allowed"),
    ("__import__('os')", "calls '__import__', which is not allowed"),
    ("import os", "not a valid expression"),
    ("sin(x", "not a valid expression"),
    ("open('/etc/passwd')", "calls 'open', which is not allowed"),
    ("np.linalg.inv(x)", "attribute access 'np.linalg.inv' is not allowed"),
    ("x.real", "attribute access 'x.real' is not allowed"),
    ("lambda: 1", "uses Lambda"),
    ("[x for x in ()]", "uses ListComp"),
    ("x[0]", "uses Subscript"),
    ("'text'", "only numbers"),
    ("sinn(x)", "Did you mean 'sin'"),
    ("y + 1", "unknown name 'y'"),
    ("_secret", "starting with '_'"),
    ("sin(x, x)", r"sin\(…\) takes 1 argument\(s\), got 2"),
    ("exp(x, out=x)", "keyword arguments are not allowed"),
])
def test_unsafe_or_bad_expressions_are_refused(text, match):
    with pytest.raises(UsageError, match=match):
        parse_function(text)(X)


def test_no_eval_exec_or_code_compilation(monkeypatch):
    import ast

    real_compile = builtins.compile

    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec must not be called")

    def only_ast(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:  # ast.parse is fine; code objects are not
            raise AssertionError("compile to code must not be called")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(builtins, "compile", only_ast)
    assert parse_function("sin(x) + 1")(np.array([0.0]))[0] == 1.0


def test_huge_integer_power_overflows_instead_of_hanging():
    start = time.perf_counter()
    y = parse_function("9**9**9**9")(np.array([1.0]))
    assert np.isinf(y).all()
    assert time.perf_counter() - start < 5  # a bigint power would never finish


def test_function_failing_on_range_is_reported():
    f = parse_function("log(x)")
    with pytest.raises(UsageError, match=r"not finite on the training range \(\d+ of 301"):
        check_finite(f, X)


def test_module_reference():
    f = parse_function("shenjing.data.synthetic:curve_function")
    assert f.kind == "module"
    np.testing.assert_allclose(f(X), curve_function(X))
    np.testing.assert_allclose(parse_function("numpy:tanh")(X), np.tanh(X))


def test_module_reference_from_file(tmp_path):
    path = tmp_path / "myfun.py"
    path.write_text("import numpy as np\n\ndef f(x):\n    return x**2\n\ndef bad(x):\n"
                    "    return x[:3]\n\ndef boom(x):\n    raise RuntimeError('nope')\n")
    np.testing.assert_allclose(parse_function(f"{path}:f")(X), X**2)
    with pytest.raises(UsageError, match=r"returned shape \(3,\) for x of shape \(301,\)"):
        parse_function(f"{path}:bad")(X)
    with pytest.raises(UsageError, match="failed to evaluate: RuntimeError: nope"):
        parse_function(f"{path}:boom")(X)


@pytest.mark.parametrize(("text", "match"), [
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ("numpy:sinn",
     "has no attribute 'sinn' \\(from --function 'numpy:sinn'\\). Did you mean 'sin'"),
    ("numpy:_private", "private attribute"),
    ("numpy:pi", "names a float, not a function of x"),
    ("missing/file.py:f", "function file missing/file.py does not exist"),
])
def test_bad_module_references(text, match):
    with pytest.raises(UsageError, match=match):
        parse_function(text)


@pytest.mark.parametrize(("text", "match"), [
    # Python's own parser: MemoryError (deep unary), RecursionError (a long chain)
    ("-" * 5000 + "x", r"nests too deeply to be parsed \(more than 500 levels"),
    ("+".join(["x"] * 3000), r"nests too deeply to be parsed"),
    # parsed, but deeper than the tree-walking interpreter may recurse
    ("+".join(["x"] * 600), r"nests 600 levels deep; at most 500 are allowed"),
    ("x+" * 6000 + "x", r"is longer than the 10,000 characters an expression may have"),
])
def test_deeply_nested_or_huge_expressions_are_one_usage_error(text, match):
    """Used to escape as a bare MemoryError / RecursionError (a traceback in the CLI)."""
    with pytest.raises(UsageError, match=match) as info:
        parse_function(text)
    message = str(info.value)
    assert message.startswith("--function '") and len(message) < 400  # the text is cut short
    assert "characters)" in message


def test_nesting_up_to_the_limit_still_evaluates():
    f = parse_function("+".join(["x"] * 450))
    np.testing.assert_allclose(f(X), 450 * X, rtol=1e-12)
    g = parse_function("-" * 490 + "x")  # an even number of minus signs
    np.testing.assert_array_equal(g(X), X)
