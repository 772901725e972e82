"""The report page: self-contained, escaped, sections present when their data is."""

from __future__ import annotations

import re

from shenjing.report import build_report
from shenjing.report.blocks import safe_json

EVIL = "<script>alert('x')</script>"  # the same text the evil_run fixture plants


def test_report_has_base_sections_and_is_self_contained(tiny_run):
    result = build_report(tiny_run)
    html = result.path.read_text()
    assert result.path == tiny_run.path / "report.html"
    assert {"overview", "model", "training"} <= set(result.sections)
    assert 'id="training-curves"' in html and "What this shows" in html
    # nothing is loaded from outside the file
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=\"?(https?:)?//", html)
    assert tiny_run.stage("report")["status"] == "done"
    # the layer table (from the layers.json the Recorder saved) names the real layers
    assert (tiny_run.path / "layers.json").is_file()
    assert re.search(r"<td>fc1</td><td>Linear</td><td>128</td><td class=\"num\">8,320</td>"
                     r"<td>1×</td>", html.replace("\n", ""))


def test_page_scripts_use_only_helpers_defined_before_them(views_run):
    """Every helper a script of the page calls is defined in an earlier script (or its own),
    and figures wait for the whole page to be parsed: the page does not depend on the order
    its scripts run in (a figure drawn early once called a helper defined at the page's end)."""
    html = build_report(views_run).path.read_text()
    assert 'data-kind="embedding"' in html
    assert re.search(r'"asset":\s*"sprite-', html)  # the map shows hover thumbnails
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    assert scripts, "the report has no inline script"
    defined: set[str] = set()
    for body in scripts:
        here = set(re.findall(r"window\.(sj\w+)\s*=", body))
        here |= set(re.findall(r"function\s+(sj\w+)\s*\(", body))
        called = set(re.findall(r"(?<![\w.])(?<!function )(?:window\.)?(sj\w+)\s*\(", body))
        assert called <= defined | here, f"used before defined: {called - defined - here}"
        defined |= here
    assert "DOMContentLoaded" in scripts[0]
    figures = re.findall(r'<div id="([^"]+)" class="plot sj-plotly"', html)
    calls = re.findall(r'sjPlot\("([^"]+)"', html)
    assert figures and calls == figures  # one call per figure, each after its element


def test_hostile_names_show_as_text(evil_run):
    html = build_report(evil_run).path.read_text()
    assert EVIL not in html  # neither the layer, the class names nor the run folder name
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert html.count("<script") == html.count("</script>")


def test_safe_json_cannot_close_the_script_element():
    text = safe_json({"name": "</script><script>alert(1)</script>", "amp": "&"})
    assert "</" not in text and "<" not in text and "&" not in text
    import json

    assert json.loads(text)["name"] == "</script><script>alert(1)</script>"
