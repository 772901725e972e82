"""Up-front checks of the landscape and Hessian options: every value refused before any
model is built or any file written, with one message that names the option and the fix.

Why here: the ``landscape``/``hessian`` commands, the stages they call and ``inspect`` all
take these options; each calls the same ``validate_*`` function first, so ``--steps 1`` or
``--samples 0`` fails at once (usage error, nothing created) instead of after a run folder
or a partial file exists. Only what needs the run itself (epochs, layer names, whether an
engine path suits the model) is checked later, still before the first file is written.

``names`` maps a parameter to how the caller's user spells it, so the message names *their*
option: ``{"steps": "--plane-steps"}`` gives ``--plane-steps 1: expected a whole number ≥ 2
(…), e.g. --plane-steps 21``. Without it the Python parameter is named. The range checks
themselves are :mod:`shenjing._checks`', shared by every command. A grid too large for the
memory available now is refused here too (a :class:`~shenjing.errors.ResourceError`, exit 1;
see :mod:`.memory`).

>>> try:
...     validate_plane_options(steps=1, names={"steps": "--plane-steps"})
... except UsageError as exc:
...     print(str(exc).split(" (")[0])
--plane-steps 1: expected a whole number ≥ 2
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from shenjing._checks import bounded_int, choice, value_range
from shenjing._checks import device as check_device
from shenjing.analysis.landscape.config import BN_POLICIES, PATHS, PRECISIONS, validate_settings
from shenjing.analysis.landscape.directions import NORMS
from shenjing.analysis.landscape.memory import axis_length, check_grid
from shenjing.errors import UsageError

SPLITS: tuple[str, ...] = ("test", "train")


class _Names:
    """How the caller spells each parameter (its CLI flag, or the Python name)."""

    def __init__(self, names: Mapping[str, str] | None) -> None:
        self.names = dict(names or {})

    def __call__(self, param: str) -> str:
        return self.names.get(param, param)

    def example(self, param: str, value: Any) -> str:
        name = self(param)
        return f"{name} {value}" if name.startswith("-") else f"{name}={value!r}"


def _at_least(value: Any, param: str, minimum: int, names: _Names, example: Any,
              why: str = "") -> None:
    bounded_int(names(param), value, low=minimum, example=example, why=why)


def _optional_at_least(value: Any, param: str, minimum: int, names: _Names, example: Any,
                       why: str = "") -> None:
    if value is not None:
        _at_least(value, param, minimum, names, example, why)


def _range(value: Any, param: str, names: _Names, example: Any) -> None:
    value_range(names(param), value, example=str(example).strip("()").replace(", ", ":"))


def _grid_fits(steps: Any, range_: Any, anchors: tuple[float, ...], k: int, kind: str,
               names: _Names) -> None:
    """Refuse a grid too large for the memory available (after its values are checked)."""
    lo, hi = (float(v) for v in range_)
    side = axis_length(lo, hi, int(steps), anchors)
    check_grid((side,) * k, kind=kind, option=names("steps"))


def _choice(value: Any, param: str, choices: Sequence[str], names: _Names) -> None:
    choice(names(param), value, choices)


def _common(names: _Names, *, samples: Any, sample_seed: Any, split: Any, device: Any,
            engine: str = "auto", dtype: str = "float32", precision: str = "exact",
            batch_size: Any = None, bn: str = "eval") -> None:
    _optional_at_least(samples, "samples", 1, names, 500,
                       "the number of samples to evaluate on; leave it out for all")
    _at_least(sample_seed, "sample_seed", 0, names, 0)
    _choice(split, "split", SPLITS, names)
    _optional_at_least(batch_size, "batch_size", 1, names, 256)
    # each value on its own first, named as the caller spells it; then how they combine
    _choice(engine, "engine", (*PATHS, "auto"), names)
    _choice(bn, "bn", BN_POLICIES, names)
    _choice(dtype, "dtype", ("float32", "float64"), names)
    _choice(precision, "precision", PRECISIONS, names)
    if isinstance(device, str):
        check_device(names("device"), device)
    validate_settings(path=engine, bn=bn, dtype=dtype, precision=precision, device=device,
                      batch_size=batch_size)


def validate_line_options(*, steps: Any = 51, range_: Any = (-0.5, 1.5),
                          samples: Any = None, sample_seed: Any = 0, split: Any = "test",
                          device: Any = "auto", engine: str = "auto", dtype: str = "float32",
                          precision: str = "exact", batch_size: Any = None,
                          names: Mapping[str, str] | None = None) -> None:
    """Refuse bad options of a 1-D line (see the module docs); returns None if all are fine."""
    nm = _Names(names)
    _at_least(steps, "steps", 2, nm, 51, "a line needs 2 or more points")
    _range(range_, "range_", nm, "-0.5:1.5" if nm("range_").startswith("-") else (-0.5, 1.5))
    _common(nm, samples=samples, sample_seed=sample_seed, split=split, device=device,
            engine=engine, dtype=dtype, precision=precision, batch_size=batch_size)
    _grid_fits(steps, range_, (0.0, 1.0), 1, "line", nm)


def validate_plane_options(*, steps: Any = 21, range_: Any = (-1.0, 1.0), norm: Any = "filter",
                           seed: Any = 0, bn: str = "eval", samples: Any = None,
                           sample_seed: Any = 0, split: Any = "test", device: Any = "auto",
                           engine: str = "auto", dtype: str = "float32",
                           precision: str = "exact", batch_size: Any = None,
                           names: Mapping[str, str] | None = None) -> None:
    """Refuse bad options of a 2-D plane (see the module docs)."""
    nm = _Names(names)
    _at_least(steps, "steps", 2, nm, 21, "a plane needs 2 or more points per axis")
    _range(range_, "range_", nm, "-1:1" if nm("range_").startswith("-") else (-1.0, 1.0))
    _choice(norm, "norm", NORMS, nm)  # 'filter' is Li et al.'s, the default
    _at_least(seed, "seed", 0, nm, 0)
    _common(nm, samples=samples, sample_seed=sample_seed, split=split, device=device,
            engine=engine, dtype=dtype, precision=precision, batch_size=batch_size, bn=bn)
    _grid_fits(steps, range_, (0.0,), 2, "plane", nm)


def validate_trajectory_options(*, steps: Any = 21, margin: Any = 0.25, samples: Any = None,
                                sample_seed: Any = 0, split: Any = "test",
                                device: Any = "auto", engine: str = "auto",
                                dtype: str = "float32", precision: str = "exact",
                                batch_size: Any = None,
                                names: Mapping[str, str] | None = None) -> None:
    """Refuse bad options of the trajectory plane (see the module docs)."""
    nm = _Names(names)
    _at_least(steps, "steps", 2, nm, 21, "a plane needs 2 or more points per axis")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or \
            not math.isfinite(margin) or margin < 0:
        raise UsageError(f"{nm('margin')} must be a number ≥ 0 (the share of the trajectory's "
                         f"extent added on each side), got {margin!r}; e.g. "
                         f"{nm.example('margin', 0.25)}")
    _common(nm, samples=samples, sample_seed=sample_seed, split=split, device=device,
            engine=engine, dtype=dtype, precision=precision, batch_size=batch_size)
    # its range is the trajectory's own, symmetric about θ*: 0 is on it for odd steps
    _grid_fits(steps, (-1.0, 1.0), (0.0,), 2, "trajectory plane", nm)


def validate_hessian_options(*, top_k: Any = 5, trace: bool = True, trace_samples: Any = 50,
                             density: bool = False, density_runs: Any = 3,
                             density_steps: Any = 40, samples: Any = 1000,
                             sample_seed: Any = 0, split: Any = "test", seed: Any = 0,
                             tol: Any = 1e-3, device: Any = "auto",
                             layers: Sequence[str] | None = None,
                             names: Mapping[str, str] | None = None) -> None:
    """Refuse bad options of the Hessian view (see the module docs). Layer names are checked
    against the model later (they need it), still before anything is written."""
    nm = _Names(names)
    _at_least(top_k, "top_k", 1, nm, 5, "the number of top eigenvalues")
    if trace:
        _at_least(trace_samples, "trace_samples", 2, nm, 50,
                  "a confidence interval needs 2 or more probe vectors")
    if density:
        _at_least(density_runs, "density_runs", 1, nm, 3)
        _at_least(density_steps, "density_steps", 2, nm, 40)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or \
            not (math.isfinite(tol) and tol > 0):
        raise UsageError(f"{nm('tol')} must be a number > 0, got {tol!r}; e.g. "
                         f"{nm.example('tol', 1e-3)}")
    _at_least(seed, "seed", 0, nm, 0)
    if layers is not None and (isinstance(layers, str) or
                               not all(isinstance(n, str) and n for n in layers)):
        example = "fc1,fc2" if nm("layers").startswith("-") else ["fc1", "fc2"]
        raise UsageError(f"{nm('layers')} must be a list of layer names, got {layers!r}; "
                         f"e.g. {nm.example('layers', example)}")
    _common(nm, samples=samples, sample_seed=sample_seed, split=split, device=device)
