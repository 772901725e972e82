"""The recurrent stage on a row_lstm trained on digits (once per module): the probe on h_t
knows the digit better at the last row than at the first, and better trained than untrained;
files, figures, record and report section; skipped for a model without recurrence; bad
input writes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import shenjing as sj
from shenjing import _io
from shenjing.analysis.recurrent import load_over_time
from shenjing.errors import LayerNotFoundError, NotApplicableError, UsageError
from shenjing.models import build_model
from shenjing.runs import Run
from shenjing.stages.recurrent import recurrent_stage

N = 300


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """row_lstm trained 4 epochs on digits (≈ 5 s), and the stage run on it once."""
    with torch.random.fork_rng(devices=[]):
        run = sj.train("row_lstm", "digits", epochs=4, run=tmp_path_factory.mktemp("rec") / "r",
                       progress=False, device="cpu")
        result = recurrent_stage(run, n=N, device="cpu")
    return run, result


def test_the_probe_knows_the_digit_at_the_last_row_and_better_after_training(trained):
    _, result = trained
    ot = result.result
    assert ot.epochs == (0, 4) and ot.n_steps == 8 and ot.saturation_epochs == (0, 1, 2, 3, 4)
    untrained, final = ot.curve(0), ot.curve(4)
    assert final[-1] > final[0] + 0.2          # rises from the first row to the last
    assert final[-1] > untrained[-1] + 0.03    # and training made the last step better
    assert final[-1] > 0.75
    assert ot.chance < 0.2 and ot.n_train == N and ot.n_test == N
    assert 1 <= ot.reach_step(4) <= 8
    assert ot.check().passed and ot.check().max_abs_error < 1e-5
    sat = ot.saturation
    assert sat.shape == (5, 2, 1, 2)
    assert sat[-1].sum() > sat[0].sum()      # gates saturate while training


def test_the_stage_writes_its_files_and_records_done_with_the_numbers(trained):
    run, result = trained
    stem = "recurrent-lstm"
    for kind in ("probe", "gates", "trajectories"):
        for ext in ("png", "svg"):
            assert (run.path / "figures" / f"{stem}-{kind}.{ext}").is_file()
    rec = _io.read_json(run.path / "recurrent" / f"{stem}.json")
    assert rec["layer"] == "lstm" and rec["module_type"] == "LSTM" and rec["n_steps"] == 8
    assert rec["figures"] == [f"figures/{stem}-{k}.{e}" for k in ("probe", "gates",
                                                                  "trajectories")
                              for e in ("png", "svg")]
    assert len(rec["test_indices"]) == N and rec["check"]["passed"] is True
    np.testing.assert_allclose(rec["probe"]["accuracy"], result.result.probe)
    back = load_over_time(result.json_path)
    np.testing.assert_array_equal(back.probe, result.result.probe)
    stage = run.stage("recurrent")
    assert stage["status"] == "done" and stage["layer"] == "lstm"
    assert stage["json"] == f"recurrent/{stem}.json"
    assert stage["probe_accuracy"]["4"][-1] == pytest.approx(result.result.curve(4)[-1])
    assert stage["check_passed"] is True and stage["check_max_abs_error"] < 1e-5
    assert set(stage["saturation"]["4"]) == {"input", "forget"}
    text = result.summary()
    assert "probe accuracy of h_t (top layer) at step 1 / 4 / 8:" in text
    assert "gate saturation (share of gate values < 0.1 | > 0.9" in text
    assert f"wrote {run.path / 'recurrent' / stem}.json" in text


def test_the_report_section_shows_the_figures_with_their_numbers(trained):
    from shenjing.report.blocks import Image, Table
    from shenjing.report.sections.recurrent import recurrent_section

    run, result = trained
    ot = result.result
    section = recurrent_section(Run(run.path))
    assert section is not None and section.id == "recurrent"
    images = [b for b in section.blocks if isinstance(b, Image)]
    assert len(images) == 3 and all(i.src.startswith("data:image/png") for i in images)
    probe, gates, paths = (i.caption for i in images)
    c0, c4 = ot.curve(0), ot.curve(4)
    assert f"epoch 4: {c4[0]:.3f} / {c4[3]:.3f} / {c4[7]:.3f}" in probe
    assert f"epoch 0: {c0[0]:.3f} / {c0[3]:.3f} / {c0[7]:.3f}" in probe
    assert f"Chance (most frequent class): {ot.chance:.3f}" in probe
    check = ot.check()
    assert f"differ by at most {check.max_abs_error:.2g}" in probe
    assert "input and forget gate values" in gates and "epoch 0: input" in gates
    assert "epoch 4: input" in gates.split("epoch 3")[-1]  # epochs in order, not as text
    assert "2-D PCA fitted on every step's state" in paths
    table = next(b for b in section.blocks if isinstance(b, Table))
    assert [r[0] for r in table.rows] == ["0", "4"]
    assert table.rows[1][3] == round(float(c4[7]), 3)


def test_a_model_without_recurrence_is_skipped_with_what_it_has(tmp_path):
    run = Run.create(tmp_path / "mlp", model={"name": "mlp", "input_shape": [1, 8, 8],
                                              "n_outputs": 10, "kwargs": {}},
                     data={"name": "digits", "seed": 0}, classes=[str(i) for i in range(10)])
    run.save_checkpoint(0, build_model("mlp", (1, 8, 8)))
    with pytest.raises(NotApplicableError, match=r"has no nn.LSTM, nn.GRU or nn.RNN layer; "
                       r"its layers are .*fc1 \(Linear\)"):
        recurrent_stage(run, n=50, device="cpu")
    stage = run.stage("recurrent")
    assert stage["status"] == "skipped" and "fc1 (Linear)" in stage["reason"]
    assert not (run.path / "recurrent").exists()


def test_bad_input_writes_nothing(trained, tmp_path):
    import shutil

    run = Run(shutil.copytree(trained[0].path, tmp_path / "copy"))
    before = (run.path / "run.json").read_bytes()
    shutil.rmtree(run.path / "recurrent")
    with pytest.raises(LayerNotFoundError, match="no layer 'lstn'.*Did you mean 'lstm'"):
        recurrent_stage(run, layer="lstn", n=50, device="cpu")
    with pytest.raises(UsageError, match="layer 'fc' is a Linear, not an nn.LSTM"):
        recurrent_stage(run, layer="fc", n=50, device="cpu")
    with pytest.raises(UsageError, match=r"--n 5: expected a whole number from 20 to 100000"):
        recurrent_stage(run, n=5)
    with pytest.raises(UsageError, match="no checkpoint for epoch 9"):
        recurrent_stage(run, epochs=(0, 9), n=50)
    assert (run.path / "run.json").read_bytes() == before
    assert not (run.path / "recurrent").exists()
