"""``build_report(run)``: turn a run directory into one self-contained ``report.html``.

Each section reads only files of the run (written by the stages) and is present only
when its data is there: a view that was not computed is left out, never faked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shenjing.report.blocks import Section
from shenjing.report.render import render_index, render_report, write_html
from shenjing.runs import Run

SectionFn = Callable[[Run], "Section | None"]


def default_sections() -> list[SectionFn]:
    """The report's sections, in page order."""
    from shenjing.report import sections_base as base
    from shenjing.report import sections_views as views

    return [base.overview_section, base.model_section, base.training_section,
            views.dynamics_section, views.embedding_section, views.maps_section,
            views.landscape_section, views.hessian_section, views.fit_section,
            views.warp_section]


@dataclass(frozen=True)
class ReportResult:
    """Where the report was written, its size, and which sections it holds."""

    path: Path
    n_bytes: int
    sections: tuple[str, ...]

    def __repr__(self) -> str:
        return (f"ReportResult({str(self.path)!r}, {self.n_bytes / 1e6:.2f} MB, "
                f"sections={list(self.sections)})")


def build_report(run: Run | str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None,
                 sections: Sequence[SectionFn] | None = None) -> ReportResult:
    """Write ``RUN/report.html`` (or ``out``) from the files of the run."""
    run = run if isinstance(run, Run) else Run(run)
    built = [s for fn in (sections or default_sections()) if (s := fn(run)) is not None
             and s.blocks]
    m = run.manifest
    model = m["model"].get("name") or m["model"].get("factory") or "model"
    subtitle = (f"{model} on {m['data'].get('name')} · epochs {', '.join(map(str, run.epochs))}"
                f" · run {run.path}")
    html = render_report(built, title=f"{run.name}: what has {model} learned?",
                         subtitle=subtitle, run_path=run.path)
    target = Path(out) if out is not None else run.path / "report.html"
    write_html(target, html)
    run.update_stage("report", "done", path=str(target), bytes=len(html.encode()),
                     sections=[s.id for s in built])
    return ReportResult(target, len(html.encode()), tuple(s.id for s in built))


def build_index(entries: Sequence[dict[str, str]], path: str | os.PathLike[str], *,
                title: str = "shenjing demo", subtitle: str = "") -> Path:
    """An index page linking several reports (``entries``: href, name, model, data, shows,
    number)."""
    return write_html(path, render_index(entries, title=title, subtitle=subtitle))
