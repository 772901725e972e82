"""Stages ``capture`` and ``embed`` on a small trained digits run: the files and their keys."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from shenjing.capture import Activations
from shenjing.errors import EpochNotFoundError, LayerNotFoundError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from shenjing.training import train

    return train("mlp", "digits", epochs=2, run=tmp_path_factory.mktemp("r") / "mlp",
                 progress=False)


def test_capture_stage_writes_mmap_npy_with_indices_and_labels(run):
    from shenjing.stages.capture import capture_stage

    res = capture_stage(run, ["relu1", "fc2"], epoch=2, n=100, verbose=False)
    path = run.path / "activations" / "relu1" / "epoch-002-n100.npy"
    assert res.paths["relu1"] == path and res.stem == "epoch-002-n100"
    arr = np.load(path, mmap_mode="r")
    assert arr.shape == (100, 128) and (arr >= 0).all()
    acts = Activations.load(run.activations_dir, "epoch-002-n100")
    assert sorted(acts) == ["fc2", "relu1"]
    assert acts.info["relu1"]["epoch"] == 2 and acts.info["relu1"]["type"] == "ReLU"
    assert acts.info["relu1"]["subset"] == 100 and acts.info["relu1"]["subset_seed"] == 0
    sub = run.data.test.subset(100, seed=0)
    np.testing.assert_array_equal(acts.indices, sub.indices.numpy())
    np.testing.assert_array_equal(acts.labels, sub.y.numpy())
    assert run.stage("capture")["status"] == "done"
    assert "activations/relu1/epoch-002-n100.npy" in run.stage("capture")["files"]


def test_captures_with_other_settings_never_replace_each_other(run):
    """Issue 13 item 5: `--split train` replaced the `--split test` capture of the same
    epoch (relu3 went from (450, 128) to (1347, 128)). Split, subset, seed and dtype are in
    the name now; each capture keeps its own rows, indices and labels."""
    from shenjing.stages.capture import capture_stage

    settings = [dict(), dict(split="train"), dict(n=50), dict(n=50, seed=1),
                dict(dtype="float16")]
    results = [capture_stage(run, ["relu1"], epoch=1, verbose=False, **kw) for kw in settings]
    paths = [r.paths["relu1"] for r in results]
    assert len(set(paths)) == len(settings), paths
    assert [p.name for p in paths] == ["epoch-001.npy", "epoch-001-train.npy",
                                       "epoch-001-n50.npy", "epoch-001-n50-seed1.npy",
                                       "epoch-001-float16.npy"]
    n_test, n_train = len(run.data.test), len(run.data.train)
    expected = [(n_test, "test", None, np.float32), (n_train, "train", None, np.float32),
                (50, "test", 0, np.float32), (50, "test", 1, np.float32),
                (n_test, "test", None, np.float16)]
    model = run.model(1)
    for res, (rows, split, seed, dtype) in zip(results, expected, strict=True):
        acts = Activations.load(run.activations_dir, res.stem)  # read after every capture
        arr = acts["relu1"]
        assert arr.shape == (rows, 128) and arr.dtype == dtype, res.stem
        whole = getattr(run.data, split)
        sub = whole if seed is None else whole.subset(50, seed=seed)
        np.testing.assert_array_equal(acts.indices, sub.indices.numpy())
        np.testing.assert_array_equal(acts.labels, sub.y.numpy())
        import torch

        with torch.no_grad():
            want = torch.relu(model.fc1(sub.x.flatten(1))).numpy()
        np.testing.assert_allclose(arr.astype(np.float32), want,
                                   rtol=1e-2 if dtype == np.float16 else 1e-5, atol=1e-3)
        assert acts.info["relu1"]["split"] == split


def test_capture_stem_names_every_setting_and_defaults_keep_the_plain_name():
    from shenjing.stages.capture import capture_stem

    assert capture_stem(5) == "epoch-005"
    assert capture_stem(5, split="train", subset=500, seed=2, pool="mean",
                        dtype="float16") == "epoch-005-train-n500-seed2-pool-mean-float16"
    assert capture_stem(12, subset=10, pool=4) == "epoch-012-n10-pool-4"


def test_capture_stage_errors(run):
    from shenjing.stages.capture import capture_stage

    with pytest.raises(EpochNotFoundError, match="no checkpoint for epoch 9"):
        capture_stage(run, ["relu1"], epoch=9, verbose=False)
    with pytest.raises(LayerNotFoundError, match="Did you mean 'relu1'"):
        capture_stage(run, ["relu"], epoch=2, verbose=False)


def test_embed_stage_files_numbers_and_resume(run):
    from shenjing.stages.embed import embed_stage

    res = embed_stage(run, ["input", "relu1", "fc2"], epochs=[0, 2], method="pca", n=200,
                      n_train=600)
    emb_dir = run.path / "embeddings"
    with np.load(emb_dir / "input-pca.npz") as z:
        inp = json.loads(str(z["metrics"]))
        assert z["coords"].shape == (200, 2)
    assert inp["trustworthiness"] > 0.5 and "probe_accuracy" in inp
    assert (run.path / "figures" / "embedding-input-pca.png").is_file()
    path = emb_dir / "relu1-pca-epoch-002.npz"
    with np.load(path) as z:
        assert set(z.files) == {"coords", "labels", "indices", "metrics", "params"}
        assert z["coords"].shape == (200, 2)
        metrics = json.loads(str(z["metrics"]))
        params = json.loads(str(z["params"]))
    assert {"trustworthiness", "knn_recall", "probe_accuracy", "knn_accuracy",
            "silhouette_2d", "silhouette_note"} <= set(metrics)
    assert params["aligned_to_epoch"] == 0 and params["epoch"] == 2
    sep = json.loads((emb_dir / "separability.json").read_text())
    rec = {(r["layer"], r["epoch"]): r for r in sep["records"]}
    # training makes the hidden features more linearly separable than the untrained net's
    assert rec[("relu1", 2)]["probe_accuracy"] > 0.9
    assert rec[("fc2", 2)]["probe_accuracy"] > rec[("fc2", 0)]["probe_accuracy"]
    assert 0.5 < sep["input"]["probe_accuracy"] <= 1.0
    with np.load(emb_dir / "cka-layers-epoch-002.npz") as z:
        assert list(z["names"]) == ["relu1", "fc2"]
        assert z["matrix"].shape == (2, 2) and z["matrix"][0, 0] == pytest.approx(1.0)
    with np.load(emb_dir / "cka-epochs-relu1.npz") as z:
        assert list(z["names"]) == ["epoch 0", "epoch 2"]
    for stem in ("embedding-relu1-pca-epoch-000", "embedding-grid-pca", "separability-probe",
                 "cka-layers-epoch-002", "cka-epochs-fc2"):
        assert (run.path / "figures" / f"{stem}.png").is_file(), stem
    assert run.stage("embed")["status"] == "done"
    assert "separability.json" in " ".join(run.stage("embed")["files"])
    assert "relu1" in res.summary() and "input" in res.summary()

    before = os.stat(path).st_mtime_ns
    again = embed_stage(run, ["relu1", "fc2"], epochs=[0, 2], method="pca", n=200,
                        n_train=600, figures=False, cka=False)
    assert os.stat(path).st_mtime_ns == before  # reused from disk
    assert again.embeddings[("relu1", 2)].metrics == pytest.approx(metrics)


def test_embed_reuses_a_map_only_when_every_setting_that_made_it_matches(run):
    """Issue 13 item 5: a rerun reused maps whose probe numbers came from other settings
    (``n_train``, ``k``, ``max_features`` are not in the file name): the saved params are
    now checked for all of them, and ``separability.json`` starts over when its samples
    (split, n, seed, n_train) or probe settings differ, instead of mixing records."""
    from shenjing.stages.embed import embed_stage

    kw = dict(epochs=[2], method="pca", n=120, figures=False, cka=False)
    first = embed_stage(run, ["relu1", "fc2"], n_train=400, **kw)
    assert first.embeddings[("relu1", 2)].metrics["n_train"] == 400
    fewer = embed_stage(run, ["relu1"], n_train=200, **kw)
    assert fewer.embeddings[("relu1", 2)].metrics["n_train"] == 200
    sep = json.loads((run.path / "embeddings" / "separability.json").read_text())
    assert sep["n_train"] == 200
    # fc2's record was computed with 400 training samples: not kept beside relu1's
    assert {(r["layer"], r["epoch"]) for r in sep["records"]} == {("relu1", 2)}
    assert all(r["n_train"] == 200 for r in sep["records"])
    k3 = embed_stage(run, ["relu1"], n_train=200, k=3, **kw)
    assert k3.embeddings[("relu1", 2)].metrics["k"] == 3
    other_seed = embed_stage(run, ["relu1"], n_train=200, k=3, seed=1, **kw)
    got = other_seed.embeddings[("relu1", 2)]
    np.testing.assert_array_equal(got.indices, run.data.test.subset(120, seed=1).indices)
    sep = json.loads((run.path / "embeddings" / "separability.json").read_text())
    assert sep["seed"] == 1 and sep["k"] == 3
    inp = embed_stage(run, ["input", "relu1"], n_train=200, seed=1, **kw)
    assert inp.input_embedding.metrics["k"] == 5
    inp = embed_stage(run, ["input", "relu1"], n_train=200, k=3, seed=1, **kw)
    assert inp.input_embedding.metrics["k"] == 3  # the input map's numbers too


def test_maps_too_large_for_memory_are_refused_before_anything_is_written(run, monkeypatch):
    """Issue 13 item 7: the captures of the mapped and probe samples, their reduced copies
    and the features kept per epoch are estimated first (two samples through the model
    give each key's size); above the budget nothing is written, run.json included."""
    import shenjing.capture.dataset as ds
    from shenjing.errors import ResourceError
    from shenjing.stages.embed import embed_stage

    before = {p: p.read_bytes() for p in sorted(run.path.rglob("*")) if p.is_file()}
    monkeypatch.setattr(ds, "available_memory", lambda: 2 * 500_000)
    with pytest.raises(ResourceError, match=r"^maps of 2 key\(s\) \(relu1, fc2: 128, 10 values "
                                            r"per sample\) at 3 epoch\(s\) on 200 samples, "
                                            r"with 400 for the probe, need about 970\.31 KiB "
                                            r"of memory but only 488\.28 KiB .*reduce --n"):
        embed_stage(run, ["input", "relu1", "fc2"], epochs=[0, 1, 2], method="pca", n=200,
                    n_train=400)
    after = {p: p.read_bytes() for p in sorted(run.path.rglob("*")) if p.is_file()}
    assert after == before
    from shenjing.stages.embed import embed_bytes

    # relu1 128 + fc2 10 values: 4 × (600 × 276 + 3 × 200 × 138) = 993,600 bytes
    assert embed_bytes({"relu1": 128, "fc2": 10}, n=200, n_train=400, n_epochs=3,
                       max_features=1024) == 993_600
    assert embed_bytes({"conv": 3000}, n=10, n_train=0, n_epochs=1, max_features=1000) == \
        4 * (10 * 4000 + 10 * 1000)


def test_embed_stage_tsne_with_projector(run):
    from shenjing.stages.embed import embed_stage

    res = embed_stage(run, ["relu1"], epochs="final", method="tsne", n=150, n_train=300,
                      figures=False, projector=True, n_jobs=1)
    emb = res.embeddings[("relu1", 2)]
    assert emb.metrics["trustworthiness"] > 0.8
    proj = run.path / "embeddings" / "projector"
    assert (proj / "projector_config.pbtxt").read_text().count("embeddings {") == 1
    assert (proj / "sprite.png").is_file()
    assert len((proj / "metadata.tsv").read_text().splitlines()) == 151


def test_cka_between_two_runs(run, tmp_path):
    from shenjing.stages.embed import cka_runs_stage
    from shenjing.training import train

    other = train("mlp", "digits", epochs=1, run=tmp_path / "other", seed=1, progress=False)
    res = cka_runs_stage(run, other, ["relu1"], n=150, figures=False)
    assert res.names == [f"{run.name}:relu1", "other:relu1"]
    assert 0.0 < res.matrix[0, 1] < 1.0
    with np.load(run.path / "embeddings" / "cka-runs-other.npz") as z:
        np.testing.assert_allclose(z["matrix"], res.matrix)
    assert run.stage("cka") | {"updated": None} == {
        "status": "done", "other": "other", "file": "embeddings/cka-runs-other.npz",
        "updated": None}


def test_capture_and_embed_stages_take_the_keys_of_a_shared_block(tmp_path):
    """`block#1` (2nd call of a block run twice) and `block.0#0` are chosen like any layer:
    captured values equal a hand-written forward hook's, maps and CKA use the keys."""
    import sys
    from pathlib import Path

    import torch

    from shenjing.models.weights import save_safetensors
    from shenjing.runs import Run
    from shenjing.stages.capture import capture_stage
    from shenjing.stages.embed import embed_stage
    from shenjing.stages.inspect import inspect_model

    tests = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(tests))
    import user_models as um

    torch.manual_seed(2)
    weights = save_safetensors(um.SharedBlock().state_dict(), tmp_path / "w.safetensors")
    inspect_model(f"{tests / 'user_models.py'}:SharedBlock", weights, out=tmp_path / "r",
                  analysis=False)
    run = Run(tmp_path / "r")
    res = capture_stage(run, ["block#1", "block.0#0"], epoch=1, n=50, verbose=False)
    assert list(res.shapes) == ["block#1", "block.0#0"]
    model = run.model(1)
    seen = []
    handle = model.block.register_forward_hook(lambda m, a, o: seen.append(o.detach().clone()))
    try:
        with torch.no_grad():
            model(run.data.test.subset(50, seed=0).x)
    finally:
        handle.remove()
    got = np.load(run.path / "activations" / "block#1" / "epoch-001-n50.npy")
    np.testing.assert_allclose(got, seen[1].numpy(), rtol=1e-5, atol=1e-6)

    emb = embed_stage(run, ["block#1", "block.0#0"], epochs=[0, 1], method="pca", n=80,
                      n_train=160, figures=False)
    assert emb.keys == ["block#1", "block.0#0"]
    with np.load(run.path / "embeddings" / "block_1-pca-epoch-001.npz") as z:
        params = json.loads(str(z["params"]))
    assert params["key"] == "block#1" and params["layer"] == "block"
    assert emb.cka["layers@1"].names == ["block#1", "block.0#0"]
