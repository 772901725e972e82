"""The one gate through which the report reads a run's files: regular files inside the run.

A run folder may come from someone else, and the report is a page that gets shared. So every
path the report reads — named in a view's JSON (``maps/*.json`` ``"figures"``), found by a
glob, or fixed by the run format — goes through :func:`run_file`: the path is resolved
(symbolic links followed) and must then lie inside the resolved run folder and be a regular
file. A ``../`` or absolute path, a link that leads outside, a folder, a pipe or a device is
*refused*: never opened, and the section says what it skipped (``RunFile.refused``), so a
secret elsewhere on the disk can never end up base64-encoded in ``report.html``.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shenjing.errors import DataError
from shenjing.runs import Run


@dataclass(frozen=True)
class RunFile:
    """A path the report wants to read, checked.

    ``path``: the resolved regular file inside the run folder (None when there is none to
    read: absent, or refused); ``refused``: why it was not read ("" when readable or simply
    absent). ``name`` is the path as the run's files named it.
    """

    name: str
    path: Path | None
    refused: str = ""

    @property
    def readable(self) -> bool:
        return self.path is not None

    def skipped(self) -> str:
        """The sentence the report shows for a refused file."""
        return (f"Skipped {self.name}: {self.refused}. The report reads only regular files "
                "inside the run folder.")


def run_file(run: Run | str | os.PathLike[str], name: Any) -> RunFile:
    """Check the file ``name`` (relative to the run folder, as a run's JSON names it, or a
    path found inside the run) before the report reads it.

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> (d / "figures").mkdir(); _ = (d / "figures" / "a.png").write_bytes(b"png")
    >>> run_file(d, "figures/a.png").readable, run_file(d, "../secret.png").refused
    (True, 'it names a place outside the run folder')
    """
    shown = str(name)[:200]
    if not isinstance(name, (str, os.PathLike)) or not str(name) or "\0" in str(name):
        return RunFile(shown, None, f"not a file name ({type(name).__name__} {shown!r})")
    base = Path(os.path.abspath(run.path if isinstance(run, Run) else run))
    root = base.resolve()
    given = Path(name)
    joined = given if given.is_absolute() else base / given
    try:
        resolved = joined.resolve()
    except (OSError, RuntimeError) as exc:  # a link loop, a name too long
        return RunFile(shown, None, f"it cannot be resolved ({exc})")
    if not resolved.is_relative_to(root):
        lexical = Path(os.path.normpath(joined))  # the name itself, links not followed
        if not (lexical.is_relative_to(base) or lexical.is_relative_to(root)):
            return RunFile(shown, None, "it names a place outside the run folder")
        return RunFile(shown, None, "it is a link that leads outside the run folder")
    try:
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        return RunFile(shown, None)  # not written (by a stage that did not run): not an error
    except OSError as exc:
        return RunFile(shown, None, f"it cannot be read ({exc.strerror or exc})")
    if not stat.S_ISREG(mode):
        what = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        return RunFile(shown, None, f"it is {what}")
    return RunFile(shown, resolved)


def run_glob(run: Run, folder: str, pattern: str) -> tuple[list[RunFile], list[RunFile]]:
    """The files matching ``pattern`` in the run's ``folder``, sorted by name: those the
    report may read, and those it refused (links out of the run, folders …). Each keeps the
    name it was found under (``RunFile.name``: ``figures/cka-layers.png``)."""
    base = run.path / folder
    if not base.is_dir():
        return [], []
    readable: list[RunFile] = []
    refused: list[RunFile] = []
    for found in sorted(base.glob(pattern)):
        checked = run_file(run, found.relative_to(run.path))
        if checked.path is not None:
            readable.append(checked)
        elif checked.refused:
            refused.append(checked)
    return readable, refused


def read_run_json(run: Run, name: str | os.PathLike[str]) -> Any:
    """The JSON of the run file ``name``; None when it is absent. A refused path or a file
    that is not JSON is a :class:`~shenjing.errors.DataError` naming the file."""
    checked = run_file(run, name)
    if checked.refused:
        raise DataError(checked.skipped())
    if checked.path is None:
        return None
    try:
        return json.loads(checked.path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{name} is not valid JSON ({type(exc).__name__}: {exc})") from None


def files_inside_run(run: Run | str | os.PathLike[str],
                     paths: Iterable[str | os.PathLike[str]]) -> str:
    """"" when every path — a file, or a folder with everything under it, links followed —
    lies inside the run folder; otherwise why not, for the first one that does not."""
    root = run.path if isinstance(run, Run) else Path(run)
    folders: list[Path] = []
    for path in paths:
        checked = run_file(root, path)
        if checked.refused == "it is a folder":
            folders.append(Path(path).resolve())
        elif checked.refused:
            return f"{path}: {checked.refused}"
    seen: set[Path] = set()
    while folders:  # every real folder once: a link loop cannot make this run forever
        folder = folders.pop()
        if folder in seen:
            continue
        seen.add(folder)
        for entry in sorted(folder.iterdir()):
            checked = run_file(root, entry)
            if checked.refused == "it is a folder":
                folders.append(entry.resolve())
            elif checked.refused:
                return f"{entry}: {checked.refused}"
    return ""


__all__ = ["RunFile", "files_inside_run", "read_run_json", "run_file", "run_glob"]
