"""``ShenjingCallback``: a real Lightning training writes a run every view reads, and its
dynamics are our trainer's for the same model, data order, optimizer and seed."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

L = pytest.importorskip("lightning.pytorch", reason="the 'lightning' extra is not installed")

from same_order import (  # noqa: E402
    BATCH,
    EPOCHS,
    LR,
    SEED,
    TrainerBatches,
    compare_dynamics,
    same_init_mlp,
)

import shenjing as sj  # noqa: E402
from cli_invoke import invoke  # noqa: E402
from shenjing.errors import UsageError  # noqa: E402
from shenjing.integrations.lightning import ShenjingCallback  # noqa: E402
from shenjing.models import model_spec  # noqa: E402

#: the largest relative difference allowed between the two runs' numbers: both do the same
#: float32 operations, so they agree to rounding (measured ≤ 5e-7, update_ratio)
TOLERANCE = 1e-5


class LitMLP(L.LightningModule):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, y), "logits": logits.detach()}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=LR)


def _loader(data):
    ds = torch.utils.data.TensorDataset(data.train.x, data.train.y)
    return torch.utils.data.DataLoader(ds, batch_sampler=TrainerBatches(len(ds)))


def _fit(data, run, **options):
    net = same_init_mlp(data)
    spec = model_spec("mlp", data.input_shape, data.output_dim)
    cb = ShenjingCallback(run=run, data=data, model="net", model_spec=spec, seed=SEED,
                          **options)
    trainer = L.Trainer(max_epochs=EPOCHS, callbacks=[cb], accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False,
                        num_sanity_val_steps=0)
    trainer.fit(LitMLP(net), _loader(data))
    return net


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    data = sj.load_dataset("digits", seed=SEED)
    root = tmp_path_factory.mktemp("lightning")
    _fit(data, root / "lit")
    ours = sj.train("mlp", data, epochs=EPOCHS, run=root / "ours", seed=SEED,
                    batch_size=BATCH, lr=LR, optimizer="adam", progress=False)
    return root / "lit", ours


def test_run_has_every_epoch_and_agrees_with_our_trainer(runs):
    lit_path, ours = runs
    lit = sj.Run(lit_path)
    assert lit.epochs == [0, 1, 2]
    assert lit.stage("train")["status"] == "done"
    assert (lit_path / "layers.json").is_file()
    theirs = lit.metrics()
    mine = ours.metrics()
    worst = compare_dynamics(mine, theirs)
    print("lightning vs shenjing.train, largest relative difference:", worst)
    assert max(worst.values()) <= TOLERANCE, worst
    # the per-layer numbers exist and moved: a real training, not a copy of epoch 0
    assert theirs[2]["layers"]["fc1"]["grad_norm"] > 0
    assert theirs[2]["layers"]["fc1"]["update_ratio"] > 0
    # training loss and accuracy from training_step's dict, weighted by batch size
    for a, b in zip(mine[1:], theirs[1:], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=TOLERANCE)
        assert b["train_accuracy"] == pytest.approx(a["train_accuracy"], rel=TOLERANCE)
    # the checkpoints are the same weights
    for epoch in (0, 2):
        for k, v in ours.state_dict(epoch).items():
            torch.testing.assert_close(lit.state_dict(epoch)[k], v, rtol=TOLERANCE, atol=1e-7)
    assert lit.manifest["config"]["grad_norm"].startswith("after AMP unscaling, before")


def test_report_and_dynamics_views_work_on_the_run(runs, capsys):
    lit_path, _ = runs
    code, out, err = invoke(capsys, "dynamics", str(lit_path))
    assert code == 0, err
    assert "epochs 0…2, 4 parameter groups" in out
    assert (lit_path / "figures" / "dynamics-layers.png").is_file()
    # the weights view's numbers are the checkpoints' own
    stats = json.loads((lit_path / "dynamics" / "weights.json").read_text())["stats"]["fc1"]
    for epoch in (0, 1, 2):
        w = sj.Run(lit_path).state_dict(epoch)["fc1.weight"]
        assert stats["norm"][epoch] == pytest.approx(float(w.double().norm()), rel=1e-6)
    code, _out, err = invoke(capsys, "report", str(lit_path))
    assert code == 0, err
    html = (lit_path / "report.html").read_text(encoding="utf-8")
    assert "fc1" in html and "MLP" in html
    last = sj.Run(lit_path).metrics()[-1]
    assert f"{last['test_accuracy']:.3f}"[:4] in html or \
        f"{100 * last['test_accuracy']:.1f}" in html
    assert json.loads((lit_path / "run.json").read_text())["stages"]["report"]["status"] == "done"


def test_a_run_of_another_model_is_refused_before_anything_is_written(runs, tmp_path):
    lit_path, _ = runs
    before = {p: p.stat().st_mtime_ns for p in lit_path.rglob("*")}

    class Other(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = sj.load_dataset("digits", seed=SEED)
    cb = ShenjingCallback(run=lit_path, data=data)
    trainer = L.Trainer(max_epochs=1, callbacks=[cb], logger=False, accelerator="cpu",
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    with pytest.raises(UsageError, match=r"belongs to another model \(mlp.*this training "
                                         r"records Other; pass a new run= folder"):
        trainer.fit(Other(), _loader(data))
    assert {p: p.stat().st_mtime_ns for p in lit_path.rglob("*")} == before
    assert not (lit_path / ".lock").exists()


def test_no_held_out_data_is_refused(tmp_path):
    data = sj.load_dataset("digits", seed=SEED)
    cb = ShenjingCallback(run=tmp_path / "r")
    trainer = L.Trainer(max_epochs=1, callbacks=[cb], logger=False, accelerator="cpu",
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    with pytest.raises(UsageError, match="needs held-out data.*pass data="):
        trainer.fit(LitMLP(same_init_mlp(data)), _loader(data))
    assert not (tmp_path / "r").exists()


def test_gradient_norms_are_taken_before_clipping(runs, tmp_path):
    """Lightning clips after on_before_optimizer_step: with every step's total gradient
    clipped to 1e-4, the recorded per-layer norms are still the unclipped ones, the same
    as the unclipped run's first epoch."""
    data = sj.load_dataset("digits", seed=SEED)
    net = same_init_mlp(data)
    cb = ShenjingCallback(run=tmp_path / "clip", data=data, model="net", seed=SEED)
    trainer = L.Trainer(max_epochs=1, callbacks=[cb], accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False,
                        gradient_clip_val=1e-4, gradient_clip_algorithm="norm")
    trainer.fit(LitMLP(net), _loader(data))
    clipped = sj.Run(tmp_path / "clip").metrics()[1]["layers"]
    unclipped = sj.Run(runs[0]).metrics()[1]["layers"]
    # the first step is identical in both runs; later steps differ (clipped updates)
    assert clipped["fc1"]["grad_norm"] > 100 * 1e-4
    assert clipped["fc1"]["grad_norm"] == pytest.approx(unclipped["fc1"]["grad_norm"], rel=0.5)
    # (Adam divides by the gradients' running RMS, so clipping hardly changes its steps:
    # the weights moved about as far, and the gradients stayed of the same size)


@pytest.mark.gpu
def test_gradient_norms_are_unscaled_under_16_bit_amp(runs, tmp_path):
    """Under precision='16-mixed' Lightning unscales before on_before_optimizer_step: the
    recorded norms are the fp32 run's size, not ×65536 (the GradScaler's initial scale)."""
    data = sj.load_dataset("digits", seed=SEED)
    net = same_init_mlp(data)
    cb = ShenjingCallback(run=tmp_path / "amp", data=data, model="net", seed=SEED)
    trainer = L.Trainer(max_epochs=1, callbacks=[cb], accelerator="gpu", devices=1,
                        precision="16-mixed", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False)
    trainer.fit(LitMLP(net), _loader(data))
    amp = sj.Run(tmp_path / "amp").metrics()[1]["layers"]["fc1"]["grad_norm"]
    fp32 = sj.Run(runs[0]).metrics()[1]["layers"]["fc1"]["grad_norm"]
    assert amp == pytest.approx(fp32, rel=0.2)


def test_the_same_models_run_needs_overwrite_and_is_then_replaced_whole(runs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs[0], copy)
    data = sj.load_dataset("digits", seed=SEED)

    def fit(**options):
        cb = ShenjingCallback(run=copy, data=data, model="net", seed=SEED, **options)
        trainer = L.Trainer(max_epochs=1, callbacks=[cb], accelerator="cpu", logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, use_distributed_sampler=False)
        trainer.fit(LitMLP(same_init_mlp(data)), _loader(data))

    with pytest.raises(UsageError, match=r"already holds a run of mlp; pass a new run= "
                                         r"folder, or overwrite=True"):
        fit()
    assert sj.Run(copy).epochs == [0, 1, 2]
    fit(overwrite=True)
    assert sj.Run(copy).epochs == [0, 1]  # the earlier run's epoch 2 is gone with it
    assert [r["epoch"] for r in sj.Run(copy).metrics()] == [0, 1]
