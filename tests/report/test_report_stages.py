"""Every step recorded in run.json is visible in the report: failed with its error, skipped
with its reason, a step that did not finish as such — in the overview and in its section."""

from __future__ import annotations

import re
import shutil

from shenjing.report import build_report
from shenjing.runs import Run

EVIL = "<script>alert('x')</script>"


def sections(html: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', html, flags=re.S))


def rows(section_html: str) -> list[list[str]]:
    """The cells of every table row of a section, tags stripped."""
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
            for tr in re.findall(r"<tr>(.*?)</tr>", section_html, flags=re.S)]


def copy_run(run: Run, tmp_path) -> Run:
    target = tmp_path / "run"
    shutil.copytree(run.path, target)
    return Run(target)


def test_failed_skipped_and_unfinished_stages_are_shown(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    run.update_stage("filters", "skipped", reason="filters apply to Conv2d and Linear "
                     "layers; lstm is an LSTM")
    run.update_stage("hessian", "failed", error=f"RuntimeError: derivative {EVIL} missing")
    run.update_stage("landscape_plane", "running", file="landscapes/plane-e002.npz")
    html = build_report(run).path.read_text()
    parts = sections(html)
    table = {r[0]: r[1:] for r in rows(parts["overview"]) if len(r) == 3}
    assert table["filters"] == ["skipped", "filters apply to Conv2d and Linear layers; lstm is "
                                           "an LSTM"]
    assert table["hessian"][0] == "failed"
    assert table["hessian"][1] == ("RuntimeError: derivative &lt;script&gt;alert(&#39;x&#39;)"
                                   "&lt;/script&gt; missing")
    assert table["landscape_plane"][0] == "did not finish"
    assert table["train"][0] == "done"
    assert "report" not in table  # the page itself
    # each view with a problem has its section, holding a visible note, even with no data
    assert "Step &#39;filters&#39; was skipped: filters apply to Conv2d" in parts["maps"]
    assert re.search(r'class="note warning">Step &#39;hessian&#39; failed: RuntimeError: '
                     r"derivative &lt;script&gt;", parts["hessian"])
    assert "Step &#39;landscape_plane&#39; did not finish" in parts["landscape"]
    assert EVIL not in html
    # the sections keep the page order and the navigation links them
    order = re.findall(r'<section id="([^"]+)">', html)
    assert order.index("maps") < order.index("landscape") < order.index("hessian")
    assert 'href="#hessian"' in html


def test_inspect_steps_without_a_stage_of_their_own_are_shown(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    run.update_stage("inspect", "done", steps=[
        {"name": "embed", "status": "done", "detail": "relu1"},
        {"name": "filters", "status": "skipped", "detail": "not applicable to this model"},
        {"name": "report", "status": "done", "detail": ""}])
    parts = sections(build_report(run).path.read_text())
    table = {r[0]: r[1:] for r in rows(parts["overview"]) if len(r) == 3}
    assert table["filters"] == ["skipped", "not applicable to this model"]
    assert "Step &#39;filters&#39; was skipped: not applicable" in parts["maps"]


def test_an_inspect_building_its_report_is_not_called_unfinished(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    run.update_stage("inspect", "running", weights="w.safetensors")  # as while it runs
    html = build_report(run).path.read_text()
    assert "did not finish" not in html


def test_a_view_whose_files_cannot_be_read_says_so(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    (run.path / "dynamics").mkdir(exist_ok=True)
    (run.path / "dynamics" / "dynamics.json").write_text("{not json")
    result = build_report(run)
    assert "dynamics" in result.sections
    text = sections(result.path.read_text())["dynamics"]
    assert re.search(r'class="note warning">This section could not be built from the run&#39;s '
                     r"files: \w*Error: ", text)
    assert run.stage("report")["status"] == "done"


def test_a_report_that_fails_is_marked_failed(tiny_run, tmp_path, monkeypatch):
    import pytest

    from shenjing.report import builder

    run = copy_run(tiny_run, tmp_path)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(builder, "write_html", broken)
    with pytest.raises(OSError, match="disk full"):
        build_report(run)
    assert run.stage("report") == {**run.stage("report"), "status": "failed",
                                   "error": "OSError: disk full"}


def test_a_view_of_another_kind_of_model_skipped_adds_no_section_but_a_failure_does(
        tiny_run, tmp_path):
    """An MLP has no attention and no recurrent layer: the steps table says the two were
    skipped, and the page has no empty 'Attention' section; a failed attention stage does
    get its section with the error."""
    run = copy_run(tiny_run, tmp_path)
    run.update_stage("attention", "skipped", reason="MLP has no attention layer")
    run.update_stage("recurrent", "skipped", reason="MLP has no recurrent layer")
    parts = sections(build_report(run).path.read_text())
    table = {r[0]: r[1:] for r in rows(parts["overview"]) if len(r) == 3}
    assert table["attention"] == ["skipped", "MLP has no attention layer"]
    assert table["recurrent"][0] == "skipped"
    assert "attention" not in parts and "recurrent" not in parts
    run.update_stage("attention", "failed", error="RuntimeError: boom")
    parts = sections(build_report(run).path.read_text())
    assert "Step &#39;attention&#39; failed: RuntimeError: boom" in parts["attention"]
