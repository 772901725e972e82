"""``shenjing attention`` in-process: printed lines, exit codes, one-line refusals that write
nothing, and the matrix fallback when the tokens form no patch grid."""

from __future__ import annotations

import pytest
import torch

from attention_view_models import ROW_SOURCE, TINY
from cli_invoke import invoke
from shenjing.models import build_model
from shenjing.plot.save import figure_formats
from shenjing.runs import Run


def make_run(path, model_spec, build):
    run = Run.create(path, model=model_spec, data={"name": "digits", "seed": 0},
                     classes=[str(i) for i in range(10)])
    torch.manual_seed(0)
    model = build(run)
    run.save_checkpoint(0, model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    run.save_checkpoint(1, model)
    return run


def zoo(path, name, kwargs=None):
    spec = {"name": name, "input_shape": [1, 8, 8], "n_outputs": 10,
            "kwargs": dict(kwargs or {})}
    return make_run(path, spec, lambda _: build_model(name, (1, 8, 8), 10, **(kwargs or {})))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention-cli")
    source = root / "row_attention.py"
    source.write_text(ROW_SOURCE)
    return {"vit": zoo(root / "vit", "vit", TINY), "mlp": zoo(root / "mlp", "mlp"),
            "rows": make_run(root / "rows", {"factory": f"{source}:RowAttention"},
                             lambda run: run.build_model())}


def attention_files(run):
    folder = run.path / "attention"
    files = sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []
    return files + sorted(p.name for p in run.figures_dir.glob("attention-*"))


def test_attention_prints_the_check_numbers_change_probe_and_files(runs, capsys):
    with figure_formats("png"):
        code, out, err = invoke(capsys, "attention", str(runs["vit"].path), "--samples", "2",
                                "--epochs", "0,final", "--n", "16", "--n-probe", "60",
                                "--device", "cpu")
    assert code == 0, err
    plan, *lines = out.splitlines()
    # the size comes first, before any capture (1 chosen + 16 test inputs, 60 train)
    assert plan.startswith("attention capture: 2 layer(s), "), plan
    assert " per input × (17 test + 60 train inputs) = " in plan, plan
    assert lines[0] == "2 attention layers × 2 heads: blocks.0.attn, blocks.1.attn"
    assert lines[1] == "17 tokens = 1 prefix (CLS) + 4×4 grid of 2×2-px patches"
    assert lines[2].startswith("epoch 0: pattern @ V vs the layers' real outputs: max error")
    assert lines[2].endswith("— passed")
    assert "epoch 1, mean over 16 test inputs:" in lines
    assert any(line.startswith("  blocks.1.attn: distance") for line in lines)
    assert any(line.startswith("heads epoch 0 → 1:") for line in lines)
    assert any(line.startswith("probe accuracy by layer, epoch 1 (train 60 → test 16")
               for line in lines)
    assert any(line.startswith("  CLS token: blocks.0.attn") for line in lines)
    assert any(line.endswith("figures/attention-maps-test2-e001.png") for line in lines)
    assert lines[-1].endswith("attention/summary.json")
    assert runs["vit"].stage("attention")["status"] == "done"


def test_no_attention_is_one_line_listing_what_the_model_has(runs, capsys):
    code, out, err = invoke(capsys, "attention", str(runs["mlp"].path), "--n", "8")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("NotApplicableError: MLP has no attention layer")
    assert "Linear ×2" in err
    assert runs["mlp"].stage("attention")["status"] == "skipped"
    assert attention_files(runs["mlp"]) == []


@pytest.mark.parametrize(("args", "starts"), [
    (["--layers", "head"], "LayerNotFoundError: 'head' is not an attention layer of ViT. Its "
                           "attention layers: blocks.0.attn, blocks.1.attn"),
    (["--samples", "0,450"], "UsageError: --samples 450: sample index 450 is out of range: "
                             "the test split of 'digits' has 450 samples"),
    (["--samples", "0,x"], "UsageError: --samples '0,x' must be positions in the test split"),
    (["--samples", ","], "UsageError: --samples ',' names nothing"),
    (["--n", "0"], "UsageError: --n 0: expected a whole number from 1"),
    (["--epochs", "0,9"], "EpochNotFoundError: run 'fresh' has no checkpoint for epoch 9"),
    (["--device", "tpu"], "UsageError: --device"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, starts):
    run = zoo(tmp_path / "fresh", "vit", TINY)
    before = (run.path / "run.json").read_bytes()
    code, out, err = invoke(capsys, "attention", str(run.path), "--n", "8", *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(starts), err
    assert (run.path / "run.json").read_bytes() == before
    assert attention_files(run) == []


def test_tokens_without_a_patch_grid_say_why_and_show_the_matrix(runs, capsys):
    with figure_formats("png"):
        code, out, err = invoke(capsys, "attention", str(runs["rows"].path), "--samples", "0",
                                "--n", "8", "--n-probe", "0", "--trust-code")
    assert code == 0, err
    assert ("9 tokens, no patch grid: 9 tokens do not form a patch grid of the 8×8 input: "
            "square patches tile it as 1, 4, 16 or 64 patches") in out
    assert "showing the query × key matrix instead of patch maps" in out
    assert "figures/attention-matrix-test0-e000.png" in out
    assert "attention-maps" not in out and ": distance" not in out  # no pixel positions
    assert "  attn: entropy" in out
