"""``embed`` and ``attribute`` on the Ray backend: the same files as the local backend.

One local Ray instance (``ray.init(num_cpus=2)``) serves the module. Each stage runs twice
on two copies of one tiny trained digits run, once per backend, and the files are compared:

- embed (t-SNE; a task of C CPUs runs n_jobs = C with C threads, as the local stage at
  n_jobs = C; C = 1 and 2 here): coordinates, numbers and settings of every map **bit for
  bit**, separability.json equal; aligned maps of one layer run in epoch order; a deleted
  map is the only one a rerun recomputes, bit for bit;
- attribute: every array of the saved study (maps, raw outputs, randomization, deletion /
  insertion curves) equal to 1e-6 relative (measured: bit for bit, one torch thread on
  each side), and the summary's numbers equal.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from shenjing.backend import make_backend  # noqa: E402
from shenjing.errors import UsageError  # noqa: E402
from shenjing.runs import open_run  # noqa: E402


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _finished_maps(folder: Path) -> list[str]:
    """The t-SNE maps written whole: a killed writer's temporary file (``.<stem>.<pid>.
    <random>.tmp.npz``, see ``shenjing._io``) is not a map."""
    return sorted(p.name for p in folder.glob("*-tsne-*.npz") if not p.name.startswith("."))


def _twin(run, tmp_path_factory, name: str):
    copy = tmp_path_factory.mktemp(name) / run.path.name
    shutil.copytree(run.path, copy)
    return open_run(copy)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    from shenjing.training import train

    torch.set_num_threads(1)
    return train("mlp", "digits", epochs=2, run=tmp_path_factory.mktemp("e") / "mlp",
                 progress=False, model_kwargs={"hidden": [32, 16]})


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    from shenjing.training import train

    torch.set_num_threads(1)
    return train("simple_cnn", "digits", epochs=1, run=tmp_path_factory.mktemp("a") / "cnn",
                 progress=False)


# ---- before the module's Ray instance starts ----------------------------------------------

def test_an_unreachable_address_is_refused_with_nothing_written(mlp, cnn):
    from shenjing.stages.attribute import attribute_stage
    from shenjing.stages.embed import embed_stage

    if ray.is_initialized():
        pytest.skip("a Ray instance is already connected: the address would not be used")
    before = _files(mlp.path), _files(cnn.path)
    with pytest.raises(UsageError, match="no Ray cluster answers at --ray-address 127.0.0.1:9"):
        embed_stage(mlp, ["relu1"], n=50, backend="ray", ray_address="127.0.0.1:9")
    with pytest.raises(UsageError, match="no Ray cluster answers at --ray-address 127.0.0.1:9"):
        attribute_stage(cnn, samples=(0,), backend="ray", ray_address="127.0.0.1:9")
    with pytest.raises(UsageError, match="--ray-gpus 1: embed's maps .* compute on CPUs"):
        embed_stage(mlp, ["relu1"], n=50, backend=make_backend("ray", num_gpus=1))
    assert (_files(mlp.path), _files(cnn.path)) == before


@pytest.fixture(scope="module")
def ray_local():
    # address="local": a new instance even where `ray start --head` runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


# ---- embed ----------------------------------------------------------------------------------

EMBED = dict(epochs=[0, 1, 2], n=200, n_train=300, cka=False, figures=False)


@pytest.fixture(scope="module")
def embedded(mlp, ray_local, tmp_path_factory):
    from shenjing.stages.embed import embed_stage

    on_ray = _twin(mlp, tmp_path_factory, "ray")
    local = embed_stage(mlp, ["relu1", "relu2"], n_jobs=1, **EMBED)
    remote = embed_stage(on_ray, ["relu1", "relu2"], backend="ray", **EMBED)
    return mlp, local, on_ray, remote


def test_ray_maps_equal_the_local_maps_bit_for_bit(embedded):
    from shenjing.analysis.embed import load_embedding

    run, local, on_ray, remote = embedded
    assert list(remote.embeddings) == list(local.embeddings)  # the local order
    assert len(local.embeddings) == 6
    for (key, e), emb in local.embeddings.items():
        name = f"embeddings/{key}-tsne-epoch-{e:03d}.npz"
        a, b = load_embedding(run.path / name), load_embedding(on_ray.path / name)
        np.testing.assert_array_equal(a.coords, b.coords)
        np.testing.assert_array_equal(a.coords, emb.coords)
        assert a.metrics == b.metrics and a.params == b.params, name
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.params["aligned_to_epoch"] == (None if e == 0 else e - 1)
    sep = "embeddings/separability.json"
    assert (run.path / sep).read_bytes() == (on_ray.path / sep).read_bytes()
    assert remote.summary() == local.summary()


def test_the_run_records_the_backend_and_each_task(embedded):
    run, _, on_ray, _ = embedded
    assert run.stage("embed")["backend"] == "local"
    rec = on_ray.stage("embed")
    assert rec["status"] == "done" and rec["backend"] == "ray"
    assert rec["cluster"] == "1 node, 2 CPUs, 0 GPUs" and rec["workers"] == 2
    jobs = [tuple(t["job"]) for t in rec["tasks"]]
    assert sorted(jobs) == sorted((k, e) for k in ("relu1", "relu2") for e in (0, 1, 2))
    for key in ("relu1", "relu2"):  # aligned: a layer's epochs finish in order
        assert [e for k, e in jobs if k == key] == [0, 1, 2]
    assert all(t["seconds"] > 0 and t["pid"] for t in rec["tasks"])


def test_a_rerun_recomputes_only_the_missing_map(embedded):
    from shenjing.stages.embed import embed_stage

    _, _, on_ray, _ = embedded
    gone = on_ray.path / "embeddings" / "relu2-tsne-epoch-001.npz"
    before = _files(on_ray.path / "embeddings")
    gone.unlink()
    embed_stage(on_ray, ["relu1", "relu2"], backend="ray", **EMBED)
    assert [t["job"] for t in on_ray.stage("embed")["tasks"]] == [["relu2", 1]]
    assert _files(on_ray.path / "embeddings") == before  # remade bit for bit, rest untouched


CHILD = """
import sys, ray, torch
from shenjing.runs import open_run
from shenjing.stages.embed import embed_stage
torch.set_num_threads(1)
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
embed_stage(open_run(sys.argv[2]), ["relu1", "relu2"], epochs="all", n=None, n_train=300,
            cka=False, figures=False, backend="ray")
"""


def test_a_killed_driver_rerun_computes_only_the_maps_not_written(mlp, ray_local,
                                                                   tmp_path_factory):
    """The driver (a child process on the module's Ray instance) is SIGKILLed once two of
    the six maps are on disk; the rerun submits only the others and leaves those files as
    they were."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from shenjing.stages.embed import embed_stage

    run = _twin(mlp, tmp_path_factory, "kill")
    folder = run.path / "embeddings"
    shutil.rmtree(folder, ignore_errors=True)  # the maps of the other tests' calls
    child = subprocess.Popen([sys.executable, "-c", CHILD, ray_local, str(run.path)],
                             env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(_finished_maps(folder)) < 2 and child.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    written = _files(folder)
    maps_written = _finished_maps(folder)
    if not 2 <= len(maps_written) < 6:
        pytest.skip(f"the child wrote {len(maps_written)} maps before the kill: no mid-run "
                    "kill to test on this machine's timing")
    assert open_run(run.path).stage("embed")["status"] == "running"
    embed_stage(run, ["relu1", "relu2"], epochs="all", n=None, n_train=300, cka=False,
                figures=False, backend="ray")
    rec = open_run(run.path).stage("embed")
    assert rec["status"] == "done" and len(rec["tasks"]) == 6 - len(maps_written)
    assert {f"embeddings/{k}-tsne-epoch-{e:03d}.npz" for k, e in
            (t["job"] for t in rec["tasks"])}.isdisjoint(f"embeddings/{n}"
                                                         for n in maps_written)
    after = _files(folder)
    assert {n: after[n] for n in maps_written} == {n: written[n] for n in maps_written}
    assert len([f for f in rec["files"] if "-tsne-" in f]) == 6


def test_two_cpu_tasks_equal_local_maps_at_two_jobs(mlp, ray_local, tmp_path_factory):
    """A task of C CPUs runs t-SNE with n_jobs = C and C torch / BLAS threads, as the local
    stage does at n_jobs = C: the same bits (and not those of n_jobs = 1: t-SNE turns a
    last-bit difference into another map, so the thread count is part of the recipe)."""
    from shenjing.stages.embed import embed_stage

    local, on_ray = (_twin(mlp, tmp_path_factory, name) for name in ("two", "two-ray"))
    kw = dict(EMBED, epochs=[0, 1])
    two = embed_stage(local, ["relu1"], n_jobs=2, **kw)
    remote = embed_stage(on_ray, ["relu1"], backend=make_backend("ray", num_cpus=2), **kw)
    assert on_ray.stage("embed")["workers"] == 1  # 2 CPUs hold one 2-CPU task at a time
    for ke, emb in two.embeddings.items():
        np.testing.assert_array_equal(remote.embeddings[ke].coords, emb.coords)
        assert remote.embeddings[ke].metrics == emb.metrics


def test_unaligned_pca_maps_on_one_worker_equal_local(mlp, ray_local, tmp_path_factory):
    from shenjing.stages.embed import embed_stage

    on_ray = _twin(mlp, tmp_path_factory, "pca")
    kw = dict(EMBED, method="pca", align=False)
    local = embed_stage(mlp, ["relu1"], **kw)
    remote = embed_stage(on_ray, ["relu1"], backend=make_backend("ray", workers=1), **kw)
    for ke, emb in local.embeddings.items():
        np.testing.assert_array_equal(remote.embeddings[ke].coords, emb.coords)
        assert remote.embeddings[ke].params["aligned_to_epoch"] is None
    rec = on_ray.stage("embed")
    assert rec["workers"] == 1 and len(rec["tasks"]) == 3


def test_the_cli_runs_embed_on_ray(mlp, ray_local, capsys, tmp_path_factory):
    from cli_invoke import invoke

    on_ray = _twin(mlp, tmp_path_factory, "cli")
    code, out, err = invoke(capsys, "embed", str(on_ray.path), "--layers", "relu1",
                            "--method", "pca", "--epochs", "final", "--n", "100",
                            "--n-train", "100", "--no-cka", "--backend", "ray",
                            "--ray-cpus", "1", "--ray-workers", "2")
    assert code == 0, err
    assert "pca maps of relu1 at epochs 2" in out
    rec = open_run(on_ray.path).stage("embed")
    assert rec["backend"] == "ray" and rec["workers"] == 2 and len(rec["tasks"]) == 1


# ---- attribute ------------------------------------------------------------------------------

ATTRIBUTE = dict(samples=(0, 3), methods=("ig", "gradcam", "smoothgrad"), steps=16,
                 n_faithfulness=24, device="cpu")


def test_ray_attribution_equals_local(cnn, ray_local, tmp_path_factory):
    from shenjing.plot.save import figure_formats
    from shenjing.stages.attribute import attribute_stage

    on_ray = _twin(cnn, tmp_path_factory, "attr")
    with figure_formats("png"):
        local = attribute_stage(cnn, **ATTRIBUTE)
        remote = attribute_stage(on_ray, backend="ray", **ATTRIBUTE)
    assert remote.summary_record == local.summary_record
    assert remote.lines == local.lines
    names = sorted(p.name for p in (cnn.path / "attribute").glob("*.npz"))
    assert names == ["attribute-e000.npz", "attribute-e001.npz"]
    compared = 0
    for name in names:
        with np.load(cnn.path / "attribute" / name) as a, \
                np.load(on_ray.path / "attribute" / name) as b:
            assert sorted(a.files) == sorted(b.files)
            for k in a.files:
                if a[k].dtype.kind in "fc":
                    np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-7,
                                               err_msg=f"{name}:{k}")
                else:
                    np.testing.assert_array_equal(b[k], a[k], err_msg=f"{name}:{k}")
                compared += 1
    assert compared > 20  # maps, raw, randomization and curves of three methods
    with np.load(on_ray.path / "attribute" / names[-1]) as last:
        assert {f"{m}-rand-spearman" for m in ("integrated_gradients", "gradcam",
                                                "smoothgrad")} <= set(last.files)
    rec = on_ray.stage("attribute")
    assert rec["backend"] == "ray" and rec["cluster"] == "1 node, 2 CPUs, 0 GPUs"
    kinds = sorted(t["job"][0] for t in rec["tasks"])
    # 3 methods × 2 epochs maps, and per method one randomization test and one curve set
    assert kinds == ["faithfulness"] * 3 + ["maps"] * 6 + ["randomization"] * 3
    assert cnn.stage("attribute")["backend"] == "local"


def test_the_cli_runs_attribute_on_ray(cnn, ray_local, capsys, tmp_path_factory):
    from cli_invoke import invoke

    on_ray = _twin(cnn, tmp_path_factory, "attr-cli")
    code, out, err = invoke(capsys, "attribute", str(on_ray.path), "--samples", "0",
                            "--method", "saliency", "--epochs", "final",
                            "--n-faithfulness", "8", "--no-randomization", "--backend",
                            "ray", "--ray-workers", "1", "--ray-cpus", "1", "--ray-gpus", "0")
    assert code == 0, err
    assert "saliency deletion AUC" in out
    rec = open_run(on_ray.path).stage("attribute")
    assert rec["backend"] == "ray" and rec["workers"] == 1
    assert sorted(t["job"][0] for t in rec["tasks"]) == ["faithfulness", "maps"]
