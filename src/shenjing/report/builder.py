"""``build_report(run)``: turn a run directory into one self-contained ``report.html``.

Each section reads only files of the run (written by the stages) and is present only
when its data is there: a view that was not computed is left out, never faked. A view whose
stage failed, was skipped or did not finish is shown with a note saying so (and why), never
silently missing. Building the report runs no code the run folder names: it never builds
the model, and reloads the data only when that is a built-in dataset or a plain data file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shenjing.errors import RunError, RunLockedError, UsageError
from shenjing.report.blocks import Note, Section
from shenjing.report.provenance import epoch_summary
from shenjing.report.render import render_index, render_report, write_html
from shenjing.report.stage_status import SECTION_TITLES, add_stage_notes, stage_states
from shenjing.runs import MANIFEST, Run, acquire_writer_lock

SectionFn = Callable[[Run], "Section | None"]


def default_sections() -> list[SectionFn]:
    """The report's sections, in page order."""
    from shenjing.report.sections import (
        attention,
        attribute,
        dann,
        dynamics,
        embed,
        fit,
        gan,
        hessian,
        landscape,
        maps,
        recurrent,
        run,
        units,
        visualize,
        warp,
    )

    return [run.overview_section, run.model_section, run.training_section,
            dynamics.dynamics_section, embed.embed_section, maps.maps_section,
            attention.attention_section, recurrent.recurrent_section,
            attribute.attribute_section, units.units_section, visualize.visualize_section,
            landscape.landscape_section, hessian.hessian_section, fit.fit_section,
            warp.warp_section, gan.gan_section, dann.dann_section]


def _build(fn: SectionFn, run: Run) -> Section | None:
    """One section; if its files cannot be read, the section says so instead of the whole
    report failing (a run folder may come from an older or a foreign writer)."""
    try:
        return fn(run)
    except Exception as exc:
        name = getattr(fn, "__name__", "section").removesuffix("_section")
        section_id = name if name in SECTION_TITLES else f"{name}s" if (
            f"{name}s" in SECTION_TITLES) else name
        title = SECTION_TITLES.get(section_id, name)
        return Section(section_id, title, [Note(
            f"This section could not be built from the run's files: {type(exc).__name__}: "
            f"{exc}", level="warning")])


@dataclass(frozen=True)
class ReportResult:
    """Where the report was written, its size, which sections it holds, and a note when it
    could not be recorded in run.json (a read-only run, or one another process writes)."""

    path: Path
    n_bytes: int
    sections: tuple[str, ...]
    note: str = ""

    def __repr__(self) -> str:
        return (f"ReportResult({str(self.path)!r}, {self.n_bytes / 1e6:.2f} MB, "
                f"sections={list(self.sections)})")


def build_report(run: Run | str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None,
                 sections: Sequence[SectionFn] | None = None) -> ReportResult:
    """Write ``RUN/report.html`` (or ``out``) from the files of the run.

    Stage ``report`` in run.json is marked done with the page's path and sections, or failed
    with the error. Building reads the run and writes only the page: a read-only run, or
    one another process is writing, still gets its report at ``out`` (not recorded in its
    run.json; :attr:`ReportResult.note` says so).
    """
    run = run if isinstance(run, Run) else Run(run)
    from shenjing.report.run_files import run_file

    manifest = run_file(run, "run.json")
    if manifest.refused:  # its contents would come from outside the run: show nothing of it
        raise RunError(f"{run.path}: {manifest.skipped()}")
    target = Path(out) if out is not None else run.path / "report.html"
    if out is not None:
        _check_out(target)  # before the run is touched
    if not _writable(run.path):
        if _inside(target, run.path):
            raise RunError(f"cannot write {target}: the run folder {run.path} is read-only; "
                           "write the report elsewhere with --out, e.g. --out report.html")
        return _write_report(run, target, sections,
                             note="the run folder is read-only: this report is not recorded "
                                  "in its run.json")
    try:
        lock = acquire_writer_lock(run.path)
    except RunLockedError:
        return _write_report(run, target, sections,
                             note="another process is writing the run: this report shows it "
                                  "as it is now, and is not recorded in its run.json")
    with lock:
        with run.running_stage("report"):
            result = _write_report(run, target, sections)
        run.update_stage("report", "done", path=str(target), bytes=result.n_bytes,
                         sections=list(result.sections))
    return result


def _write_report(run: Run, target: Path, sections: Sequence[SectionFn] | None, *,
                  note: str = "") -> ReportResult:
    """Build the page from the run's files and write it to ``target`` (atomically)."""
    built = [s for fn in (sections or default_sections())
             if (s := _build(fn, run)) is not None and s.blocks]
    built = add_stage_notes(built, stage_states(run))
    m = run.manifest
    model = _model_label(m["model"])
    subtitle = (f"{model} on {m['data'].get('name')} · epochs {epoch_summary(run.epochs)}"
                f" · run {run.path}")
    html = render_report(built, title=f"{run.name}: what has {model} learned?",
                         subtitle=subtitle, run_path=run.path)
    write_html(target, html)
    return ReportResult(target, len(html.encode()), tuple(s.id for s in built), note)


def _check_out(target: Path) -> None:
    """Refuse an ``--out`` the page cannot be written to: a folder, or a path through a
    file (one :class:`~shenjing.errors.UsageError` naming it)."""
    if target.is_dir():
        raise UsageError(f"--out {target}: that is a folder; give the page a file name, e.g. "
                         f"--out {target / 'report.html'}")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--out {target}: {parent} is a file, not a folder; choose "
                             "another place for the page, e.g. --out report.html")


def _writable(folder: Path) -> bool:
    """Whether this process may write into the run folder and its run.json (False on a
    read-only disk, or a folder without write permission for this user)."""
    return os.access(folder, os.W_OK) and os.access(folder / MANIFEST, os.W_OK)


def _inside(target: Path, folder: Path) -> bool:
    """Whether ``target`` lies in ``folder`` (both resolved)."""
    return folder.resolve() in target.resolve().parents


def _model_label(spec: dict[str, Any]) -> str:
    """``mlp``; ``RowLSTM`` for the factory ``path/to/user_models.py:RowLSTM``."""
    if spec.get("name"):
        return str(spec["name"])
    factory = str(spec.get("factory") or spec.get("class") or "model")
    return factory.rsplit(":", 1)[-1] or factory


def build_index(entries: Sequence[dict[str, str]], path: str | os.PathLike[str], *,
                title: str = "shenjing demo", subtitle: str = "") -> Path:
    """An index page linking several reports (``entries``: href, name, model, data, shows,
    number)."""
    return write_html(path, render_index(entries, title=title, subtitle=subtitle))
