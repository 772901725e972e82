"""Range checks for options, run before a command (or a library call) writes anything.

One place per kind of value, used by the CLI and by the library functions behind it (so a
notebook call refuses a bad value with the same line).

Each check returns the value (converted where the option arrives as text) or raises a
:class:`~shenjing.errors.UsageError` whose one line names the option, the value given, what
is expected and an example, so ``shenjing`` exits 2 with nothing created:

>>> positive_int("--epochs", 5)
5
>>> positive_int("--epochs", 0)
Traceback (most recent call last):
...
shenjing.errors.UsageError: --epochs 0: expected a whole number ≥ 1, e.g. --epochs 1
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from shenjing.errors import UnknownNameError, UsageError, did_you_mean

SEED_MAX = 2**32 - 1  # numpy's and torch's seeds both take any value in 0..2**32 - 1


def _fail(name: str, value: object, expected: str, example: object) -> UsageError:
    return UsageError(f"{name} {value}: expected {expected}, e.g. {name} {example}")


def bounded_int(name: str, value: int | str, *, low: int, high: int | None = None,
                example: int | str | None = None, why: str = "") -> int:
    """``value`` as an int in ``low..high`` (``high`` None: no upper bound); ``why`` says
    what needs the bound ("a plane needs a point on each side of θ*").

    Text is accepted (``'64'`` from ``--hidden 64,32``); ``'abc'``, ``'1.5'`` and ``True``
    are refused like out-of-range numbers.
    """
    shown = example if example is not None else low
    expected = (f"a whole number ≥ {low}" if high is None
                else f"a whole number from {low} to {high}") + (f" ({why})" if why else "")
    if isinstance(value, bool):
        raise _fail(name, value, expected, shown)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            raise _fail(name, repr(value), expected, shown) from None
    elif isinstance(value, int):
        number = value
    else:
        raise _fail(name, repr(value), expected, shown)
    if number < low or (high is not None and number > high):
        raise _fail(name, number, expected, shown)
    return number


def positive_int(name: str, value: int | str, *, example: int | str | None = None) -> int:
    """``value`` as an int ≥ 1 (epochs, batch sizes, widths, sample counts)."""
    return bounded_int(name, value, low=1, example=example)


def optional_int(name: str, value: int | str | None, *, low: int = 1, why: str = ""
                 ) -> int | None:
    """None (meaning "all" or "the default"), or a whole number ≥ ``low``."""
    return None if value is None else bounded_int(name, value, low=low, why=why)


def random_seed(name: str, value: int | str) -> int:
    """A random seed: a whole number in 0..2**32 − 1 (negative seeds are refused, not
    mapped, so the seed a run records is the one the user typed)."""
    return bounded_int(name, value, low=0, high=SEED_MAX, example=0)


def finite_float(name: str, value: float | str, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False, high_open: bool = False,
                 example: float | str | None = None) -> float:
    """``value`` as a finite float within the bounds (``low_open``: ``value > low``;
    otherwise ``value ≥ low``; the same for ``high``). NaN and ±inf are always refused."""
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '≥'} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '≤'} {high:g}")
    expected = " ".join(["a finite number", " and ".join(bounds)]).strip()
    shown = example if example is not None else _example_between(low, high)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(name, repr(value), expected, shown) from None
    if not math.isfinite(number):
        raise _fail(name, value, expected, shown)
    if low is not None and (number <= low if low_open else number < low):
        raise _fail(name, value, expected, shown)
    if high is not None and (number >= high if high_open else number > high):
        raise _fail(name, value, expected, shown)
    return number


def probability(name: str, value: float | str) -> float:
    """A probability or fraction: a finite number in [0, 1]."""
    return finite_float(name, value, low=0.0, high=1.0, example=0.5)


def choice(name: str, value: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``; otherwise an :class:`UnknownNameError` (a
    UsageError) listing them all, with the closest as a suggestion."""
    options = list(choices)
    if value in options:
        return value
    raise UnknownNameError(f"{name} {value!r}: expected one of {', '.join(options)}."
                           f"{did_you_mean(value, options)} E.g. {name} {options[0]}")


def int_list(name: str, text: str, *, low: int = 1, example: str = "64,32") -> list[int]:
    """``'64,32'`` → ``[64, 32]``, each item a whole number ≥ ``low``; empty text refused."""
    items = [part.strip() for part in text.split(",")]
    if not any(items):
        raise UsageError(f"{name} {text!r}: expected whole numbers separated by commas, "
                         f"e.g. {name} {example}")
    out = []
    for item in items:
        try:
            out.append(bounded_int(name, item, low=low))
        except UsageError:
            raise UsageError(f"{name} {text!r}: {item!r} is not a whole number ≥ {low}; "
                             f"give whole numbers separated by commas, e.g. {name} "
                             f"{example}") from None
    return out


def unit_list(name: str, text: str, *, example: str = "0:8") -> list[int]:
    """Unit (channel) numbers: ``'0:8'`` → 0 … 7 (START:STOP, stop excluded as in Python
    slices, START 0 when left out), ``'3'``, ``'0,2,5'`` or ``'0:4,9'``; each number once, in
    the order given. Anything else is one line naming the option.

    >>> unit_list("--channels", "0:3,7"), unit_list("--channels", ":2")
    ([0, 1, 2, 7], [0, 1])
    """
    def bad() -> UsageError:
        return UsageError(f"{name} {text!r} is not a list of unit numbers; give START:STOP "
                          f"(stop excluded) or numbers separated by commas, e.g. {name} "
                          f"{example}")

    picked: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        bounds = [b.strip() for b in part.split(":")]
        start_ok = bounds[0].isdigit() or (len(bounds) == 2 and not bounds[0])
        if len(bounds) > 2 or not bounds[-1].isdigit() or not start_ok:
            raise bad()
        if len(bounds) == 1:
            picked.append(int(bounds[0]))
            continue
        start, stop = int(bounds[0] or 0), int(bounds[1])
        if stop <= start:
            raise UsageError(f"{name} {part!r}: the range is empty (stop must be larger "
                             f"than start); e.g. {name} {example}")
        picked += range(start, stop)
    if not picked:
        raise bad()
    return list(dict.fromkeys(picked))


def value_range(name: str, value: object, *, example: str = "-1:1") -> tuple[float, float]:
    """``value`` (two numbers, or ``'MIN:MAX'`` text) as a finite ``(min, max)`` with
    min < max, else one line naming the option.

    >>> value_range("--range", "-0.5:1.5")
    (-0.5, 1.5)
    """
    try:
        parts = value.split(":") if isinstance(value, str) else list(value)  # type: ignore
        lo, hi = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise UsageError(f"{name} {value!r} must look like MIN:MAX, e.g. {name} {example}"
                         ) from None
    shown = repr(value) if isinstance(value, str) else f"{lo:g}:{hi:g}"  # as the user typed
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise UsageError(f"{name} {shown}: MIN and MAX must be finite numbers, e.g. "
                         f"{name} {example}")
    if not lo < hi:
        raise UsageError(f"{name} {shown} has min ≥ max; use MIN:MAX with MIN < MAX, "
                         f"e.g. {name} {example}")
    return lo, hi


def device(name: str, value: str) -> str:
    """``value`` if it names a device this machine has (``auto``, ``cpu``, ``cuda:1`` …);
    otherwise the reason, in one line naming the option. torch is imported only here."""
    from shenjing._device import resolve_device

    try:
        resolve_device(value)
    except UsageError as exc:
        raise UsageError(f"{name} {value!r}: {exc}") from None
    return value


def _example_between(low: float | None, high: float | None) -> float:
    if low is not None and high is not None:
        return (low + high) / 2
    if low is not None:
        return low + 1 if low != 0 else 0.01
    if high is not None:
        return high - 1
    return 0.0


__all__ = ["SEED_MAX", "bounded_int", "choice", "device", "finite_float", "int_list",
           "optional_int", "positive_int", "probability", "random_seed", "value_range"]
