"""scripts/compare_runs.py: finds every changed number, and nothing in equal folders."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str):
    """A script of ``scripts/`` imported as a module."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compare():
    return _script("compare_runs")


def _run_folder(root: Path, *, loss: float = 0.5, created: str = "2026-01-01") -> Path:
    run = root / "run"
    (run / "landscapes").mkdir(parents=True)
    meta = json.dumps({"run_path": str(run), "engine": {"path": "loop", "measurements": {
        "loop": float(len(created))}}})
    np.savez(run / "landscapes" / "plane.npz", loss=np.array([[loss, np.nan], [1.0, 2.0]]),
             done=np.array([True, False]), meta=np.array(meta))
    (run / "run.json").write_text(json.dumps({"created": created, "stages": {"plane": {
        "status": "done", "minimum": loss}}}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "test_loss": loss}) + "\n")
    (run / "figure.png").write_bytes(created.encode())
    return run


def test_equal_numbers_in_two_folders_give_no_difference(compare, tmp_path, capsys):
    a = _run_folder(tmp_path / "a", created="monday")
    b = _run_folder(tmp_path / "b", created="a later tuesday")  # volatile keys, other root
    assert compare.main([str(a), str(b)]) == 0
    assert capsys.readouterr().out.startswith("0 differences in 3 files")


def test_one_changed_value_is_named_with_its_size(compare, tmp_path, capsys):
    a = _run_folder(tmp_path / "a")
    b = _run_folder(tmp_path / "b", loss=0.5 + 1e-12)
    assert compare.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "landscapes/plane.npz[loss]: 1 of 4 values differ, largest |difference| 1e-12" in out
    assert any(line.startswith("run.json[0].stages.plane.minimum: 0.5 != 0.5000000000")
               for line in out)
    assert any(line.startswith("metrics.jsonl[0].test_loss") for line in out)
    assert out[-1].startswith("3 differences in 3 files")


def test_missing_files_keys_and_dtypes_are_differences(compare, tmp_path):
    a = _run_folder(tmp_path / "a")
    b = _run_folder(tmp_path / "b")
    (b / "figure.png").unlink()
    np.savez(b / "landscapes" / "plane.npz", loss=np.zeros((2, 2), np.float32),
             meta=np.array("{}"))
    found = compare.compare_folders(a, b).differences
    assert "figure.png: file only in before" in found
    assert "landscapes/plane.npz[done]: only in before" in found
    assert "landscapes/plane.npz[loss]: float64[2, 2] != float32[2, 2]" in found
    assert "landscapes/plane.npz[meta].run_path: only in before" in found


@pytest.fixture(scope="module")
def replay():
    return _script("replay_landscapes")


def test_replay_recomputes_each_landscape_with_its_engine_and_finds_a_changed_value(
        replay, tmp_path):
    from shenjing.stages.landscape import landscape_line, landscape_plane
    from shenjing.training import train

    run = train("mlp", "moons", epochs=2, run=tmp_path / "runs" / "mlp", progress=False)
    landscape_line(run, steps=5, samples=64, device="cpu", figures=False, progress=False)
    landscape_plane(run, steps=3, samples=64, device="cpu", figures=False, progress=False)
    assert replay.replay_folder(tmp_path / "runs", tmp_path / "work1") == []
    stored = run.path / "landscapes" / "plane-filter-s0-e002.npz"
    with np.load(stored) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["loss"][1, 2] += 1e-9
    np.savez_compressed(stored, **arrays)
    found = replay.replay_folder(tmp_path / "runs", tmp_path / "work2")
    assert found == ["mlp/landscapes/plane-filter-s0-e002.npz[loss]: 1 values differ, "
                     "largest |difference| 1e-09"]
