"""What epoch 0 is, said the same way in every caption: an ``inspect`` run without the
user's initial weights must never call its seeded fresh initialisation "untrained"."""

from __future__ import annotations

import re

import pytest

from shenjing import _io
from shenjing.report import build_report

FRESH = "epoch 0 = a fresh seeded initialisation"
# sections whose captions talk about epoch 0, and how many such captions each has at least
EPOCH0_CAPTIONS = {"training": 1, "dynamics": 1, "embeddings": 1, "maps": 2, "landscape": 1}


def sections(html: str) -> dict[str, str]:
    """Section id → its HTML, from the rendered page."""
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', html, flags=re.S))


def set_config(run, **config) -> None:
    manifest = _io.read_json(run.path / "run.json")
    manifest["config"] = {**manifest["config"], **config}
    _io.write_json(run.path / "run.json", manifest)


@pytest.mark.parametrize("config", [
    {"source": "inspect", "init_kind": "fresh", "init": "a fresh initialisation of MLP"},
    {"source": "inspect", "init_weights": None},  # runs written before init_kind existed
], ids=["init_kind", "legacy"])
def test_fresh_inspect_run_says_what_epoch0_is_everywhere(views_run, config):
    set_config(views_run, **config)
    html = build_report(views_run).path.read_text()
    assert "untrained" not in html.lower()
    parts = sections(html)
    for section, n in EPOCH0_CAPTIONS.items():
        assert parts[section].count(FRESH) >= n, section
    overview = parts["overview"]
    assert "Epoch 0 is a fresh seeded initialisation of the architecture" in overview
    assert "not your model&#39;s real initial weights" in overview
    assert "--init-weights" in overview and "--checkpoints" in overview
    assert 'class="note warning"' in overview


def test_trained_run_calls_epoch0_the_untrained_net(views_run):
    html = build_report(views_run).path.read_text()
    parts = sections(html)
    for section, n in EPOCH0_CAPTIONS.items():
        assert parts[section].count("epoch 0 = the untrained net") >= n, section
    assert "fresh seeded" not in html


def test_inspect_run_with_init_weights_names_them(views_run):
    set_config(views_run, source="inspect", init_kind="weights", init_weights="w0.safetensors")
    html = build_report(views_run).path.read_text()
    parts = sections(html)
    assert parts["training"].count("epoch 0 = the initial weights given with "
                                   "--init-weights") == 1
    assert "fresh seeded" not in html and "untrained" not in html.lower()
