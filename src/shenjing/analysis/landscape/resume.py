"""Resumable progress of a long loop: named pieces of state in one ``.npz``, saved atomically.

Why: ``hessian`` killed after 100 s started again from zero. Its loops (Lanczos steps,
Hutchinson probes, SLQ runs, per-layer blocks, one Lanczos per epoch) are deterministic
given their state, so saving that state now and then lets a rerun continue where the kill
stopped and end with the same numbers, bit for bit.

A :class:`ResumeFile` holds *pieces*, each a dict of numpy arrays and plain JSON values
(``{"alphas": array, "calls": 7}``), under a name (``"top"``, ``"layer fc1 trace"``). The
file's ``key`` is a hash of every setting that changes the numbers (weights, samples, loss,
seeds, tolerances, …); a file with another key is ignored and replaced at the next save, so
stale progress is never reused. A piece may carry its own key too (the weights of one epoch).

Saving rewrites the whole file atomically (:func:`shenjing._io.save_npz`: a temporary file
renamed into place), at most every ``save_every`` seconds and never more often than keeps
the time spent saving under a fifth of the time computing (a Lanczos basis of a large model
is large); :meth:`ResumeFile.put` with ``final=True`` (a finished piece) always saves, and
``save_every=0`` saves at every step.

Layout of the ``.npz``: ``meta`` (JSON ``{"format": 1, "key", "pieces": {name: {"key",
"values": {field: json value}, "arrays": {field: array name}}}}``) and the arrays ``a0``,
``a1``, … it names.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shenjing import _io

FORMAT = 1


class ResumeFile:
    """The saved progress of one computation, keyed by its settings (see module docs).

    ``path=None`` keeps the pieces in memory only (nothing is saved or resumed).
    """

    def __init__(self, path: str | os.PathLike[str] | None, key: str, *,
                 save_every: float = 2.0) -> None:
        self.path = None if path is None else Path(path)
        self.key = key
        self.save_every = float(save_every)
        self._pieces: dict[str, dict[str, Any]] = {}
        self._piece_keys: dict[str, str | None] = {}
        self._last_save = time.perf_counter()
        self._save_cost = 0.0
        self._dirty = False
        self.resumed = False
        if self.path is not None and self.path.is_file():
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        try:
            with np.load(self.path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != FORMAT or meta.get("key") != self.key:
                    return  # other settings: start over (replaced at the first save)
                for name, piece in meta["pieces"].items():
                    state = dict(piece.get("values", {}))
                    state.update({field: z[array] for field, array in
                                  piece.get("arrays", {}).items()})
                    self._pieces[name] = state
                    self._piece_keys[name] = piece.get("key")
        except (OSError, ValueError, KeyError, TypeError):
            self._pieces.clear()  # an unreadable file is recomputed, never trusted
            self._piece_keys.clear()
            return
        self.resumed = bool(self._pieces)

    def get(self, name: str, key: str | None = None) -> dict[str, Any] | None:
        """The saved state of piece ``name`` (None if absent, or saved under another key)."""
        if name not in self._pieces or self._piece_keys.get(name) != key:
            return None
        return dict(self._pieces[name])

    def put(self, name: str, state: Mapping[str, Any], *, key: str | None = None,
            final: bool = False) -> None:
        """Record piece ``name``; save now if ``final`` or if it is time to (module docs)."""
        self._pieces[name] = dict(state)
        self._piece_keys[name] = key
        self._dirty = True
        elapsed = time.perf_counter() - self._last_save
        due = self.save_every <= 0 or elapsed >= max(self.save_every, 5 * self._save_cost)
        if final or due:
            self.save()

    def save(self) -> None:
        """Write every piece now (atomically), if anything changed since the last save."""
        if self.path is None or not self._dirty:
            return
        t0 = time.perf_counter()
        arrays: dict[str, np.ndarray] = {}
        pieces: dict[str, Any] = {}
        for name, state in self._pieces.items():
            values: dict[str, Any] = {}
            names: dict[str, str] = {}
            for field, value in state.items():
                if isinstance(value, np.ndarray):
                    names[field] = f"a{len(arrays)}"
                    arrays[names[field]] = value
                else:
                    values[field] = value
            pieces[name] = {"key": self._piece_keys.get(name), "values": values,
                            "arrays": names}
        _io.save_npz(self.path, meta={"format": FORMAT, "key": self.key, "pieces": pieces},
                     **arrays)
        self._dirty = False
        self._last_save = time.perf_counter()
        self._save_cost = self._last_save - t0

    def discard(self) -> None:
        """Delete the file (the computation is finished and its results are written)."""
        if self.path is not None and self.path.exists():
            self.path.unlink()
        self._pieces.clear()
        self._piece_keys.clear()


def settings_key(**settings: Any) -> str:
    """A hash of the settings that change a computation's numbers (JSON, sorted keys)."""
    import hashlib

    text = json.dumps(_io.to_jsonable(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


__all__ = ["ResumeFile", "settings_key"]
