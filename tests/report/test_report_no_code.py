"""The report is built from the run's files alone: it never builds the model, and reloads the
data only when that runs no code. A run folder someone sends you is data."""

from __future__ import annotations

import json
import re
import textwrap

import numpy as np
import pytest

from shenjing import _io
from shenjing.report import build_report
from shenjing.runs import Run


def sections(html: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', html, flags=re.S))


def table_rows(section_html: str) -> list[list[str]]:
    cells = [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
             for tr in re.findall(r"<tr>(.*?)</tr>", section_html, flags=re.S)]
    return [c for c in cells if c]  # the header row has no <td>


@pytest.fixture
def hostile_run(tmp_path):
    """A run folder whose model factory and data factory write a marker file when imported,
    with the files a report reads (metrics, an embedding map)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    for name, body in (("evil_model.py", "class Net: pass"),
                       ("evil_data.py", "def make(): return None")):
        (tmp_path / name).write_text(textwrap.dedent(f"""
            import pathlib
            pathlib.Path({str(markers)!r}, {name!r}).write_text("ran")
            {body}
        """))
    run = Run.create(tmp_path / "sent", model={"factory": f"{tmp_path}/evil_model.py:Net",
                                               "kwargs": {}},
                     data={"name": "factory", "factory": f"{tmp_path}/evil_data.py:make",
                           "kwargs": {}, "seed": 0},
                     classes=("a", "b"))
    for epoch, acc in ((0, 0.5), (1, 0.9)):
        _io.append_jsonl(run.metrics_path, {"epoch": epoch, "test_loss": 1.0 - acc / 2,
                                            "test_accuracy": acc})
    _io.save_npz(run.path / "embeddings" / "fc-pca-epoch-001.npz",
                 coords=np.zeros((4, 2), "f4"), indices=np.arange(4),
                 labels=np.array([0, 1, 0, 1]),
                 metrics=np.array(json.dumps({"probe_accuracy": 1.0})))
    return run, markers


def test_report_of_a_hostile_run_runs_none_of_its_code(hostile_run):
    run, markers = hostile_run
    html = build_report(run.path).path.read_text()
    assert sorted(p.name for p in markers.iterdir()) == []
    parts = sections(html)
    assert ("The layer table was not saved with this run; `shenjing layers "
            f"{run.path} --dry-run` prints it.") in parts["model"]
    # the map is there, without thumbnails, and says why
    assert "emb-fc-pca-epoch-001" in parts["embeddings"]
    assert "no input images: the run&#39;s data is made by code" in parts["embeddings"]
    assert 'id="sprite-' not in html


def test_model_table_comes_from_layers_json(tiny_run, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_run.path, tmp_path / "run")
    run = Run(tmp_path / "run")
    _io.write_json(run.path / "layers.json", {
        "format": 1, "model_name": "Seq2", "input_shape": [20, 8], "n_params": 4002,
        "n_trainable": 3900,
        "rows": [
            {"name": "lstm", "type": "LSTM", "is_leaf": True, "calls": 1, "n_params": 3200,
             "output_shapes": {"lstm.0": [2, 20, 32], "lstm.1.0": [1, 2, 32],
                               "lstm.1.1": [1, 2, 32]}},
            {"name": "block", "type": "Sequential", "is_leaf": False, "calls": 2,
             "n_params": 0, "output_shapes": {"block": [2, 32], "block#1": [2, 32]}},
            {"name": "block.0", "type": "Linear", "is_leaf": True, "calls": 2,
             "n_params": 528, "output_shapes": {"block.0": [2, 16], "block.0#1": [2, 16]}},
            {"name": "attn", "type": "MultiheadAttention", "is_leaf": False, "calls": 1,
             "n_params": 96, "output_shapes": {"attn.0": [2, 4, 8], "attn.1": [2, 4, 4]}},
            {"name": "attn.out_proj", "type": "NonDynamicallyQuantizableLinear",
             "is_leaf": True, "calls": 0, "n_params": 72, "output_shapes": {}},
            {"name": "head", "type": "Linear", "is_leaf": True, "calls": 1, "n_params": 66,
             "output_shapes": {"head": [2, 2]}},
            {"name": "spare", "type": "Linear", "is_leaf": True, "calls": 0, "n_params": 0,
             "output_shapes": {}},
        ]})

    def refuse(*args, **kwargs):
        raise AssertionError("the report built the model")

    monkeypatch.setattr(Run, "model", refuse)
    monkeypatch.setattr(Run, "build_model", refuse)
    parts = sections(build_report(run).path.read_text())
    got = {r[0]: r[1:] for r in table_rows(parts["model"])}
    assert got == {
        "lstm": ["LSTM", "lstm.0: 20×32; lstm.1.0: 1×32; lstm.1.1: 1×32", "3,200", "1×"],
        "block.0": ["Linear", "block.0: 16; block.0#1: 16", "528", "2×"],
        "attn": ["MultiheadAttention", "attn.0: 4×8; attn.1: 4×4", "96", "1×"],
        "attn.out_proj": ["NonDynamicallyQuantizableLinear", "—", "72",
                          "no call of its own (attn ran and uses it)"],
        "head": ["Linear", "2", "66", "1×"],
        "spare": ["Linear", "—", "0", "did not run"],
        "(the model itself)": ["Seq2", "—", "40", "—"],  # its own tensors: a CLS token …
    }
    assert "4,002 parameters in all (3,900 trainable), for one input of shape 20×8." \
        in parts["model"]


def test_model_table_matches_the_real_model(tiny_run, tmp_path):
    """layers.json as the capture code lists the real net: the report shows its numbers."""
    import shutil

    from shenjing.capture import list_layers

    shutil.copytree(tiny_run.path, tmp_path / "run")
    run = Run(tmp_path / "run")
    model = run.model()
    table = list_layers(model, run.data.test.x[:2])
    _io.write_json(run.path / "layers.json", {
        "format": 1, "model_name": table.model_name, "input_shape": [1, 8, 8],
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "rows": [{"name": r.name, "type": r.type, "is_leaf": r.is_leaf, "calls": r.calls,
                  "n_params": r.n_params,
                  "output_shapes": {k: list(v) for k, v in r.output_shapes.items()}}
                 for r in table]})
    got = {r[0]: r[1:] for r in table_rows(sections(build_report(run).path.read_text())
                                           ["model"])}
    for name, module in model.named_modules():
        if name and not any(module.children()):
            own = sum(p.numel() for p in module.parameters(recurse=False))
            assert got[name][2] == f"{own:,}" and got[name][3] == "1×"
    assert got["fc1"][:2] == ["Linear", "128"]
    assert got["fc2"][1] == "10"
