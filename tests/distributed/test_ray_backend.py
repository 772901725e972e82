"""The Ray backend on a real local Ray instance: same numbers as local, kills, bad input.

One Ray instance (``ray.init(num_cpus=2)``) serves the whole module; every test that needs
it takes the ``ray_local`` fixture. The two-node cluster is in ``test_ray_two_nodes.py``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from kill_at_signal import kill_at_signal  # noqa: E402
from ray_grid_child import plane_kwargs, tiny_problem  # noqa: E402
from shenjing.analysis.landscape import load_landscape, plane  # noqa: E402
from shenjing.backend import Backend, make_backend  # noqa: E402
from shenjing.errors import MissingExtraError, UsageError  # noqa: E402

CHILD = Path(__file__).resolve().parents[1] / "ray_grid_child.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from shenjing.training import train

    torch.set_num_threads(1)
    return train("mlp", "digits", epochs=2, run=tmp_path_factory.mktemp("r") / "mlp",
                 progress=False, model_kwargs={"hidden": [16]})


def _snapshot(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                         if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


# ---- before any Ray instance runs: an address is checked only when connecting ----------

def test_an_unreachable_address_is_refused_in_bounded_time_with_nothing_written(run):
    from shenjing.stages.landscape import landscape_plane

    assert not ray.is_initialized()
    before = _snapshot(run.path)
    t0 = time.perf_counter()
    with pytest.raises(UsageError, match="no Ray cluster answers at --ray-address "
                                         "127.0.0.1:9"):
        landscape_plane(run, steps=5, backend="ray", ray_address="127.0.0.1:9",
                        figures=False, progress=False)
    # an address where nothing even refuses (packets dropped) waits for the timeout only
    with pytest.raises(UsageError, match="no Ray cluster answers"):
        landscape_plane(run, steps=5, progress=False, figures=False,
                        backend=Backend("ray", address="10.255.255.1:6379",
                                        connect_timeout=2.0))
    assert time.perf_counter() - t0 < 15
    assert _snapshot(run.path) == before





@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def local_surface():
    net, x, y = tiny_problem()
    return plane(net, x, y, **plane_kwargs())


def test_plane_on_ray_equals_local_bit_for_bit(ray_local, local_surface, tmp_path):
    net, x, y = tiny_problem()
    path = tmp_path / "plane.npz"
    seen: list[int] = []
    got = plane(net, x, y, path=path, backend=Backend("ray", tile=8),
                progress=lambda done, total: seen.append(done), **plane_kwargs())
    assert got.complete
    np.testing.assert_array_equal(got.loss, local_surface.loss)
    np.testing.assert_array_equal(got.accuracy, local_surface.accuracy)
    record = got.meta["backend"]
    assert record["name"] == "ray" and len(record["workers"]) == 2  # one per CPU
    assert all(w["threads"] == 1 and w["points"] > 0 for w in record["workers"])
    assert sum(w["points"] for w in record["workers"]) == 121 == got.meta["n_computed_now"]
    assert record["tile_points"] == 8 and record["n_tiles"] == len(record["tiles"]) == 16
    assert record["cluster"]["resources"]["CPU"] == 2.0
    assert all(t["compute_s"] > 0 and t["round_trip_s"] >= t["compute_s"]
               for t in record["tiles"])
    # the progress reached every tile, and the file on disk is the result
    assert seen[0] == 0 and seen[-1] == 121 and len(seen) == 17
    on_disk = load_landscape(path)
    np.testing.assert_array_equal(on_disk.loss, got.loss)
    assert on_disk.meta["backend"]["n_tiles"] == 16
    assert on_disk.meta["engine"]["path"] == "loop" and on_disk.meta["engine"]["threads"] == 1


def test_measured_engine_on_ray_is_within_float_rounding_of_local(ray_local, local_surface):
    """With the engine left to measure (auto), a worker may choose another path than the
    loop: the same surface up to float32 rounding."""
    net, x, y = tiny_problem()
    got = plane(net, x, y, loss="cross_entropy", steps=11, range_=(-1.0, 1.0),
                device="cpu", backend="ray")
    assert got.meta["engine"]["path"] in ("loop", "linear", "linear-vmap", "chain", "vmap")
    assert got.meta["engine"]["reason"]
    np.testing.assert_allclose(got.loss, local_surface.loss, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(got.accuracy, local_surface.accuracy, atol=1e-12)


def _kill_one_worker_after_first_tile(killed: dict[str, int]):
    """A progress callback: at the first finished tile, SIGKILL one grid worker's process,
    found through Ray (its named actor)."""
    def progress(done: int, total: int) -> None:
        if done and not killed:
            names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                           if a["name"].startswith("shenjing-grid-"))
            victim = ray.get_actor(names[-1])
            pid = ray.get(victim.info.remote())["pid"]
            os.kill(pid, signal.SIGKILL)
            killed["pid"] = pid
    return progress


def test_a_killed_worker_is_restarted_and_the_surface_is_unchanged(ray_local, local_surface):
    net, x, y = tiny_problem()
    killed: dict[str, int] = {}
    got = plane(net, x, y, backend=Backend("ray", tile=4),
                progress=_kill_one_worker_after_first_tile(killed), **plane_kwargs())
    assert killed, "no worker was killed"
    np.testing.assert_array_equal(got.loss, local_surface.loss)
    np.testing.assert_array_equal(got.accuracy, local_surface.accuracy)
    workers = got.meta["backend"]["workers"]
    restarted = [w for w in workers if killed["pid"] in w["pids"]]
    assert len(restarted) == 1 and len(restarted[0]["pids"]) >= 2  # a new process took over
    assert sum(w["points"] for w in workers) == 121  # every tile counted once


def test_a_killed_driver_reruns_without_recomputing_a_finished_point(ray_local, local_surface,
                                                                     tmp_path):
    path = tmp_path / "killed.npz"
    message = kill_at_signal(
        lambda fd: [sys.executable, str(CHILD), str(fd), ray_local, str(path)],
        env=dict(os.environ, PYTHONPATH=str(CHILD.parent)), timeout=180)
    reported = int(message.decode().split()[0])
    partial = load_landscape(path)  # what the killed driver had written, atomically
    assert 8 <= reported <= partial.n_done < 121
    net, x, y = tiny_problem()
    seen: list[int] = []
    resumed = plane(net, x, y, path=path, backend=Backend("ray", tile=8),
                    progress=lambda done, total: seen.append(done), **plane_kwargs())
    assert resumed.meta["resumed_with"] == partial.n_done
    assert resumed.meta["n_computed_now"] == 121 - partial.n_done  # nothing done twice
    assert sum(w["points"] for w in resumed.meta["backend"]["workers"]) == 121 - partial.n_done
    assert seen[0] == partial.n_done
    np.testing.assert_array_equal(resumed.loss, local_surface.loss)
    np.testing.assert_array_equal(resumed.accuracy, local_surface.accuracy)


def test_a_grid_started_on_ray_resumes_locally_with_its_settings(ray_local, local_surface,
                                                                  tmp_path):
    """The engine a Ray run recorded (one thread, the loop path…) is what a local rerun
    uses: the surface is the same bit for bit."""
    net, x, y = tiny_problem()
    path = tmp_path / "mixed.npz"
    with pytest.raises(KeyboardInterrupt):
        def stop(done: int, total: int) -> None:
            if done >= 20:
                raise KeyboardInterrupt
        plane(net, x, y, path=path, backend=Backend("ray", tile=8), progress=stop,
              **plane_kwargs())
    partial = load_landscape(path)
    assert 0 < partial.n_done < 121
    net, x, y = tiny_problem()
    resumed = plane(net, x, y, loss="cross_entropy", steps=11, range_=(-1.0, 1.0),
                    device="cpu", path=path)
    assert resumed.meta["n_computed_now"] == 121 - partial.n_done
    np.testing.assert_array_equal(resumed.loss, local_surface.loss)


# ---- the stages and the command ---------------------------------------------------------

def test_plane_stage_on_ray_records_the_backend_and_equals_local(ray_local, run):
    from shenjing.stages.landscape import landscape_plane

    kw = dict(steps=7, samples=300, engine="loop", batch_size=100, figures=False,
              progress=False)
    local = landscape_plane(run, seed=3, **kw).landscape
    import shutil

    shutil.rmtree(run.landscapes_dir)
    distributed = landscape_plane(run, seed=3, backend="ray", **kw).landscape
    np.testing.assert_allclose(distributed.loss, local.loss, rtol=1e-6)
    stage = run.stage("landscape_plane")
    assert stage["status"] == "done" and stage["backend"] == "ray" and stage["workers"] == 2
    assert stage["cluster"]["nodes"] == 1


def test_landscape_command_on_ray_prints_each_workers_throughput(ray_local, run, capsys):
    from cli_invoke import invoke

    code, out, err = invoke(capsys, "landscape", "line", str(run.path), "--steps", "9",
                            "--samples", "200", "--engine", "loop", "--backend", "ray",
                            "--tile", "3",
                            "--no-figures", "--quiet")
    assert code == 0, err
    assert "ray: 1 node(s), 2 CPUs, 0 GPUs; 3 tiles of 3 points" in out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("worker ")]
    assert len(lines) == 2 and all("points/s" in ln for ln in lines)


def test_hessian_across_epochs_on_ray_is_one_task_per_checkpoint(ray_local, run):
    from shenjing.stages.hessian import hessian

    kw = dict(top_k=1, trace=False, per_layer=False, across_epochs=True, samples=200,
              figures=False, progress=False)
    local = hessian(run, **kw)
    curve_local = json.loads((run.landscapes_dir / "sharpness-epochs.json").read_text())
    distributed = hessian(run, backend="ray", **kw)
    curve = json.loads((run.landscapes_dir / "sharpness-epochs.json").read_text())
    assert curve["epochs"] == [0, 1, 2]
    assert [t["epoch"] for t in sorted(curve["backend"]["tasks"], key=lambda t: t["epoch"])] \
        == [0, 1, 2]
    np.testing.assert_allclose(curve["top_eigenvalue"], curve_local["top_eigenvalue"],
                               rtol=1e-5)
    assert distributed.summary["top_eigenvalues"] == local.summary["top_eigenvalues"]
    assert run.stage("hessian")["backend"] == "ray"


# ---- bad input ----------------------------------------------------------------------------

def test_ray_backend_without_the_extra_names_the_pip_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "shenjing\[ray\]"'):
        make_backend("ray")


def test_ray_options_without_the_ray_backend_are_refused():
    with pytest.raises(UsageError, match="--ray-address, --tile only apply to the Ray "
                                         "backend: add --backend ray"):
        make_backend("local", ray_address="auto", tile=8)
    with pytest.raises(UsageError, match="--backend must be one of local, ray"):
        make_backend("spark")
    with pytest.raises(UsageError, match="--ray-gpus must be 0 or more"):
        make_backend("ray", num_gpus=-1)


def test_gpus_the_cluster_does_not_have_are_refused_saying_what_it_has(ray_local, run):
    from shenjing.stages.landscape import landscape_plane

    before = _snapshot(run.path)
    with pytest.raises(UsageError, match=r"--ray-gpus 1 per worker, but the cluster has "
                                         r"1 node, 2 CPUs, 0 GPUs"):
        landscape_plane(run, steps=5, figures=False, progress=False,
                        backend=make_backend("ray", num_gpus=1))
    with pytest.raises(UsageError, match="at most 2 workers fit"):
        landscape_plane(run, steps=5, figures=False, progress=False,
                        backend=make_backend("ray", workers=3))
    assert _snapshot(run.path) == before
