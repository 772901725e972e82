"""What the benchmarks share: the median time of a call over rounds, with its last result."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_time(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    """``fn()`` run ``rounds`` times: the median of the wall times, and the last result
    (our CPUs are shared: a median, never a single time)."""
    times, out = [], None
    for _ in range(max(1, rounds)):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out
