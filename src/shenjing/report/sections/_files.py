"""What every report section uses to read its stage's files and write short captions."""

from __future__ import annotations

from typing import Any

from shenjing.errors import DataError
from shenjing.report.blocks import Note, image_block, skipped_note
from shenjing.report.run_files import RunFile, read_run_json, run_glob
from shenjing.runs import Run


def number(value: Any, fmt: str = ".2f") -> str:
    """``value`` formatted with ``fmt``, or ``'?'`` when a run file holds no number there
    (an older or a foreign writer): a section never fails on one missing figure."""
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return "?"


def figure_block(run: Run, stem: str, caption: str) -> Any:
    """The PNG ``figures/<stem>.png`` of the run with its caption (None when absent)."""
    return image_block(run, f"figures/{stem}.png", caption)


def json_files(run: Run, folder: str, pattern: str
                ) -> tuple[list[tuple[RunFile, Any]], list[Note]]:
    """The readable JSON files matching ``pattern`` in ``folder`` with their contents, and a
    warning note for each one refused (outside the run, not a file) or not JSON."""
    found, refused = run_glob(run, folder, pattern)
    notes = [skipped_note(r) for r in refused]
    records: list[tuple[RunFile, Any]] = []
    for checked in found:
        try:
            records.append((checked, read_run_json(run, checked.name)))
        except DataError as exc:
            notes.append(Note(str(exc), level="warning"))
    return records, notes


def json_or_note(run: Run, name: str, blocks: list[Any]) -> Any:
    """The JSON of the run file ``name`` (None if absent); a refused or unreadable file adds
    a warning note to ``blocks`` instead of failing the whole section."""
    try:
        return read_run_json(run, name)
    except DataError as exc:
        blocks.append(Note(str(exc), level="warning"))
        return None


LISTED = 8  # names listed in a caption before "and N more": captions stay short at 100 layers


def listed_names(names: list[str]) -> str:
    """``"fc1, fc2"``; ``"a, b, … h and 54 more"`` for a long list; ``"none"`` for none."""
    if not names:
        return "none"
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def figure_names(rec: Any) -> list[Any]:
    """The PNG figures a view's JSON lists (``"figures"``), relative to the run folder; a
    name that is not text is kept, so that :func:`image_block` says it skipped it."""
    names = rec.get("figures", []) if isinstance(rec, dict) else []
    if not isinstance(names, list):
        return [names]
    return [f for f in names if not isinstance(f, str) or f.endswith(".png")]
