"""The pieces a report page is made of: sections holding figures, tables and notes.

Sections are plain data; the Jinja2 template turns them into HTML with autoescaping on,
so every string that came from a model, a dataset or a file name is shown as text.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from shenjing.report.run_files import RunFile, run_file
from shenjing.runs import Run


@dataclass
class Image:
    """A static figure inlined as a data URI, with its plain-words caption."""

    src: str  # data: URI
    caption: str
    alt: str = ""
    kind: str = "image"


@dataclass
class Interactive:
    """A Plotly figure: its JSON spec (rendered by the plotly.js embedded once per page)."""

    div_id: str
    spec_json: str  # already safe to place inside <script>
    caption: str
    height: int = 480
    kind: str = "plotly"
    hover_sprite: dict[str, Any] | None = None  # thumbnails shown on hover (embeddings)
    tag: str = ""  # what the figure is ("surface", "embedding" …), for the page and tests

    @property
    def script(self) -> Markup:
        return Markup(self.spec_json)


@dataclass
class Table:
    """A small table of numbers or names."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    kind: str = "table"


@dataclass
class Note:
    """A paragraph of text (a warning, a provenance line, an explanation)."""

    text: str
    level: str = "info"  # info | warning
    kind: str = "note"
    stage: str = ""  # the run.json stage this note reports on (failed, skipped …), if any


@dataclass
class Asset:
    """A data URI placed once in the page and referenced by id (e.g. a thumbnail sprite)."""

    id: str
    src: str
    kind: str = "asset"


@dataclass
class Section:
    """One titled part of the report."""

    id: str
    title: str
    blocks: list[Any] = field(default_factory=list)
    intro: str = ""


def png_data_uri(path: str | Path) -> str:
    """Inline a PNG (or GIF) file as a data URI. Only for a path :func:`run_file` checked
    (or one the report wrote itself): the bytes end up in a page that gets shared."""
    path = Path(path)
    mime = "image/gif" if path.suffix.lower() == ".gif" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def png_bytes_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def safe_json(obj: Any) -> str:
    """JSON that can sit inside a <script> element: no '</script>' or HTML breakout."""
    text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def skipped_note(checked: RunFile) -> Note:
    """The warning a section shows for a file it refused to read (see :func:`run_file`)."""
    return Note(checked.skipped(), level="warning")


def image_block(run: Run, name: Any, caption: str, alt: str = "") -> Image | Note | None:
    """An Image block for the run's figure file ``name`` (``figures/x.png``, relative to the
    run folder); None if the stage did not write it; a warning Note if the path is refused
    (it leaves the run folder, or is not a regular file)."""
    checked = run_file(run, name)
    if checked.refused:
        return skipped_note(checked)
    if checked.path is None:
        return None
    return Image(src=png_data_uri(checked.path), caption=caption,
                 alt=alt or Path(checked.name).stem)


def plotly_block(fig: Any, div_id: str, caption: str, *, height: int = 480,
                 hover_sprite: dict[str, Any] | None = None, tag: str = "") -> Interactive:
    """An Interactive block from a plotly Figure."""
    return Interactive(div_id=div_id, spec_json=safe_json(fig.to_json()), caption=caption,
                       height=height, hover_sprite=hover_sprite, tag=tag)
