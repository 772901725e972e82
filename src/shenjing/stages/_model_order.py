"""The model's order of layers and parameter groups, and its parameter count, from files only.

The dynamics and weights views read the run folder as data and never build the model: the
order comes from the Recorder's listing (metrics.jsonl) and ``RUN/layers.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shenjing.analysis.dynamics import natural_key, recorded_coverage
from shenjing.runs import Run


def layer_table(run: Run) -> Mapping[str, Any] | None:
    """``RUN/layers.json`` as plain JSON (None when the run has none or it is unreadable)."""
    table = run.saved_layer_table()
    return table if table is not None and isinstance(table.get("rows"), list) else None


def model_order(run: Run, groups: Sequence[str]) -> list[str] | None:
    """Group and module names in the model's order, from files only (never the model).

    The Recorder's group listing is in model order; ``layers.json`` gives the module order
    (dead-unit activations, and groups of runs recorded before the listing existed): each
    module is followed by its ``.bias`` group, and root parameters come first.
    """
    table = layer_table(run)
    if table is None:
        return list(groups) or None
    modules = [str(r.get("name")) for r in table["rows"] if isinstance(r, Mapping)]
    known = set(modules)
    order = [g for g in groups if g not in known and g.removesuffix(".bias") not in known]
    for name in modules:
        order += [name, f"{name}.bias"]
    return order


def in_model_order(names: Sequence[str], order: Sequence[str] | None) -> list[str]:
    rank = {n: i for i, n in enumerate(order or ())}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), natural_key(n)))


def n_total_params(run: Run, records: Sequence[Mapping[str, Any]]) -> int | None:
    """All the model's parameters, as the Recorder or ``layers.json`` counted them."""
    recorded = recorded_coverage(records)
    if recorded is not None:
        return recorded.n_total
    table = layer_table(run)
    return int(table["n_params"]) if table is not None and "n_params" in table else None
