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
