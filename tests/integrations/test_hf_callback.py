"""``ShenjingTrainerCallback``: a real ``transformers.Trainer`` training writes a run every
view reads, and its dynamics are our trainer's for the same model, data order, optimizer
and seed.

The ``Trainer`` needs ``accelerate`` (transformers' ``torch`` extra). Where it is missing,
the Trainer tests are skipped with that reason, and :func:`test_hook_order_replay_agrees`
still drives the callback through transformers' own ``CallbackHandler`` /
``TrainerState`` / ``TrainerControl`` and ``DefaultFlowCallback``, calling the events in
the order of the 5.x training loop (``Trainer._inner_training_loop``: on_train_begin,
per epoch on_epoch_begin, per step on_step_begin → backward → on_pre_optimizer_step →
``optimizer.step()`` → on_optimizer_step → on_step_end, then on_epoch_end and the epoch's
on_log, then on_train_end).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers", reason="the 'hf' extra is not installed")

from same_order import (  # noqa: E402
    BATCH,
    EPOCHS,
    LR,
    SEED,
    TrainerBatches,
    TrainerOrder,
    compare_dynamics,
    same_init_mlp,
)

import shenjing as sj  # noqa: E402
from cli_invoke import invoke  # noqa: E402
from shenjing.errors import UsageError  # noqa: E402
from shenjing.integrations.hf import ShenjingTrainerCallback  # noqa: E402
from shenjing.models import model_spec  # noqa: E402

#: the largest relative difference allowed between the two runs' per-layer numbers (same
#: float32 operations; measured ≤ 1e-6)
TOLERANCE = 1e-5

try:
    import accelerate  # noqa: F401
    HAS_ACCELERATE = True
except ImportError:
    HAS_ACCELERATE = False
needs_trainer = pytest.mark.skipif(
    not HAS_ACCELERATE, reason="transformers.Trainer needs accelerate, not installed "
    "(pip install 'transformers[torch]'); the hook-order replay test still runs")


class Samples(torch.utils.data.Dataset):
    """digits as the dicts a Trainer feeds a model: ``model(x=…, labels=…)``."""

    def __init__(self, split):
        self.x, self.y = split.x, split.y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class OurOrderTrainer(transformers.Trainer):
    """The Trainer, shuffling as ``shenjing.train`` does (its sampler is the only change)."""

    def _get_train_sampler(self, train_dataset=None):
        return TrainerOrder(len(self.train_dataset))


def _mean_ce(outputs, labels, num_items_in_batch=None):
    return F.cross_entropy(outputs, labels)


def _train(data, net, run, tmp, *, epochs=EPOCHS, **options):
    args = transformers.TrainingArguments(
        output_dir=str(tmp / "hf-out"), num_train_epochs=epochs,
        per_device_train_batch_size=BATCH, learning_rate=LR, lr_scheduler_type="constant",
        max_grad_norm=0.0, weight_decay=0.0, logging_strategy="epoch", save_strategy="no",
        report_to="none", use_cpu=True, seed=SEED, dataloader_num_workers=0,
        disable_tqdm=True, remove_unused_columns=False)
    spec = model_spec("mlp", data.input_shape, data.output_dim)
    cb = ShenjingTrainerCallback(run=run, data=data, model_spec=spec, seed=SEED, **options)
    trainer = OurOrderTrainer(
        model=net, args=args, train_dataset=Samples(data.train), callbacks=[cb],
        optimizers=(torch.optim.Adam(net.parameters(), lr=LR), None),
        compute_loss_func=_mean_ce)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    data = sj.load_dataset("digits", seed=SEED)
    return sj.train("mlp", data, epochs=EPOCHS, run=tmp_path_factory.mktemp("o") / "ours",
                    seed=SEED, batch_size=BATCH, lr=LR, optimizer="adam", progress=False)


def _replay(data, net, run, tmp):
    """The Trainer's event order, with transformers' own handler, state and control."""
    from transformers.trainer_callback import (
        CallbackHandler,
        DefaultFlowCallback,
        TrainerControl,
        TrainerState,
    )
    from transformers.trainer_utils import IntervalStrategy, SaveStrategy

    # TrainingArguments itself needs accelerate: the fields the loop and callbacks read
    args = SimpleNamespace(
        num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH, learning_rate=LR,
        lr_scheduler_type="constant", max_grad_norm=0.0, gradient_accumulation_steps=1,
        logging_strategy=IntervalStrategy.EPOCH, logging_first_step=False,
        eval_strategy=IntervalStrategy.NO, save_strategy=SaveStrategy.NO, eval_delay=0)
    spec = model_spec("mlp", data.input_shape, data.output_dim)
    cb = ShenjingTrainerCallback(run=run, data=data, model_spec=spec, seed=SEED)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    handler = CallbackHandler([DefaultFlowCallback(), cb], net, None, opt, None)
    batches = TrainerBatches(len(data.train))
    state, control = TrainerState(), TrainerControl()
    state.max_steps = EPOCHS * len(batches)
    control = handler.on_train_begin(args, state, control)
    net.train()
    for _ in range(EPOCHS):
        control = handler.on_epoch_begin(args, state, control)
        tr_loss, last = 0.0, state.global_step
        for idx in batches:
            control = handler.on_step_begin(args, state, control)
            loss = F.cross_entropy(net(data.train.x[idx]), data.train.y[idx])
            loss.backward()
            control = handler.on_pre_optimizer_step(args, state, control)
            opt.step()
            control = handler.on_optimizer_step(args, state, control)
            net.zero_grad()
            state.global_step += 1
            tr_loss += float(loss.detach())
            control = handler.on_step_end(args, state, control)
        control = handler.on_epoch_end(args, state, control)
        if control.should_log:
            control = handler.on_log(args, state, control,
                                     {"loss": tr_loss / (state.global_step - last)})
            control.should_log = False
    handler.on_train_end(args, state, control)


def test_hook_order_replay_agrees_with_our_trainer(ours, tmp_path):
    data = sj.load_dataset("digits", seed=SEED)
    _replay(data, same_init_mlp(data), tmp_path / "replay", tmp_path)
    run = sj.Run(tmp_path / "replay")
    assert run.epochs == [0, 1, 2] and run.stage("train")["status"] == "done"
    worst = compare_dynamics(ours.metrics(), run.metrics())
    print("transformers hook replay vs shenjing.train, largest relative difference:", worst)
    assert max(worst.values()) <= TOLERANCE, worst
    for a, b in zip(ours.metrics()[1:], run.metrics()[1:], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.02)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ours):
    if not HAS_ACCELERATE:
        pytest.skip("transformers.Trainer needs accelerate, not installed")
    torch.set_num_threads(1)
    data = sj.load_dataset("digits", seed=SEED)
    root = tmp_path_factory.mktemp("hf")
    _train(data, same_init_mlp(data), root / "hf", root)
    return root / "hf", ours


def test_run_has_every_epoch_and_agrees_with_our_trainer(runs):
    hf_path, ours = runs
    run = sj.Run(hf_path)
    assert run.epochs == [0, 1, 2]
    assert run.stage("train")["status"] == "done"
    theirs, mine = run.metrics(), ours.metrics()
    worst = compare_dynamics(mine, theirs)
    print("transformers vs shenjing.train, largest relative difference:", worst)
    assert max(worst.values()) <= TOLERANCE, worst
    assert theirs[2]["layers"]["fc1"]["grad_norm"] > 0
    # the logged loss is the mean over the epoch's steps; ours weighs the last, smaller
    # batch by its size: equal to within that batch's share
    for a, b in zip(mine[1:], theirs[1:], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.02)
        assert b["train_accuracy"] is None
    for k, v in ours.state_dict(2).items():
        torch.testing.assert_close(run.state_dict(2)[k], v, rtol=TOLERANCE, atol=1e-7)
    assert run.manifest["config"]["grad_norm"].startswith("after AMP unscaling, after clip")


def test_report_and_dynamics_views_work_on_the_run(runs, capsys):
    hf_path, _ = runs
    code, out, err = invoke(capsys, "dynamics", str(hf_path))
    assert code == 0, err
    assert "epochs 0…2, 4 parameter groups" in out
    assert (hf_path / "figures" / "dynamics-layers.png").is_file()
    # the weights view's numbers are the checkpoints' own
    import json

    stats = json.loads((hf_path / "dynamics" / "weights.json").read_text())["stats"]["fc1"]
    for epoch in (0, 1, 2):
        w = sj.Run(hf_path).state_dict(epoch)["fc1.weight"]
        assert stats["norm"][epoch] == pytest.approx(float(w.double().norm()), rel=1e-6)
    code, _out, err = invoke(capsys, "report", str(hf_path))
    assert code == 0, err
    html = (hf_path / "report.html").read_text(encoding="utf-8")
    assert "fc1" in html and "update" in html.lower()


@needs_trainer
def test_a_vit_with_model_output_is_recorded(tmp_path):
    """A transformers model returning a ``ModelOutput``: evaluated on its logits, and the
    Trainer still gets its loss (the model is given back its own class after each epoch)."""
    data = sj.load_dataset("digits", seed=SEED)
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
                                    num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=16, num_labels=10)
    torch.manual_seed(SEED)
    vit = transformers.ViTForImageClassification(config)

    class Pixels(Samples):
        def __getitem__(self, i):
            return {"pixel_values": self.x[i], "labels": self.y[i]}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=64,
        learning_rate=1e-3, save_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, logging_strategy="epoch")
    cb = ShenjingTrainerCallback(run=tmp_path / "vit", data=data)
    transformers.Trainer(model=vit, args=args, train_dataset=Pixels(data.train),
                         callbacks=[cb]).train()
    assert type(vit) is transformers.ViTForImageClassification
    run = sj.Run(tmp_path / "vit")
    last = run.metrics()[-1]
    assert run.epochs == [0, 1] and last["test_accuracy"] > 0.1
    assert "vit.layers.0.attention.q_proj" in last["layers"]  # transformers 5 names
    assert last["train_loss"] > 0


def test_a_run_of_another_model_is_refused_before_anything_is_written(runs, tmp_path):
    hf_path, _ = runs
    before = {p: p.stat().st_mtime_ns for p in hf_path.rglob("*")}
    data = sj.load_dataset("digits", seed=SEED)
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(UsageError, match=r"belongs to another model \(mlp.*this training "
                                         r"records Sequential; pass a new run= folder"):
        _train(data, other, hf_path, tmp_path, epochs=1)
    assert {p: p.stat().st_mtime_ns for p in hf_path.rglob("*")} == before


def test_replay_run_of_another_model_is_refused_before_anything_is_written(ours, tmp_path):
    """The check runs in on_train_begin, before the Trainer's first step (no Trainer
    needed to see it)."""
    from transformers.trainer_callback import TrainerControl, TrainerState

    data = sj.load_dataset("digits", seed=SEED)
    before = {p: p.stat().st_mtime_ns for p in ours.path.rglob("*")}
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    cb = ShenjingTrainerCallback(run=ours.path, data=data)
    args = SimpleNamespace(num_train_epochs=1, per_device_train_batch_size=8,
                           learning_rate=1e-3, gradient_accumulation_steps=1,
                           max_grad_norm=1.0, lr_scheduler_type="linear")
    with pytest.raises(UsageError, match=r"belongs to another model \(mlp; it has tensor "
                                         r"'fc1.bias', which Sequential lacks\).*records "
                                         r"Sequential; pass a new run= folder"):
        cb.on_train_begin(args, TrainerState(), TrainerControl(), model=other, optimizer=None)
    assert {p: p.stat().st_mtime_ns for p in ours.path.rglob("*")} == before
    assert not (ours.path / ".lock").exists()


def test_replay_with_a_vit_evaluates_its_logits_and_gives_its_class_back(tmp_path):
    """A transformers model returning a ``ModelOutput``, through the Trainer's event order:
    evaluated on its logits, and between epochs it is its own class again (the training
    loop gets ``.loss`` from it)."""
    from transformers.trainer_callback import CallbackHandler, TrainerControl, TrainerState
    from transformers.trainer_utils import IntervalStrategy

    data = sj.load_dataset("digits", seed=SEED)
    config = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16,
                                    num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=16, num_labels=10)
    torch.manual_seed(SEED)
    vit = transformers.ViTForImageClassification(config)
    opt = torch.optim.Adam(vit.parameters(), lr=3e-3)
    cb = ShenjingTrainerCallback(run=tmp_path / "vit", data=data)
    handler = CallbackHandler([cb], vit, None, opt, None)
    args = SimpleNamespace(num_train_epochs=1, per_device_train_batch_size=64,
                           learning_rate=3e-3, gradient_accumulation_steps=1,
                           max_grad_norm=0.0, lr_scheduler_type="constant",
                           logging_strategy=IntervalStrategy.STEPS)
    state, control = TrainerState(), TrainerControl()
    handler.on_train_begin(args, state, control)
    assert type(vit) is transformers.ViTForImageClassification
    vit.train()
    for epoch in range(2):
        handler.on_epoch_begin(args, state, control)
        for start in range(0, 640, 64):
            out = vit(pixel_values=data.train.x[start:start + 64],
                      labels=data.train.y[start:start + 64])
            out.loss.backward()
            handler.on_pre_optimizer_step(args, state, control)
            opt.step()
            vit.zero_grad()
            state.global_step += 1
            handler.on_log(args, state, control, {"loss": float(out.loss.detach())})
        handler.on_epoch_end(args, state, control)
        assert type(vit) is transformers.ViTForImageClassification, epoch
    handler.on_train_end(args, state, control)
    run = sj.Run(tmp_path / "vit")
    assert run.epochs == [0, 1, 2]
    last = run.metrics()[-1]
    with torch.no_grad():
        logits = vit.eval()(pixel_values=data.test.x).logits
    assert last["test_loss"] == pytest.approx(float(F.cross_entropy(logits, data.test.y)),
                                              rel=1e-5)
    assert "vit.layers.0.attention.q_proj" in last["layers"]
    assert last["layers"]["classifier"]["grad_norm"] > 0 and last["train_loss"] > 0
