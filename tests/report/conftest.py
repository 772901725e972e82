"""Fixtures for report tests: a tiny trained run, and a run with hostile names."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
import torch

import shenjing as sj
from shenjing.training import Recorder

EVIL = "<script>alert('x')</script>"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, digits):
    """An mlp trained 2 epochs on a slice of digits."""
    small = dataclasses.replace(digits, train=digits.train.subset(300, seed=0),
                                test=digits.test.subset(120, seed=0))
    return sj.train("mlp", small, epochs=2, run=tmp_path_factory.mktemp("r") / "tiny",
                    progress=False)


@pytest.fixture
def evil_run(tmp_path, digits):
    """A run whose class names, layer name and folder name carry HTML/JS."""
    model_file = tmp_path / "evil_model.py"
    model_file.write_text(textwrap.dedent(f'''
        import torch
        from torch import nn

        class Evil(nn.Module):
            def __init__(self):
                super().__init__()
                self.flatten = nn.Flatten()
                self.add_module({EVIL!r}, nn.Linear(64, 10))

            def forward(self, x):
                return getattr(self, {EVIL!r})(self.flatten(x))
    '''))
    torch.manual_seed(0)
    factory = f"{model_file}:Evil"
    from shenjing.models import build_from_spec

    spec = {"factory": factory, "kwargs": {}}
    model = build_from_spec(spec)
    data = dataclasses.replace(digits, classes=tuple(f"{EVIL}{i}" for i in range(10)),
                               train=digits.train.subset(200, seed=0),
                               test=digits.test.subset(100, seed=0))
    rec = Recorder(tmp_path / f"run{EVIL}", model, data=data, model_spec=spec)
    rec.start()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for x, y in data.train.loader(50):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        rec.after_backward(loss, output=None, target=y)
        opt.step()
    rec.end_epoch(optimizer=opt)
    return rec.run


def _tiny_png(path):
    """A real 2×2 PNG where a stage would have drawn a figure (the report inlines files)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (2, 2), 128).save(path)
    return path


@pytest.fixture
def views_run(tmp_path, tiny_run):
    """A copy of ``tiny_run`` holding the files of every view whose caption mentions epoch 0
    (training, dynamics, an epoch-0 embedding map, feature maps, filters, the line θ₀ → θ*).

    The landscape line is computed by its stage; the others are written by hand in the
    stages' formats (their own stages draw for tens of seconds).
    """
    import json
    import shutil

    import numpy as np

    from shenjing import _io
    from shenjing.runs import Run
    from shenjing.stages.landscape import landscape_line

    root = tmp_path / "views"
    root.mkdir()
    for name in ("run.json", "metrics.jsonl", "checkpoints"):
        src = tiny_run.path / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, root / name)
    manifest = _io.read_json(root / "run.json")
    manifest["stages"] = {"train": {"status": "done"}}
    _io.write_json(root / "run.json", manifest)
    run = Run(root)
    figures = run.path / "figures"
    _io.write_json(run.path / "dynamics" / "dynamics.json",
                   {"status": {"moving": ["fc1"], "settled": ["fc2"],
                               "last_update_ratio": {"fc1": 0.2, "fc2": 0.001}}})
    _tiny_png(figures / "dynamics-layers.png")
    test = run.data.test
    idx = test.indices[:20].numpy()
    labels = test.y[:20].numpy()
    for epoch in (0, run.final_epoch):
        _io.save_npz(run.path / "embeddings" / f"relu1-pca-epoch-{epoch:03d}.npz",
                     coords=np.random.default_rng(epoch).normal(size=(20, 2)).astype("f4"),
                     indices=idx, labels=labels,
                     metrics=np.array(json.dumps({"probe_accuracy": 0.9})))
    maps_png = _tiny_png(figures / "maps-relu1-test0-e000-e002.png")
    _io.write_json(run.path / "maps" / "maps-relu1-test0-e000-e002.json",
                   {"layer": "relu1", "index": 0, "label": 3, "split": "test",
                    "epochs": [0, run.final_epoch], "channels_shown": list(range(8)),
                    "figures": [f"figures/{maps_png.name}"]})
    filters_png = _tiny_png(figures / "filters-fc1-e000.png")
    _io.write_json(run.path / "maps" / "filters-fc1.json",
                   {"layer": "fc1", "kind": "linear", "figures": [f"figures/{filters_png.name}"],
                    "change": {"epochs": [0, run.final_epoch], "relative_change": 0.25}})
    landscape_line(run, steps=5, progress=False)
    return run
