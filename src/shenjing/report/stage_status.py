"""The stages recorded in ``run.json``, as the report shows them: every step that failed,
was skipped or did not finish is visible — in the overview's table and in its view's section —
never silently missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shenjing.report.blocks import Note, Section, Table
from shenjing.runs import Run

# section id → title: the one place the report's section titles live
SECTION_TITLES = {
    "overview": "Overview",
    "model": "Model",
    "training": "Training",
    "dynamics": "How the weights moved",
    "embeddings": "Hidden features: do the classes cluster?",
    "maps": "Feature maps and filters",
    "attention": "Attention",
    "recurrent": "Over time: what a recurrent layer knows at each step",
    "attribute": "What the network looks at",
    "units": "What each unit responds to",
    "visualize": "What each unit would like to see (feature visualization)",
    "landscape": "Loss landscape",
    "hessian": "Sharpness (Hessian)",
    "fit": "Fitting a function (seed 001)",
    "warp": "How the layers bend space (seed 001)",
    "gan": "What a GAN's generator learned (seed 001)",
    "dann": "Do DANN's features forget the domain? (seed 001)",
}

# stage name (as recorded in run.json, or an inspect step) → the section showing its output
STAGE_SECTION = {
    "train": "training",
    "weights": "dynamics", "dynamics": "dynamics",
    "capture": "embeddings", "embed": "embeddings", "cka": "embeddings",
    "maps": "maps", "filters": "maps",
    "attention": "attention", "recurrent": "recurrent",
    "attribute": "attribute", "units": "units", "visualize": "visualize",
    "landscape": "landscape", "landscape_line": "landscape", "landscape_plane": "landscape",
    "landscape_trajectory": "landscape",
    "hessian": "hessian", "sharpness": "hessian",
    "fit": "fit", "warp": "warp",
    "gan": "gan",
    "dann": "dann",
}

# sections of a kind of model: a run whose model has no attention (or no recurrent layer)
# records the stage skipped, listed in the steps table, but gets no section of its own
MODEL_KIND_SECTIONS = {"attention", "recurrent"}

# umbrella stages whose steps are their own stages: while one runs it is building this very
# report, so its "running" is not a stage that died
_UMBRELLAS = {"inspect"}
_STATUS_WORDS = {"done": "done", "failed": "failed", "skipped": "skipped",
                 "running": "did not finish", "interrupted": "did not finish (interrupted)"}


@dataclass(frozen=True)
class StageState:
    """One recorded stage: its name, status in words, and why (error, reason)."""

    name: str
    status: str  # done | failed | skipped | running | interrupted | …
    detail: str

    @property
    def words(self) -> str:
        return _STATUS_WORDS.get(self.status, self.status)

    @property
    def is_problem(self) -> bool:
        return self.status != "done"

    @property
    def section(self) -> str | None:
        return STAGE_SECTION.get(self.name.split(":")[0]) or STAGE_SECTION.get(
            self.name.split("-")[0])

    def sentence(self) -> str:
        """``"Step 'filters' was skipped: filters apply to Conv2d and Linear layers."``"""
        if self.status == "failed":
            return f"Step '{self.name}' failed: {self.detail or 'no error recorded'}."
        if self.status == "skipped":
            return f"Step '{self.name}' was skipped: {self.detail or 'no reason recorded'}."
        if self.status in ("running", "interrupted"):
            return (f"Step '{self.name}' did not finish (it was stopped or killed while "
                    f"running); its results here may be missing or partial. Run it again.")
        return f"Step '{self.name}': {self.words}."


def _detail(status: str, info: dict[str, Any]) -> str:
    if status == "failed":
        return str(info.get("error") or "")
    if status == "skipped":
        return str(info.get("reason") or info.get("detail") or "")
    if status == "interrupted" and info.get("last_epoch") is not None:
        return f"stopped after epoch {info['last_epoch']}"
    if status == "running":
        return f"last update {info.get('updated', '?')}"
    return ""


def stage_states(run: Run) -> list[StageState]:
    """Every stage of ``run.json`` except the report itself and the demo's bookkeeping, plus
    the failed or skipped steps an ``inspect`` recorded that have no stage of their own."""
    stages = run.manifest.get("stages", {}) or {}
    states: list[StageState] = []
    for name, info in stages.items():
        info = info if isinstance(info, dict) else {}
        status = str(info.get("status", "?"))
        if name == "report" or (name.startswith("demo:") and status == "done"):
            continue
        if name in _UMBRELLAS and status == "running":
            continue
        states.append(StageState(name, status, _detail(status, info)))
    recorded = set(stages)
    for umbrella in _UMBRELLAS:
        for step in (stages.get(umbrella, {}) or {}).get("steps", []) or []:
            name, status = str(step.get("name", "?")), str(step.get("status", "?"))
            if name in recorded or name == "report" or status == "done":
                continue
            states.append(StageState(name, status, str(step.get("detail") or "")))
    return states


def stages_table(states: list[StageState]) -> Table | None:
    """The overview's table: one row per stage, its status, and the error or reason."""
    if not states:
        return None
    rows: list[list[Any]] = [[s.name, s.words, s.detail or "—"] for s in states]
    n_problems = sum(s.is_problem for s in states)
    caption = ("Steps recorded in run.json. " + (
        f"{n_problems} did not complete; each is also noted in its section below."
        if n_problems else "All completed."))
    return Table(["step", "status", "error or reason"], rows, caption=caption)


def add_stage_notes(sections: list[Section], states: list[StageState]) -> list[Section]:
    """Put a visible note for every failed, skipped or unfinished stage at the top of its
    view's section, adding the section (with only the note) in its page place when the view
    wrote nothing — except a skipped view of a kind of model (attention, recurrent) on a
    model without it: the steps table says so, and no empty section is added."""
    out = list(sections)
    order = list(SECTION_TITLES)

    def rank(section_id: str) -> int:
        return order.index(section_id) if section_id in order else len(order)

    for state in states:
        target = state.section
        if not state.is_problem or target is None:
            continue
        section = next((s for s in out if s.id == target), None)
        if section is None and state.status == "skipped" and target in MODEL_KIND_SECTIONS:
            continue
        if section is None:
            section = Section(target, SECTION_TITLES[target], [])
            at = next((i for i, s in enumerate(out) if rank(s.id) > rank(target)), len(out))
            out.insert(at, section)
        level = "info" if state.status == "skipped" else "warning"
        n_notes = sum(1 for b in section.blocks if getattr(b, "stage", ""))
        section.blocks.insert(n_notes, Note(state.sentence(), level=level, stage=state.name))
    return out
