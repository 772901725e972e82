"""``inspect`` on models nobody here wrote the way shenjing expects: vit-pytorch's ViT (built
offline), an LSTM reading rows, and a 60-conv-layer CNN. Every step ends ``done`` or
``skipped`` with a reason — the Hessian included — and the report is written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from shenjing.models.weights import save_safetensors
from shenjing.runs import Run
from shenjing.stages.inspect import inspect_model

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
import inspect_models as im  # noqa: E402
import vit_pytorch_model as vp  # noqa: E402

SIZES = {"line_steps": 7, "plane_steps": 5, "samples": 200, "embed_method": "pca",
         "embed_samples": 300, "embed_train_samples": 600, "hessian_top": 3,
         "hessian_samples": 200}
MODELS = {
    "vit-pytorch": (f"{TESTS / 'vit_pytorch_model.py'}:vit_pytorch_vit", {}),
    "lstm": (f"{TESTS / 'user_models.py'}:RowLSTM", {}),
    "deep-cnn": (f"{TESTS / 'user_models.py'}:deep_cnn", {"n_layers": 60}),
}


@pytest.mark.slow
@pytest.mark.parametrize("key", list(MODELS))
def test_every_step_is_done_or_skipped_with_a_reason(tmp_path, digits, key):
    if key == "vit-pytorch" and vp.vit_module() is None:
        pytest.skip("vit-pytorch is not installed (scripts/setup.sh --dev installs it)")
    ref, kwargs = MODELS[key]
    from shenjing.models.spec import resolve_factory

    torch.manual_seed(0)
    net = resolve_factory(ref)(**kwargs)
    net = im.quick_train(net, digits.train.x, digits.train.y, steps=60, lr=3e-3)
    weights = save_safetensors(net.state_dict(), tmp_path / f"{key}.safetensors")
    result = inspect_model(ref, weights, out=tmp_path / key, model_args=kwargs, **SIZES)
    summary = result.summary()
    statuses = {s.name: s.status for s in result.steps}
    assert set(statuses.values()) <= {"done", "skipped"}, summary
    assert all(s.detail for s in result.steps if s.status == "skipped"), summary
    assert statuses["hessian"] == "done", summary
    run = Run(tmp_path / key)
    assert run.stage("hessian")["top_eigenvalues"][0] > 0
    assert (run.path / "report.html").is_file()
    for name, status in statuses.items():
        if name != "report" and status == "skipped":
            assert run.stage(name)["status"] == "skipped" and run.stage(name)["reason"]
