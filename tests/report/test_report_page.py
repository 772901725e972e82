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
    # the layer table names the real layers with their shapes
    assert re.search(r"<td>fc1</td><td>Linear</td><td>128</td>", html.replace("\n", ""))


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
