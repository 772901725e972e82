"""The README's "your own training loop" recipe, then every command on the run it leaves.

Without ``model_spec`` the run cannot rebuild the network: the commands that need it say so
in one line (never a traceback); the views made from saved files work. With ``model_spec``
every command works.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import shenjing as sj

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))  # tests/: inspect_models
from cli_invoke import invoke  # noqa: E402


def _recipe(folder: Path, **recorder_options):
    """The README's loop, as a user writes it (two epochs of a small net on digits)."""
    from inspect_models import Shared

    data = sj.load_dataset("digits")
    torch.manual_seed(0)
    model = Shared(hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rec = sj.Recorder(folder, model, data=data, **recorder_options)
    rec.start()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.train.x, data.train.y), batch_size=128)
    for _ in range(2):
        for x, y in loader:
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            rec.after_backward(loss, output=out, target=y)
            opt.step()
        rec.end_epoch(optimizer=opt)
    return folder


NEEDS_MODEL = [
    ["layers", "{run}", "--dry-run"],
    ["embed", "{run}", "--layers", "out", "--method", "pca", "--n", "50", "--n-train", "100"],
    ["capture", "{run}", "--layers", "out"],
    ["maps", "{run}", "--layer", "out"],
    ["landscape", "{run}", "--line", "0:final", "--steps", "3", "--samples", "20"],
    ["hessian", "{run}", "--top", "1", "--no-trace", "--samples", "20"],
]
FROM_FILES = [["layers", "{run}"], ["dynamics", "{run}"], ["weights", "{run}"],
              ["report", "{run}"]]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    return _recipe(tmp_path_factory.mktemp("recipe") / "mine")


@pytest.mark.parametrize("args", NEEDS_MODEL, ids=lambda a: a[0])
def test_a_run_without_model_spec_says_in_one_line_what_is_missing(capsys, recipe_run, args):
    code, out, err = invoke(capsys, *[a.format(run=recipe_run) for a in args])
    assert code == 1, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("RunError: run 'mine' cannot rebuild its network")
    assert "model_spec=" in lines[0]


@pytest.mark.parametrize("args", FROM_FILES, ids=lambda a: a[0])
def test_views_from_saved_files_work_without_model_spec(capsys, recipe_run, args):
    code, out, err = invoke(capsys, *[a.format(run=recipe_run) for a in args])
    assert code == 0, (out, err)


def test_with_model_spec_every_command_works(tmp_path, capsys):
    run = _recipe(tmp_path / "mine", model_spec=f"{TESTS / 'inspect_models.py'}:Shared",
                  model_kwargs={"hidden": 16})
    for args in NEEDS_MODEL:
        code, out, err = invoke(capsys, *[a.format(run=run) for a in args])
        assert code == 0, (args, out, err)
    # the rebuilt net is the trained one
    from inspect_models import Shared

    net = Shared(hidden=16)
    net.load_state_dict(sj.open_run(run).state_dict("final"))
    x = sj.load_dataset("digits").test.x[:8]
    with torch.no_grad():
        torch.testing.assert_close(sj.open_run(run).model("final")(x), net.eval()(x))
