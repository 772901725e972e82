"""Stage ``attention`` on a tiny trained zoo ViT run on digits: files, numbers, record and
report section; a model without attention is recorded skipped; bad input writes nothing; a
token count without a patch grid falls back to the matrix view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attention_view_models import ROW_SOURCE, TINY
from shenjing import _io
from shenjing.errors import (
    EpochNotFoundError,
    LayerNotFoundError,
    NotApplicableError,
    ResourceError,
    UsageError,
)
from shenjing.hooks import count_hooks
from shenjing.models import build_model
from shenjing.plot.save import figure_formats
from shenjing.runs import Run
from shenjing.stages.attention import attention_stage


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    return model


def zoo_run(path, name, kwargs=None):
    """A run of zoo model ``name`` on digits with checkpoints 0 (fresh) and 1 (perturbed)."""
    run = Run.create(path, model={"name": name, "input_shape": [1, 8, 8], "n_outputs": 10,
                                  "kwargs": dict(kwargs or {})},
                     data={"name": "digits", "seed": 0}, classes=[str(i) for i in range(10)])
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), 10, **(kwargs or {}))
    run.save_checkpoint(0, model)
    run.save_checkpoint(1, perturbed(model, 1))
    return run


def written(run):
    """The run's attention files and figures (nothing else a stage writes)."""
    found = sorted(p.name for p in (run.path / "attention").glob("*")) \
        if (run.path / "attention").is_dir() else []
    return found + sorted(p.name for p in run.figures_dir.glob("attention-*"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch zoo ViT run on digits and one stage call on it (models built by the stage
    kept, to check their hooks)."""
    from shenjing.training import train

    run = train("vit", "digits", epochs=2, run=tmp_path_factory.mktemp("vit") / "run",
                progress=False, model_kwargs=TINY)
    built = []
    original = Run.model

    def keep(self, *args, **kwargs):
        built.append(original(self, *args, **kwargs))
        return built[-1]

    with pytest.MonkeyPatch.context() as mp, figure_formats("png"):
        mp.setattr(Run, "model", keep)
        result = attention_stage(run, samples=(3,), n=48, n_probe=150, device="cpu")
    return run, result, built


def test_the_stage_writes_its_files_and_records_done_with_the_numbers(trained):
    run, _, built = trained
    assert written(run) == [
        "attention-e000.json", "attention-e000.npz", "attention-e002.json",
        "attention-e002.npz", "summary.json",
        "attention-distance.png", "attention-entropy.png", "attention-maps-test3-e000.png",
        "attention-maps-test3-e002.png", "attention-matrix-test3-e000.png",
        "attention-matrix-test3-e002.png", "attention-probe.png", "attention-rollout-test3.png"]
    rec = run.stage("attention")
    assert rec["status"] == "done" and rec["epochs"] == [0, 2]
    assert rec["layers"] == ["blocks.0.attn", "blocks.1.attn"] and rec["heads"] == 2
    assert rec["grid"] and rec["layout"] == ("17 tokens = 1 prefix (CLS) + 4×4 grid of "
                                             "2×2-px patches")
    assert rec["check_passed"] and 0 <= rec["check_max_error"] < 1e-4
    assert rec["check_tolerance"] == pytest.approx(1e-5)
    assert len(rec["changed_most"]) == 3 and "px (" in rec["changed_most"][0]
    assert set(rec["probe_by_layer"]) == {"0", "2"}
    assert len(rec["distance_by_layer"]["2"]) == 2
    summary = _io.read_json(run.path / "attention" / "summary.json")
    assert summary["change"]["epochs"] == [0, 2]
    assert np.shape(summary["stats"]["2"]["distance"]) == (2, 2)
    assert summary["options"]["n"] == 48 and summary["options"]["n_probe"] == 150
    assert "figures/attention-rollout-test3.png" in summary["figures"]
    assert all(count_hooks(m) == 0 for m in built) and len(built) == 2


def test_the_saved_patterns_equal_an_explicit_computation(trained):
    run, result, _ = trained
    model = run.model(2)
    x = run.data.test.x[3:4]
    with torch.no_grad():
        h = torch.cat([model.cls_token, model.patch_embed(x).flatten(2).transpose(1, 2)], 1)
        h = h + model.pos_embed
        expected = []
        for block in model.blocks:
            z = block.norm1(h)
            q, k, _ = block.attn.qkv(z).reshape(1, 17, 3, 2, 8).permute(2, 0, 3, 1, 4)
            expected.append(torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, -1))
            h = block(h)
    with np.load(run.path / "attention" / "attention-e002.npz") as z:
        patterns, maps, images = z["patterns"], z["maps"], z["images"]
    np.testing.assert_allclose(patterns[0], torch.cat(expected).numpy(), atol=1e-5)
    np.testing.assert_allclose(patterns.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(maps[0], patterns[0, :, :, 0, 1:].reshape(2, 2, 4, 4),
                               atol=1e-7)
    np.testing.assert_allclose(images[0], x[0].numpy())
    # the result in memory is what was written
    np.testing.assert_allclose(result.study.epochs[-1].patterns, patterns, atol=1e-7)


def test_the_summary_lines_carry_check_distances_change_probe_and_files(trained):
    _, result, _ = trained
    text = result.summary()
    assert "2 attention layers × 2 heads: blocks.0.attn, blocks.1.attn" in text
    assert "epoch 2: pattern @ V vs the layers' real outputs: max error" in text
    assert "blocks.1.attn: distance" in text and "nats" in text
    assert "heads epoch 0 → 2:" in text and "in distance;" in text and "changed most (" in text
    assert "probe accuracy by layer, epoch 2 (train 150 → test 48" in text
    assert "CLS token: blocks.0.attn" in text and "mean patch token:" in text
    assert "wrote " in text and "summary.json" in text


def test_the_report_section_shows_the_figures_with_their_numbers(trained):
    from shenjing.report.blocks import Image, Table
    from shenjing.report.sections.attention import attention_section

    run, result, _ = trained
    section = attention_section(run)
    assert section is not None and section.title == "Attention"
    images = [b for b in section.blocks if isinstance(b, Image)]
    assert len(images) == 8 and all(b.src.startswith("data:image/png") for b in images)
    captions = {b.alt: b.caption for b in images}
    study = result.study
    maps = captions["attention-maps-test3-e002"]
    assert "CLS token to every patch" in maps and "epoch 2" in maps
    d = study.epochs[-1].stats.distance.mean(1)
    assert f"blocks.0.attn {d[0]:.2f} px" in maps
    dist = captions["attention-distance"]
    top = study.change.top(1)[0]
    assert f"{top['layer']} head {top['head']} {top['distance_before']:.2f} → " in dist
    assert "in distance;" in dist and "in entropy" in dist
    probe = captions["attention-probe"]
    acc = study.epochs[-1].probe.accuracy["cls"][1]
    assert "epoch 2, CLS token: blocks.0.attn" in probe and f"{acc:.1%}" in probe
    assert "17 tokens" in captions["attention-matrix-test3-e000"]
    assert any(isinstance(b, Table) for b in section.blocks)
    assert "tolerance 1.0e-05" in section.blocks[-1].text


def test_a_model_without_attention_is_recorded_skipped(tmp_path):
    run = zoo_run(tmp_path / "mlp", "mlp")
    with pytest.raises(NotApplicableError) as info:
        attention_stage(run, n=8, n_probe=0, device="cpu")
    rec = run.stage("attention")
    assert rec["status"] == "skipped" and rec["reason"] == str(info.value)
    assert "Linear" in str(info.value)  # lists what the model has
    assert written(run) == []


@pytest.fixture(scope="module")
def fresh_vit(tmp_path_factory):
    return zoo_run(tmp_path_factory.mktemp("fresh") / "vit", "vit", TINY)


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"layers": ["head"]}, LayerNotFoundError, "blocks.0.attn"),
    ({"samples": (0, 5000)}, UsageError,
     r"--samples 5000: sample index 5000 is out of range: the test split of 'digits' has "
     r"450 samples; give indices from 0 to 449, e.g. --samples 0,1"),
    ({"samples": ()}, UsageError, "names no input"),
    ({"samples": tuple(range(9))}, UsageError, "at most 8"),
    ({"n": 0}, UsageError, "--n 0: expected a whole number from 1"),
    ({"n_probe": -1}, UsageError, "--n-probe -1"),
    ({"epochs": (0, 7)}, EpochNotFoundError, "no checkpoint for epoch 7"),
    ({"device": "tpu"}, UsageError, "--device"),
])
def test_bad_input_is_refused_and_writes_nothing(fresh_vit, options, error, match):
    before = (fresh_vit.path / "run.json").read_bytes()
    with pytest.raises(error, match=match):
        attention_stage(fresh_vit, **{"n": 8, "n_probe": 0, **options})
    assert (fresh_vit.path / "run.json").read_bytes() == before
    assert written(fresh_vit) == []


def test_too_little_memory_is_refused_before_anything_is_written(fresh_vit, monkeypatch):
    import shenjing.capture.dataset as dataset

    monkeypatch.setattr(dataset, "memory_budget", lambda max_memory=None: 1000)
    before = (fresh_vit.path / "run.json").read_bytes()
    with pytest.raises(ResourceError, match="reduce --n, --n-probe or the --layers"):
        attention_stage(fresh_vit, n=8, n_probe=0, device="cpu")
    assert (fresh_vit.path / "run.json").read_bytes() == before
    assert written(fresh_vit) == []


def test_tokens_without_a_patch_grid_fall_back_to_the_matrix_view(tmp_path):
    source = tmp_path / "row_attention.py"
    source.write_text(ROW_SOURCE)
    run = Run.create(tmp_path / "run", model={"factory": f"{source}:RowAttention"},
                     data={"name": "digits", "seed": 0}, classes=[str(i) for i in range(10)])
    torch.manual_seed(0)
    model = run.build_model()
    run.save_checkpoint(0, model)
    run.save_checkpoint(1, perturbed(model, 2))
    with figure_formats("png"):
        result = attention_stage(Run(run.path, trust_code=True), samples=(0,), n=16,
                                 n_probe=0, device="cpu")
    assert written(run)[-3:] == ["attention-entropy.png", "attention-matrix-test0-e000.png",
                                 "attention-matrix-test0-e001.png"]
    rec = run.stage("attention")
    assert rec["status"] == "done" and not rec["grid"]
    assert rec["grid_reason"].startswith("9 tokens do not form a patch grid of the 8×8 input")
    text = result.summary()
    assert "9 tokens, no patch grid: 9 tokens do not form a patch grid" in text
    assert "showing the query × key matrix instead" in text
    assert "changed most (|Δ entropy| / 2.20 nats)" in text
    assert result.study.epochs[0].kinds == ("multihead",)
    assert result.study.passed

    from shenjing.report.blocks import Note
    from shenjing.report.sections.attention import attention_section

    section = attention_section(run)
    notes = [b.text for b in section.blocks if isinstance(b, Note)]
    assert any("form no patch grid" in t and "9 tokens do not form" in t for t in notes)


def test_a_forward_that_raises_fails_the_stage_and_leaves_no_hook(tmp_path, monkeypatch):
    run = zoo_run(tmp_path / "vit", "vit", TINY)
    built = []
    original = Run.model

    def breaking(self, *args, **kwargs):
        model = original(self, *args, **kwargs)

        def boom(h):
            raise RuntimeError("block 1 broke")

        model.blocks[1].forward = boom
        built.append(model)
        return model

    monkeypatch.setattr(Run, "model", breaking)
    with pytest.raises(RuntimeError, match="block 1 broke"):
        attention_stage(run, n=8, n_probe=0, device="cpu")
    assert run.stage("attention")["status"] == "failed"
    assert "block 1 broke" in run.stage("attention")["error"]
    assert built and all(count_hooks(m) == 0 for m in built)
    assert written(run) == []
