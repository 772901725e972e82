"""A run folder stays whole: one writer at a time, nothing foreign deleted, no temporary file
left by a killed writer, strict JSON, one file mode, stable checkpoint bytes, and one line
(never a traceback) for a damaged file, a full disk or a read-only one (issue 13, items 3,
4, 6, 8, 9 and 12). docs/reliability.md lists these guarantees with the test of each."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/: cli_invoke
from cli_invoke import invoke

MLP = {"name": "mlp", "input_shape": [1, 8, 8], "n_outputs": 10, "kwargs": {}}


# ---- helpers -------------------------------------------------------------------------------
def checksums(folder: Path, *, lock: bool = True) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) → its SHA-256; ``lock=False`` leaves out
    the writer lock's file, whose note changes with each writer that held it."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and (lock or p.relative_to(folder) != Path(".lock"))}


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp" in p.name]


def make_run(path: Path):
    from shenjing.runs import Run

    return Run.create(path, model=MLP, data={"name": "digits", "seed": 0})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits) -> Path:
    """A real 2-epoch mlp run on digits (trained once; tests copy it)."""
    import shenjing as sj

    path = tmp_path_factory.mktemp("trained") / "r"
    sj.train("mlp", digits, epochs=2, run=path, progress=False)
    return path


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(trained, target)
    return target


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until the child wrote ``path`` (its signal that it is ready); fail at once if
    it died first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the child exited ({proc.returncode}) before it was ready: "
                                 f"{proc.stderr.read().decode() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError("the child never became ready")
        time.sleep(0.01)


HOLDER = r"""
import pathlib, sys, time
from shenjing.runs import writer_lock
with writer_lock(sys.argv[1]):
    pathlib.Path(sys.argv[2]).write_text("held")
    time.sleep(600)
"""


@contextlib.contextmanager
def lock_held_by_child(run: Path, tmp_path: Path) -> Iterator[subprocess.Popen]:
    """A child process holding ``run``'s writer lock, ready before the block starts (it says
    so in a file: no sleeps, no timing); killed afterwards."""
    ready = tmp_path / "holder-ready"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run), str(ready)],
                            stderr=subprocess.PIPE)
    try:
        wait_for(ready, proc)
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


# ---- item 3: --force deletes only a shenjing run, and only what a run holds ---------------
def test_force_refuses_a_folder_whose_run_json_is_not_ours(tmp_path, capsys):
    folder = tmp_path / "other-tool"
    folder.mkdir()
    (folder / "run.json").write_text("{}")
    (folder / "thesis.tex").write_text("precious")
    before = checksums(folder)
    code, out, err = invoke(capsys, "train", "--epochs", "1", "--force", "--run", str(folder))
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "not a shenjing manifest" in lines[0], lines
    assert checksums(folder) == before  # nothing deleted, not even a lock file added


def test_force_refuses_a_run_folder_holding_foreign_files(run_copy, capsys):
    (run_copy / "notes.txt").write_text("mine")
    (run_copy / "checkpoints" / "README").write_text("mine too")
    before = checksums(run_copy)
    code, _, err = invoke(capsys, "train", "--epochs", "1", "--force", "--run", str(run_copy))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "refusing to delete" in lines[0] and "checkpoints/README" in lines[0] and \
        "notes.txt" in lines[0]
    assert checksums(run_copy) == before


def test_force_refuses_a_run_json_shaped_like_ours_beside_foreign_files(tmp_path, capsys):
    folder = tmp_path / "lookalike"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"format_version": 1}))
    (folder / "data.csv").write_text("1,2,3")
    before = checksums(folder)
    code, _, err = invoke(capsys, "train", "--epochs", "1", "--force", "--run", str(folder))
    assert code == 1 and "data.csv" in err and len(err.strip().splitlines()) == 1
    assert checksums(folder) == before


def test_force_starts_a_real_run_over(run_copy, capsys):
    (run_copy / "figures" / "old.png").write_bytes(b"\x89PNG old figure")
    (run_copy / "maps").mkdir()
    (run_copy / "maps" / "fc1.json").write_text("{}")
    code, _, err = invoke(capsys, "train", "--epochs", "1", "--force", "--run", str(run_copy))
    assert code == 0, err
    from shenjing.runs import Run

    run = Run(run_copy)
    assert run.epochs == [0, 1] and [r["epoch"] for r in run.metrics()] == [0, 1]
    assert not (run_copy / "figures" / "old.png").exists()
    assert not (run_copy / "maps").exists()


def test_remove_run_refuses_links_and_runs_another_process_writes(run_copy, tmp_path):
    from shenjing.errors import RunError, RunLockedError
    from shenjing.runs import remove_run

    link = tmp_path / "link"
    link.symlink_to(run_copy)
    with pytest.raises(RunError, match="is a link; refusing to delete through it"):
        remove_run(link)
    (run_copy / "checkpoints" / "extra").symlink_to(tmp_path)
    with pytest.raises(RunError, match=r"checkpoints/extra \(a link\)"):
        remove_run(run_copy)
    (run_copy / "checkpoints" / "extra").unlink()
    before = checksums(run_copy, lock=False)
    with lock_held_by_child(run_copy, tmp_path) as child, \
            pytest.raises(RunLockedError, match=f"being written by pid {child.pid}"):
        remove_run(run_copy)
    assert checksums(run_copy, lock=False) == before
    remove_run(run_copy)
    assert list(run_copy.iterdir()) == []  # the folder is kept; its lock went with the hold


# ---- item 4: one writer at a time ----------------------------------------------------------
def test_a_second_writer_is_refused_with_one_line_and_the_run_stays_valid(run_copy, tmp_path,
                                                                           capsys):
    from shenjing.runs import Run

    before = checksums(run_copy, lock=False)
    with lock_held_by_child(run_copy, tmp_path) as child:
        code, _, err = invoke(capsys, "train", "--epochs", "3", "--resume", "--run",
                              str(run_copy))
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"RunLockedError: run {run_copy} is being written by pid "
                                   f"{child.pid} (since ")
        assert "wait for it to finish, or stop it" in lines[0]
        # readers keep working while the writer holds the run
        assert [r["epoch"] for r in Run(run_copy).metrics()] == [0, 1, 2]
        assert Run(run_copy).stage("train")["status"] == "done"
    assert checksums(run_copy, lock=False) == before


def test_a_killed_writer_leaves_no_lock_and_the_next_one_names_itself(run_copy, tmp_path):
    from shenjing.runs import writer_lock

    with lock_held_by_child(run_copy, tmp_path) as child:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert json.loads((run_copy / ".lock").read_text())["pid"] == child.pid
        with writer_lock(run_copy):  # the dead writer's lock is gone: taken at once
            assert json.loads((run_copy / ".lock").read_text())["pid"] == os.getpid()
    assert not (run_copy / ".lock").exists()  # a run nobody writes has no lock file


ORPHAN = r"""
import fcntl, json, os, pathlib, sys, time
fd = os.open(pathlib.Path(sys.argv[1]) / ".lock", os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, json.dumps({"pid": int(sys.argv[2]), "since": "long ago"}).encode())
pathlib.Path(sys.argv[3]).write_text("held")
time.sleep(600)
"""


def test_a_lock_whose_recorded_writer_is_dead_is_taken_over(run_copy, tmp_path):
    """The lock file names a dead pid, yet its lock is still held (a child the writer forked
    outside Python): the writer is gone, so the lock is taken over."""
    from shenjing.runs import writer_lock

    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN, str(run_copy), str(dead_pid()),
                             str(ready)], stderr=subprocess.PIPE)
    try:
        wait_for(ready, proc)
        with writer_lock(run_copy):
            assert json.loads((run_copy / ".lock").read_text())["pid"] == os.getpid()
            probe = subprocess.run(
                [sys.executable, "-c", "import sys; from shenjing.runs import writer_lock\n"
                 "try:\n    writer_lock(sys.argv[1]).__enter__()\n"
                 "except Exception as e:\n    print(type(e).__name__, e)",
                 str(run_copy)], capture_output=True, text=True, timeout=120)
            assert f"RunLockedError run {run_copy} is being written by pid {os.getpid()}" \
                in probe.stdout, probe
    finally:
        proc.kill()
        proc.wait(timeout=30)


UPDATER = r"""
import pathlib, sys, time
from shenjing.runs import Run
run, tag, folder = Run(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
(folder / f"ready-{tag}").write_text("ready")
while not (folder / "go").exists():
    time.sleep(0.001)
for i in range(200):
    run.update_stage(f"{tag}-{i:03d}", "done", i=i)
"""


def test_two_processes_making_200_stage_updates_each_keep_all_400(tmp_path):
    run = make_run(tmp_path / "r")
    procs = [subprocess.Popen([sys.executable, "-c", UPDATER, str(run.path), tag,
                               str(tmp_path)], stderr=subprocess.PIPE) for tag in ("a", "b")]
    try:
        for tag, proc in zip(("a", "b"), procs, strict=True):
            wait_for(tmp_path / f"ready-{tag}", proc)
        (tmp_path / "go").write_text("go")
        for proc in procs:
            assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    finally:
        for proc in procs:
            proc.kill()
    stages = run.manifest["stages"]
    assert len(stages) == 400
    assert {f"{t}-{i:03d}" for t in "ab" for i in range(200)} == set(stages)


def test_a_stage_holds_the_lock_and_releases_it_even_when_it_raises(tmp_path):
    from shenjing.errors import RunLockedError
    from shenjing.runs import writer_lock

    run = make_run(tmp_path / "r")
    probe = [sys.executable, "-c", "import sys; from shenjing.runs import writer_lock\n"
             "try:\n    writer_lock(sys.argv[1]).__enter__(); print('free')\n"
             "except Exception as e:\n    print(type(e).__name__)", str(run.path)]
    with pytest.raises(ZeroDivisionError), run.running_stage("study"):
        held = subprocess.run(probe, capture_output=True, text=True, timeout=120).stdout
        raise ZeroDivisionError
    assert held.strip() == "RunLockedError"
    assert subprocess.run(probe, capture_output=True, text=True,
                          timeout=120).stdout.strip() == "free"
    assert run.stage("study")["status"] == "failed"
    with lock_held_by_child(run.path, tmp_path), pytest.raises(RunLockedError), \
            run.running_stage("other"):
        pass
    assert run.stage("other") == {}  # refused before anything was marked
    with writer_lock(run.path), writer_lock(run.path):  # holds nest within a process
        run.update_stage("nested", "done")


@pytest.mark.parametrize("written_meanwhile", [False, True], ids=["alone", "after-a-write"])
def test_a_usage_error_inside_a_stage_never_leaves_it_running(tmp_path, written_meanwhile):
    """Bad input found inside the block puts run.json back byte for byte; once run.json was
    written meanwhile, putting it back would lose that write, so the stage ends failed."""
    from shenjing.errors import UsageError

    run = make_run(tmp_path / "r")
    before = (run.path / "run.json").read_bytes()
    with pytest.raises(UsageError, match="bad layer"), run.running_stage("study", epoch=1):
        if written_meanwhile:
            run.update_stage("other", "done")
        raise UsageError("bad layer")
    if written_meanwhile:
        assert run.stage("study")["status"] == "failed"
        assert run.stage("study")["error"] == "UsageError: bad layer"
        assert run.stage("other")["status"] == "done"
    else:
        assert (run.path / "run.json").read_bytes() == before


def test_a_forked_child_does_not_inherit_the_lock(tmp_path):
    """A child forked while the parent writes is a second process: refused, not a holder."""
    from shenjing.runs import writer_lock

    run = make_run(tmp_path / "r")
    with writer_lock(run.path):
        pid = os.fork()
        if pid == 0:  # the child: exit 3 if refused, 0 if it thinks it holds the lock
            code = 1
            try:
                from shenjing.errors import RunLockedError
                from shenjing.runs import acquire_writer_lock

                try:
                    acquire_writer_lock(run.path)
                    code = 0
                except RunLockedError:
                    code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3


def test_metrics_whose_epochs_do_not_increase_are_refused_naming_the_line(run_copy):
    from shenjing.errors import RunError
    from shenjing.runs import Run

    path = run_copy / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")  # epochs 0, 1, 2, 1
    with pytest.raises(RunError, match=r"metrics\.jsonl line 4: epoch 1 after epoch 2 "
                                       r"\(line 3\); epochs must increase"):
        Run(run_copy).metrics()


# ---- item 6: temporary files name their writer; stale ones are swept ------------------------
def test_temporary_files_carry_the_writers_pid(tmp_path):
    from shenjing import _io

    with _io.atomic_path(tmp_path / "a.json") as tmp:
        match = _io.TEMP_NAME.match(tmp.name)
        assert match is not None and int(match["pid"]) == os.getpid()
        assert tmp.name.startswith(".a.") and tmp.name.endswith(".tmp.json")
        tmp.write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_stage_sweeps_the_temporary_files_of_dead_writers(tmp_path):
    run = make_run(tmp_path / "r")
    folder = run.path / "activations" / "fc1"
    folder.mkdir(parents=True)
    dead = folder / f".epoch-003.{dead_pid()}.k2x9q0ab.tmp.npy"
    live = folder / f".epoch-004.{os.getpid()}.k2x9q0ab.tmp.npy"
    old_legacy = run.path / "figures" / ".maps.abc123de.tmp.png"
    new_legacy = run.path / "figures" / ".maps.fed321cb.tmp.png"
    users = run.path / "figures" / ".draft.v2.tmp"  # hidden, but not a name shenjing makes
    for path in (dead, live, old_legacy, new_legacy, users):
        path.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    for path in (old_legacy, users):
        os.utime(path, (two_hours_ago, two_hours_ago))
    with run.running_stage("capture"):
        pass
    assert not dead.exists() and not old_legacy.exists()
    assert live.exists() and new_legacy.exists()  # a live writer's, and a recent pid-less one
    assert users.exists()


KILLED_WRITER = r"""
import pathlib, sys, time
from shenjing import _io
with _io.atomic_open(pathlib.Path(sys.argv[1]) / "activations" / "epoch-003.npy") as fh:
    fh.write(b"half of the rows")
    fh.flush()
    pathlib.Path(sys.argv[2]).write_text("writing")
    time.sleep(600)
"""


def test_a_killed_writers_temporary_file_is_gone_after_the_next_stage_starts(tmp_path):
    run = make_run(tmp_path / "r")
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(run.path), str(ready)],
                            stderr=subprocess.PIPE)
    wait_for(ready, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    left = temp_files(run.path)
    assert len(left) == 1 and f".{proc.pid}." in left[0].name
    with run.running_stage("capture"):
        pass
    assert temp_files(run.path) == []
    assert not (run.path / "activations" / "epoch-003.npy").exists()


def test_resume_sweeps_stale_temporary_files(run_copy, capsys):
    stale = run_copy / "checkpoints" / f".epoch-003.{dead_pid()}.abcdefgh.tmp.safetensors"
    stale.write_bytes(b"half a checkpoint")
    code, _, err = invoke(capsys, "train", "--epochs", "3", "--resume", "--run", str(run_copy))
    assert code == 0, err
    assert temp_files(run_copy) == []


# ---- item 12: one file mode, stable bytes, strict JSON -------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_every_file_of_a_run_gets_the_mode_the_umask_gives(tmp_path, digits, umask):
    import shenjing as sj
    from shenjing import _io

    old = os.umask(umask)
    try:
        run = sj.train("mlp", digits, epochs=1, run=tmp_path / "r", progress=False)
        _io.save_npy(run.activations_dir / "fc1" / "epoch-001.npy", np.zeros(3))
    finally:
        os.umask(old)
    modes = {str(p.relative_to(run.path)): oct(p.stat().st_mode & 0o777)
             for p in run.path.rglob("*") if p.is_file()}
    assert "checkpoints/epoch-001.safetensors" in modes and "activations/fc1/epoch-001.npy" \
        in modes
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


def test_equal_weights_give_equal_checkpoint_bytes(tmp_path):
    """safetensors keeps its metadata in a hash map whose order changes from call to call."""
    run = make_run(tmp_path / "r")
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    digests = set()
    for _ in range(12):
        run.save_checkpoint(1, model)
        digests.add(hashlib.sha256(run.checkpoint_path(1).read_bytes()).hexdigest())
    assert len(digests) == 1
    assert torch.equal(run.state_dict(1)["weight"], model.weight.detach())
    from safetensors import safe_open

    with safe_open(str(run.checkpoint_path(1)), "pt") as fh:
        assert fh.metadata() == {"epoch": "1", "format": "pt"}


def test_training_twice_gives_identical_checkpoint_files(tmp_path, digits):
    import shenjing as sj

    runs = [sj.train("mlp", digits, epochs=1, run=tmp_path / name, progress=False)
            for name in ("a", "b")]
    for name in ("epoch-000.safetensors", "epoch-001.safetensors"):
        a, b = ((r.path / "checkpoints" / name).read_bytes() for r in runs)
        assert a == b, name


def _strict_loads(text: str):
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_files_are_strict_and_read_back_non_finite_values(tmp_path):
    from shenjing import _io

    doc = {"loss": float("nan"), "curve": [1.0, float("inf")],
           "layers": {"fc1.bias": {"grad/norm": float("-inf")}}, "ok": 0.5}
    _io.write_json(tmp_path / "a.json", doc)
    strict = _strict_loads((tmp_path / "a.json").read_text())
    assert strict["loss"] is None and strict["curve"] == [1.0, None]
    assert strict["nonfinite"] == {"/loss": "nan", "/curve/1": "inf",
                                   "/layers/fc1.bias/grad~1norm": "-inf"}
    back = _io.read_json(tmp_path / "a.json")
    assert np.isnan(back["loss"]) and back["curve"] == [1.0, float("inf")]
    assert back["layers"]["fc1.bias"]["grad/norm"] == float("-inf") and "nonfinite" not in back
    _io.append_jsonl(tmp_path / "m.jsonl", {"epoch": 0, "test_loss": float("nan")})
    line = (tmp_path / "m.jsonl").read_text()
    assert _strict_loads(line) == {"epoch": 0, "test_loss": None,
                                   "nonfinite": {"/test_loss": "nan"}}
    assert np.isnan(_io.read_jsonl(tmp_path / "m.jsonl")[0]["test_loss"])


def test_a_recorded_nan_loss_is_strict_json_in_metrics_jsonl(tmp_path, digits):
    import shenjing as sj
    from shenjing.runs import Run

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with sj.Recorder(tmp_path / "r", model, data=digits) as rec:
        rec.start()
        rec.after_backward(float("nan"))
        rec.end_epoch()
    last = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1]
    assert _strict_loads(last)["train_loss"] is None
    assert _strict_loads(last)["nonfinite"] == {"/train_loss": "nan"}
    assert np.isnan(Run(tmp_path / "r").metrics()[-1]["train_loss"])


# ---- item 8: a diverging run stops, failed ---------------------------------------------------
def test_training_that_diverges_stops_with_one_line_and_a_failed_status(tmp_path, capsys):
    from shenjing.runs import Run

    code, _, err = invoke(capsys, "train", "--epochs", "2", "--lr", "1e300", "--run",
                          str(tmp_path / "r"))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("RunError: training diverged in epoch 1: "), \
        lines
    assert "Lower the learning rate, e.g. --lr 0.001" in lines[0]
    run = Run(tmp_path / "r")
    stage = run.stage("train")
    assert stage["status"] == "failed" and "training diverged" in stage["error"]
    assert run.epochs == [0] and [r["epoch"] for r in run.metrics()] == [0]


# ---- item 9: damaged run files, full and read-only disks: one line each --------------------
def _garble_metrics_line_2(run: Path) -> None:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = '{"epoch": 1, "train_loss": 0.3'
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("command", [["train", "--epochs", "3", "--resume", "--run"],
                                     ["dynamics"]])
def test_a_garbage_metrics_line_is_one_line_naming_file_and_line(run_copy, capsys, command):
    _garble_metrics_line_2(run_copy)
    code, _, err = invoke(capsys, *command, str(run_copy))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"RunError: {run_copy / 'metrics.jsonl'} line 2: not valid JSON" in lines[0]


def test_the_report_says_which_metrics_line_is_damaged(run_copy, capsys):
    _garble_metrics_line_2(run_copy)
    code, _, err = invoke(capsys, "report", str(run_copy))
    assert code == 0, err
    html = (run_copy / "report.html").read_text()
    assert "metrics.jsonl line 2: not valid JSON" in html


class _Payload:
    """Unpickling this would create ``marker`` (with weights_only=False)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["pickle", "garbage"])
def test_a_hostile_or_damaged_optimizer_state_is_refused_in_one_line(run_copy, tmp_path,
                                                                     capsys, kind):
    state = run_copy / "checkpoints" / "state-002.pt"
    marker = tmp_path / "payload-ran"
    if kind == "pickle":
        torch.save({"epoch": 2, "optimizer": _Payload(marker)}, state)
    else:
        state.write_bytes(os.urandom(300))
    before = checksums(run_copy, lock=False)
    code, _, err = invoke(capsys, "train", "--epochs", "3", "--resume", "--run", str(run_copy))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"CheckpointError: {state}: ")
    assert ("refused, it is not plain optimizer state" if kind == "pickle"
            else "cannot be read as optimizer state") in lines[0]
    assert not marker.exists()
    assert checksums(run_copy, lock=False) == before


def test_a_file_where_a_run_folder_should_be_is_one_line(run_copy, capsys):
    from shenjing.errors import RunError
    from shenjing.runs import Run

    shutil.rmtree(run_copy / "figures")
    (run_copy / "figures").write_text("not a folder")
    code, _, err = invoke(capsys, "dynamics", str(run_copy))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0] == (
        f"RunError: {run_copy / 'figures'} is a file, where shenjing keeps a folder; move "
        "that file away (or choose another folder) and run the command again"), lines
    assert Run(run_copy).stage("dynamics")["status"] == "failed"
    shutil.rmtree(run_copy / "activations")
    (run_copy / "activations").write_text("")
    with pytest.raises(RunError, match="activations is a file, where shenjing keeps a folder"):
        Run(run_copy).activations_dir  # noqa: B018
    shutil.rmtree(run_copy / "checkpoints")
    (run_copy / "checkpoints").write_text("")
    code, _, err = invoke(capsys, "train", "--epochs", "3", "--resume", "--run", str(run_copy))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "checkpoints is a file, where shenjing keeps the run's checkpoints folder" in err


def test_one_bad_run_does_not_hide_the_others(trained, tmp_path, capsys):
    for name in ("a-good", "b-bad-json", "c-bad-metrics", "d-checkpoints-file", "e-good"):
        shutil.copytree(trained, tmp_path / name)
    (tmp_path / "b-bad-json" / "run.json").write_text("{not json")
    _garble_metrics_line_2(tmp_path / "c-bad-metrics")
    shutil.rmtree(tmp_path / "d-checkpoints-file" / "checkpoints")
    (tmp_path / "d-checkpoints-file" / "checkpoints").write_text("")
    code, out, err = invoke(capsys, "--debug", "runs", str(tmp_path))
    assert code == 0, err
    assert out.count("mlp") == 2 and out.count("broken") >= 3 + 3  # 3 rows + 3 reasons
    reasons = {line.split(": ", 2)[1]: line.split(": ", 2)[2] for line in out.splitlines()
               if line.startswith("broken: ")}
    assert set(reasons) == {str(tmp_path / n) for n in ("b-bad-json", "c-bad-metrics",
                                                        "d-checkpoints-file")}
    assert "is not valid JSON" in reasons[str(tmp_path / "b-bad-json")]
    assert "line 2: not valid JSON" in reasons[str(tmp_path / "c-bad-metrics")]
    assert "is a file" in reasons[str(tmp_path / "d-checkpoints-file")]


def _fail_for_epoch_1(code: int):
    """``os.replace`` and ``save_file`` that raise ``OSError(code)`` for the epoch-1
    checkpoint only (run.json and the rest still write)."""
    import safetensors.torch

    real_replace, real_save = os.replace, safetensors.torch.save_file

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "epoch-001.safetensors":
            raise OSError(code, os.strerror(code), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    def save_file(tensors, filename, *args, **kwargs):
        if Path(filename).name.startswith(".epoch-001."):
            Path(filename).write_bytes(b"\0" * 100)  # half a file, then the disk gives up
            raise OSError(code, os.strerror(code))
        return real_save(tensors, filename, *args, **kwargs)

    return replace, save_file


@pytest.mark.parametrize("where", ["write", "rename"])
@pytest.mark.parametrize(("code", "message"), [
    (errno.ENOSPC, "ResourceError: cannot write {target}: no space left on the disk "
                   "(errno 28); free some space"),
    (errno.EROFS, "RunError: cannot write {target}: the disk is read-only (errno 30)")])
def test_a_full_or_read_only_disk_is_one_line_a_failed_stage_and_no_half_file(
        tmp_path, capsys, monkeypatch, where, code, message):
    import safetensors.torch

    from shenjing.runs import Run

    replace, save_file = _fail_for_epoch_1(code)
    if where == "rename":
        monkeypatch.setattr(os, "replace", replace)
    else:
        monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    run_path = tmp_path / "r"
    result = invoke(capsys, "train", "--epochs", "2", "--run", str(run_path))
    monkeypatch.undo()
    exit_code, _, err = result
    assert exit_code == 1
    lines = err.strip().splitlines()
    target = run_path / "checkpoints" / "epoch-001.safetensors"
    assert len(lines) == 1 and lines[0].startswith(message.format(target=target)), lines
    run = Run(run_path)
    assert run.stage("train")["status"] == "failed"
    assert run.stage("train")["error"].startswith(message.format(target=target).split(": ")[0])
    assert temp_files(run_path) == []
    assert run.epochs == [0] and [r["epoch"] for r in run.metrics()] == [0]
    run.state_dict(0)  # what is there is whole


def test_a_write_into_a_path_through_a_file_says_which_file_is_in_the_way(tmp_path):
    from shenjing import _io
    from shenjing.errors import RunError

    (tmp_path / "figures").write_text("")
    with pytest.raises(RunError, match=r"figures is a file, where shenjing keeps a folder"):
        _io.write_json(tmp_path / "figures" / "sub" / "a.json", {})
    assert (tmp_path / "figures").read_text() == ""


# ---- a real read-only run folder ------------------------------------------------------------
def _as_another_user() -> list[str]:
    """A command prefix that runs as a user who cannot write the run (root ignores modes)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: chmod cannot make a folder read-only")
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "import shenjing"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the unprivileged user cannot import shenjing from this checkout (a "
                    "folder above it is private, e.g. made by `mktemp -d`): "
                    + probe.stderr.strip().splitlines()[-1])
    return prefix


@pytest.fixture
def read_only_run(trained) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """A copy of the trained run with every write permission removed, a folder the other
    user may write to, and the environment for them."""
    base = Path(tempfile.mkdtemp(prefix="shenjing-ro-"))
    base.chmod(0o755)
    run, out = base / "run", base / "out"
    shutil.copytree(trained, run)
    out.mkdir()
    out.chmod(0o777)
    for p in [run, *run.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    env = {**os.environ, "HOME": str(out), "MPLCONFIGDIR": str(out / "mpl"),
           "SHENJING_TRUST_FILE": str(out / "trust.json"), "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_NUM_THREADS": "1"}
    try:
        yield run, out, env
    finally:
        for p in [run, *run.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(base)


def _shenjing(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_as_another_user(), sys.executable, "-m", "shenjing", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_report_of_a_read_only_run_goes_elsewhere_and_changes_nothing(read_only_run):
    run, out, env = read_only_run
    before = checksums(run)
    proc = _shenjing(env, "report", str(run), "--out", str(out / "report.html"))
    assert proc.returncode == 0, proc.stderr
    assert "not recorded in its run.json" in proc.stdout
    html = (out / "report.html").read_text()
    assert "Training" in html and len(html) > 100_000
    assert checksums(run) == before
    proc = _shenjing(env, "report", str(run))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is read-only; write the report elsewhere with --out" in lines[0]
    assert checksums(run) == before


def test_writers_on_a_read_only_run_fail_in_one_line_and_change_nothing(read_only_run):
    run, _, env = read_only_run
    before = checksums(run)
    for args in (["train", "--epochs", "3", "--resume", "--run", str(run)],
                 ["dynamics", str(run)]):
        proc = _shenjing(env, *args)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "RunError: cannot write" in lines[0] and \
            "permission denied" in lines[0], lines
    assert checksums(run) == before


# ---- the report is a reader: it works beside a writer, and checks --out first --------------
def test_a_report_beside_a_running_writer_is_built_and_not_recorded(run_copy, tmp_path,
                                                                    capsys):
    from shenjing.runs import Run

    stages_before = Run(run_copy).manifest["stages"]
    with lock_held_by_child(run_copy, tmp_path):
        code, out, err = invoke(capsys, "report", str(run_copy), "--out",
                                str(tmp_path / "now.html"))
    assert code == 0, err
    assert "another process is writing the run" in " ".join(out.split())
    assert (tmp_path / "now.html").stat().st_size > 100_000
    assert Run(run_copy).manifest["stages"] == stages_before


def test_report_out_a_folder_is_refused_before_the_run_is_touched(run_copy, tmp_path, capsys):
    (tmp_path / "pages").mkdir()
    before = checksums(run_copy)
    code, _, err = invoke(capsys, "report", str(run_copy), "--out", str(tmp_path / "pages"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0] == (
        f"UsageError: --out {tmp_path / 'pages'}: that is a folder; give the page a file "
        f"name, e.g. --out {tmp_path / 'pages' / 'report.html'}"), lines
    assert checksums(run_copy) == before


def test_runs_of_a_missing_folder_says_what_to_pass(tmp_path, capsys):
    code, _, err = invoke(capsys, "runs", str(tmp_path / "nope"))
    assert code == 1
    assert err.strip() == (f"RunError: no folder {tmp_path / 'nope'}; pass the folder that "
                           "holds your runs (by default `runs`, where `shenjing train` puts "
                           "them)")
