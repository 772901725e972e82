"""The bad-input suite: every option of every command, given a value that cannot work.

Each case runs ``shenjing ARGS…`` in-process in a fresh copy of a workspace (three small
runs and a folder of good, empty, truncated and hostile files) and asserts what a user must
see for any bad input:

- exit code 2 (usage) or 1 (failure), never 0, never a traceback;
- exactly ONE line on stderr, naming the option (or what the case expects) and a fix;
- nothing created, changed or deleted anywhere in the working folder (SHA-256 of every file
  and the list of folders, before and after), and no hostile payload run.

The cases come from one table (:data:`CASES`); :func:`test_every_option_has_a_case` walks
the Typer app (``typer.main.get_command(app)``) so that a new option without a case fails,
and checks that each numeric option is tried with a value that makes no sense (0 or a
negative number), with text, and (floats) with NaN. The counts are printed by
:func:`test_the_suite_counts` (``pytest -s``) and asserted there (≥ 100 distinct inputs).

A case whose fix belongs to a file this suite's author does not own is marked
``xfail(strict=True)`` with ``owner: <file>: <what>``, so it turns into a failure the day it
is fixed and must be unmarked.
"""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import shutil
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cli_invoke
from cli_invoke import invoke

#: seconds one case may take; a bad value that is accepted runs on and is cut off here
CASE_SECONDS = 25

#: words by which a message says how to fix the input (what is expected, what to pass …)
FIX_WORDS = ("e.g.", "expected", "use ", "pass ", "choose", "give ", "leave ", "see ",
             "must", "fix", "add ", "retrain", "--help", "did you mean", "needs",
             "try ", "check", "refus", "one of", "another", "convert", "re-save", "save ",
             "rerun", "--force", "--trust", "delete", "remove", "upgrade", "create",
             "choices", "layers with", "parameter groups", "built-in dataset", "allowed",
             "'init' or 'final'")

OWNED = {  # files this suite's author may not change; a case that needs them is xfail
    "capture": "src/shenjing/cli/capture.py",
    "embed": "src/shenjing/stages/embed.py",
    "landscape": "src/shenjing/stages/landscape.py",
    "warp": "src/shenjing/stages/warp.py",
    "demo": "src/shenjing/demo.py",
    "capture_core": "src/shenjing/capture/core.py",
    "landscape_options": "src/shenjing/analysis/landscape/options.py",
}


@dataclass(frozen=True)
class Case:
    """One bad input: ``args`` after ``shenjing``; ``option`` is the option at fault as the
    user typed it (``RUN`` for the run argument); ``kind`` what is wrong with the value;
    ``expect`` text the one line must contain (default: the option); ``owner``: the file
    (key of :data:`OWNED`) and change that would fix it, for an expected failure."""

    command: str
    option: str
    kind: str
    args: tuple[str, ...]
    expect: str | None = None
    owner: tuple[str, str] | None = None
    slow: bool = False

    @property
    def id(self) -> str:
        shown = " ".join(self.args[1:]) if len(" ".join(self.args)) < 90 else \
            f"{self.option} ({self.kind})"
        return f"{self.command} {shown}"


def _c(command: str, option: str, kind: str, *extra: str, base: tuple[str, ...] = (),
       expect: str | None = None, owner: tuple[str, str] | None = None,
       slow: bool = False) -> Case:
    return Case(command, option, kind, (command, *base, *extra), expect, owner, slow)


MLP, CNN, FIT, NEW = "runs/mlp", "runs/cnn", "runs/fit", "new-run"
VIT, LSTM = "runs/vit", "runs/lstm"
INSPECT = ("--model", "files/nets.py:Plain", "--weights", "files/plain.safetensors",
           "--out", NEW, "--no-analysis")
INSPECT_PAIR = ("--model", "files/nets.py:Pair", "--weights", "files/pair.safetensors",
                "--out", NEW, "--no-analysis")
DEMO = ("--jobs", "1", "--fast")  # one process: a case cut off leaves no worker behind
HUGE = "99999999999999999999999"  # 23 digits: more than any int64


def _numeric(command: str, option: str, base: tuple[str, ...], *, zero: bool = True,
             negative: bool = True, text: bool = True, nan: bool = False,
             huge: bool = False) -> list[Case]:
    """The standard bad values of a numeric option: 0, −1, 'abc', 'nan', a 23-digit number."""
    values = [("zero", "0", zero), ("negative", "-1", negative), ("text", "abc", text),
              ("nan", "nan", nan), ("huge", HUGE, huge)]
    return [_c(command, option, kind, option, value, base=base)
            for kind, value, wanted in values if wanted]


def _run_argument(command: str, *extra: str) -> list[Case]:
    """The run argument of a command that reads a run: missing, a file, not a run,
    an empty run.json, garbage JSON, a newer format."""
    return [
        _c(command, "RUN", "missing", "no-such-run", *extra, expect="no-such-run"),
        _c(command, "RUN", "a file", "files/a-file.txt", *extra, expect="a-file.txt"),
        _c(command, "RUN", "not a run", "files/not-a-run", *extra, expect="not-a-run"),
        _c(command, "RUN", "empty", "files/empty-run", *extra, expect="empty-run"),
        _c(command, "RUN", "truncated", "files/garbage-run", *extra, expect="garbage-run"),
        _c(command, "RUN", "hostile", "files/future-run", *extra, expect="future-run"),
    ]


CASES: list[Case] = [
    # ---- train ------------------------------------------------------------------------------
    _c("train", "--model", "unknown", "--model", "nosuchnet", base=("--run", NEW)),
    _c("train", "--data", "unknown", "--data", "nosuchdata", base=("--run", NEW)),
    _c("train", "--data", "missing", "--data", "files/missing.npz", base=("--run", NEW),
       expect="missing.npz"),
    _c("train", "--data", "empty", "--data", "files/empty.npz", base=("--run", NEW),
       expect="empty.npz"),
    _c("train", "--data", "truncated", "--data", "files/truncated.npz", base=("--run", NEW),
       expect="truncated.npz"),
    _c("train", "--data", "hostile", "--data", "files/object.npz", base=("--run", NEW),
       expect="object.npz"),
    _c("train", "--data", "text", "--data", "files/text.npz", base=("--run", NEW),
       expect="text.npz"),
    _c("train", "--data", "mismatch", "--model", "mlp", "--data", "curve", "--run", NEW,
       expect="--model"),
    _c("train", "--run", "a file", "--run", "files/a-file.txt", "--epochs", "1",
       expect="a-file.txt"),
    *_numeric("train", "--epochs", ("--run", NEW)),
    _c("train", "--epochs", "huge", "--epochs", HUGE, "--run", NEW),
    _c("train", "--optimizer", "unknown", "--optimizer", "rmsprop", base=("--run", NEW)),
    *_numeric("train", "--lr", ("--run", NEW), nan=True),
    _c("train", "--lr", "inf", "--lr", "inf", base=("--run", NEW)),
    *_numeric("train", "--batch-size", ("--run", NEW)),
    _c("train", "--schedule", "unknown", "--schedule", "cosin", base=("--run", NEW)),
    *_numeric("train", "--shift", ("--run", NEW), zero=False, huge=True),
    _c("train", "--shift", "not images", "--data", "moons", "--shift", "1", "--run", NEW),
    *_numeric("train", "--seed", ("--run", NEW), zero=False, huge=True),
    _c("train", "--device", "unknown", "--device", "tpu", base=("--run", NEW)),
    _c("train", "--device", "absent", "--device", "cuda:7", base=("--run", NEW)),
    _c("train", "--data-dir", "a file", "--data", "mnist", "--data-dir", "/etc/passwd",
       base=("--run", NEW), expect="/etc/passwd"),
    _c("train", "--data-dir", "hostile", "--data", "mnist", "--data-dir",
       "files/garbage-mnist", base=("--run", NEW), expect="garbage-mnist"),
    _c("train", "--data-dir", "not applicable", "--data-dir", "files", base=("--run", NEW)),
    _c("train", "--hidden", "negative", "--hidden=-3,abc", base=("--run", NEW)),
    _c("train", "--hidden", "zero", "--hidden", "0", base=("--run", NEW)),
    _c("train", "--hidden", "empty", "--hidden", ",", base=("--run", NEW)),
    _c("train", "--normalize", "unknown", "--normalize", "minmax", base=("--run", NEW)),
    _c("train", "--resume", "conflict", "--resume", "--force", base=("--run", NEW),
       expect="--resume"),
    # Click's own refusals (before the command runs) are one line too
    _c("train", "--bogus", "unknown option", "--bogus", expect="No such option: --bogus"),
    _c("maps", "--layer", "no value", CNN, "--layer",
       expect="Option '--layer' requires an argument; see `shenjing maps --help`"),
    _c("nosuchcommand", "COMMAND", "unknown", expect="No such command 'nosuchcommand'"),
    # ---- runs -------------------------------------------------------------------------------
    _c("runs", "FOLDER", "missing", "no-such-folder", expect="no-such-folder"),
    _c("runs", "FOLDER", "a file", "files/a-file.txt", expect="a-file.txt"),
    # ---- inspect ----------------------------------------------------------------------------
    _c("inspect", "--model", "unknown", "--model", "nosuchnet", "--weights",
       "files/plain.safetensors", "--out", NEW),
    _c("inspect", "--model", "missing", "--model", "files/missing.py:Net", "--weights",
       "files/plain.safetensors", "--out", NEW, expect="missing.py"),
    _c("inspect", "--model", "no such name", "--model", "files/nets.py:Nope", "--weights",
       "files/plain.safetensors", "--out", NEW, expect="Nope"),
    _c("inspect", "--model", "hostile", "--model", "files/exits.py:Net", "--weights",
       "files/plain.safetensors", "--out", NEW, expect="exits.py"),
    _c("inspect", "--model", "raises", "--model", "files/nets.py:Raises", "--weights",
       "files/plain.safetensors", "--out", NEW, "--no-analysis",
       expect="the model Raises raised RuntimeError: my own failure"),
    _c("inspect", "--model", "batch 3", "--model", "files/nets.py:FailsLater", "--weights",
       "files/plain.safetensors", "--out", NEW, "--no-analysis",
       expect="the model FailsLater raised RuntimeError: the second big batch is bad"),
    _c("inspect", "--model", "nan output", "--model", "files/nets.py:NanNet", "--weights",
       "files/plain.safetensors", "--out", NEW, "--no-analysis", expect="NaN"),
    _c("inspect", "--weights", "missing", "--weights", "files/missing.safetensors",
       base=("--model", "files/nets.py:Plain", "--out", NEW), expect="missing.safetensors"),
    _c("inspect", "--weights", "empty", "--weights", "files/empty.safetensors",
       base=("--model", "files/nets.py:Plain", "--out", NEW), expect="empty.safetensors"),
    _c("inspect", "--weights", "truncated", "--weights", "files/truncated.safetensors",
       base=("--model", "files/nets.py:Plain", "--out", NEW), expect="truncated.safetensors"),
    _c("inspect", "--weights", "hostile", "--weights", "files/payload.pt",
       base=("--model", "files/nets.py:Plain", "--out", NEW), expect="payload.pt"),
    _c("inspect", "--weights", "huge header", "--weights", "files/huge-header.safetensors",
       base=("--model", "files/nets.py:Plain", "--out", NEW),
       expect="huge-header.safetensors"),
    _c("inspect", "--weights", "empty .pt", "--weights", "files/empty.pt",
       base=("--model", "files/nets.py:Plain", "--out", NEW), expect="empty.pt"),
    _c("inspect", "--weights", "wrong model", "--weights", "files/pair.safetensors",
       base=("--model", "files/nets.py:Plain", "--out", NEW), expect="pair.safetensors"),
    _c("inspect", "--checkpoints", "missing", "--checkpoints", "files/nothing-*.pt",
       base=("--model", "files/nets.py:Plain", "--out", NEW)),
    _c("inspect", "--checkpoints", "one file", "--checkpoints", "files/plain.safetensors",
       base=("--model", "files/nets.py:Plain", "--out", NEW)),
    _c("inspect", "--checkpoints", "conflict", "--checkpoints", "files/*.safetensors",
       base=INSPECT, expect="--weights"),
    _c("inspect", "--data", "unknown", "--data", "nosuchdata", base=INSPECT),
    _c("inspect", "--data", "missing", "--data", "files/missing.npz", base=INSPECT,
       expect="missing.npz"),
    _c("inspect", "--data", "empty", "--data", "files/empty.npz", base=INSPECT,
       expect="empty.npz"),
    _c("inspect", "--data", "truncated", "--data", "files/truncated.npz", base=INSPECT,
       expect="truncated.npz"),
    _c("inspect", "--data", "hostile", "--data", "files/object.npz", base=INSPECT,
       expect="object.npz"),
    _c("inspect", "--data", "wrong shape", "--data", "files/wide.npz", base=INSPECT,
       expect="--data"),
    _c("inspect", "--out", "a file", "--out", "files/a-file.txt",
       base=("--model", "files/nets.py:Plain", "--weights", "files/plain.safetensors"),
       expect="a-file.txt"),
    _c("inspect", "--model", "hf: folder without config.json", "--model", "hf:files/not-a-run",
       "--out", NEW, expect="config.json"),
    _c("inspect", "--model", "hf: no folder", "--model", "hf:files/no-such-model",
       "--out", NEW, expect="no-such-model"),
    _c("inspect", "--out", "not a run", "--out", "files/not-a-run",
       base=("--model", "files/nets.py:Plain", "--weights", "files/plain.safetensors"),
       expect="not-a-run"),
    _c("inspect", "--out", "existing run", "--out", MLP,
       base=("--model", "files/nets.py:Plain", "--weights", "files/plain.safetensors"),
       expect=MLP),
    _c("inspect", "--model-arg", "truncated", "--model-arg", "hidden=[64", base=INSPECT),
    _c("inspect", "--model-arg", "no value", "--model-arg", "hidden", base=INSPECT),
    _c("inspect", "--model-arg", "unknown", "--model-arg", "nosuch=3", base=INSPECT,
       expect="nosuch"),
    _c("inspect", "--init-weights", "missing", "--init-weights", "files/missing.pt",
       base=INSPECT, expect="missing.pt"),
    _c("inspect", "--init-weights", "truncated", "--init-weights",
       "files/truncated.safetensors", base=INSPECT, expect="truncated.safetensors"),
    _c("inspect", "--output", "unknown", "--output", "nosuchkey", base=INSPECT),
    _c("inspect", "--output", "unknown key", "--output", "nosuchkey", base=INSPECT_PAIR),
    _c("inspect", "--output", "index", "--output", "7", base=INSPECT_PAIR),
    _c("inspect", "--loss", "unknown", "--loss", "nosuchloss", base=INSPECT),
    _c("inspect", "--loss", "mismatch", "--loss", "mse", base=INSPECT),
    _c("inspect", "--loss", "missing", "--loss", "files/missing.py:loss", base=INSPECT,
       expect="missing.py"),
    _c("inspect", "--data-dir", "a file", "--data", "mnist", "--data-dir", "/etc/passwd",
       base=INSPECT, expect="/etc/passwd"),
    _c("inspect", "--normalize", "unknown", "--normalize", "minmax", base=INSPECT),
    _c("inspect", "--layers", "empty", "--layers", ",", base=INSPECT),
    _c("inspect", "--layers", "unknown", "--layers", "nosuchlayer", base=INSPECT,
       expect="nosuchlayer"),
    *_numeric("inspect", "--seed", INSPECT, zero=False, huge=True),
    *_numeric("inspect", "--samples", INSPECT),
    *_numeric("inspect", "--embed-samples", INSPECT),
    *_numeric("inspect", "--embed-train-samples", INSPECT),
    _c("inspect", "--method", "unknown", "--method", "mds", base=INSPECT),
    *_numeric("inspect", "--line-steps", INSPECT),
    _c("inspect", "--line-steps", "huge", "--line-steps", HUGE, base=INSPECT),
    *_numeric("inspect", "--plane-steps", INSPECT),
    _c("inspect", "--plane-steps", "huge", "--plane-steps", HUGE, base=INSPECT),
    *_numeric("inspect", "--hessian-top", INSPECT),
    *_numeric("inspect", "--hessian-samples", INSPECT),
    _c("inspect", "--skip", "unknown", "--skip", "nosuchstep", base=INSPECT),
    _c("inspect", "--device", "unknown", "--device", "tpu", base=INSPECT),
    # ---- report -----------------------------------------------------------------------------
    *_run_argument("report"),
    _c("report", "--out", "a folder", MLP, "--out", "files", expect="files"),
    # ---- demo -------------------------------------------------------------------------------
    _c("demo", "--out", "a file", "--out", "files/a-file.txt", base=DEMO,
       expect="a-file.txt"),
    _c("demo", "--data", "unknown", "--data", "nosuchdata", base=("--out", NEW, *DEMO)),
    _c("demo", "--data-dir", "a file", "--data", "mnist", "--data-dir", "/etc/passwd",
       base=("--out", NEW, *DEMO), expect="/etc/passwd"),
    _c("demo", "--device", "unknown", "--device", "tpu", base=("--out", NEW, *DEMO)),
    *_numeric("demo", "--jobs", ("--out", NEW)),
    # ---- landscape --------------------------------------------------------------------------
    *_run_argument("landscape", "--line", "0:final"),
    _c("landscape", "--line", "no mode", MLP, expect="--line"),
    _c("landscape", "--line", "malformed", MLP, "--line", "abc"),
    _c("landscape", "--line", "unknown epoch", MLP, "--line", "0:99", expect="99"),
    *_numeric("landscape", "--steps", (MLP, "--line", "0:final")),
    _c("landscape", "--steps", "huge", MLP, "--plane", "--steps", "100000"),
    _c("landscape", "--range", "empty", MLP, "--line", "0:final", "--range", "1:0"),
    _c("landscape", "--range", "text", MLP, "--line", "0:final", "--range", "abc"),
    _c("landscape", "--range", "nan", MLP, "--line", "0:final", "--range", "nan:1",
       expect="--range"),
    _c("landscape", "--epoch", "unknown", MLP, "--plane", "--epoch", "99", expect="99"),
    _c("landscape", "--norm", "unknown", MLP, "--plane", "--norm", "nosuch"),
    _c("landscape", "--seed", "negative", MLP, "--plane", "--seed", "-1"),
    _c("landscape", "--seed", "text", MLP, "--plane", "--seed", "abc"),
    _c("landscape", "--bn", "unknown", MLP, "--plane", "--bn", "nosuch"),
    *_numeric("landscape", "--samples", (MLP, "--line", "0:final")),
    _c("landscape", "--start-run", "missing", MLP, "--line", "0:final", "--start-run",
       "no-such-run", expect="no-such-run"),
    _c("landscape", "--start-run", "other architecture", MLP, "--line", "0:final",
       "--start-run", CNN, expect=CNN),
    _c("landscape", "--device", "unknown", MLP, "--line", "0:final", "--device", "tpu"),
    _c("landscape", "--engine", "unknown", MLP, "--line", "0:final", "--engine", "nosuch"),
    _c("landscape", "--dtype", "unknown", MLP, "--line", "0:final", "--dtype", "int8"),
    _c("landscape", "--split", "unknown", MLP, "--line", "0:final", "--split", "valid"),
    _c("landscape", "--precision", "unknown", MLP, "--line", "0:final", "--precision", "fp8"),
    *_numeric("landscape", "--batch-size", (MLP, "--line", "0:final")),
    # the subcommands (the cases above use the old spelling, which still works)
    _c("landscape", "RUN", "missing", "plane", "no-such-run", expect="no-such-run"),
    _c("landscape", "--from", "unknown epoch", "line", MLP, "--from", "99", expect="99"),
    _c("landscape", "--from", "text", "line", MLP, "--from", "abc", expect="abc"),
    _c("landscape", "--to", "unknown epoch", "line", MLP, "--to", "99", expect="99"),
    _c("landscape", "--steps", "zero", "line", MLP, "--steps", "0"),
    _c("landscape", "--steps", "text", "trajectory", MLP, "--steps", "abc"),
    _c("landscape", "--norm", "not a line's", "line", MLP, "--norm", "filter"),
    _c("landscape", "--norm", "not --line's", MLP, "--line", "0:final", "--norm", "filter"),
    _c("landscape", "--start-run", "not a plane's", "plane", MLP, "--start-run", CNN,
       expect="--start-run"),
    # the Ray backend's options (checked before the run is opened; an address before Ray
    # starts; resources once connected)
    _c("landscape", "--backend", "unknown", "plane", MLP, "--backend", "spark"),
    _c("landscape", "--ray-address", "without ray", "plane", MLP, "--ray-address", "auto",
       expect="--backend ray"),
    _c("landscape", "--ray-address", "unreachable", "plane", MLP, "--backend", "ray",
       "--ray-address", "127.0.0.1:9", expect="no Ray cluster answers"),
    _c("landscape", "--ray-address", "malformed", "line", MLP, "--backend", "ray",
       "--ray-address", "head:port"),
    *_numeric("landscape", "--ray-workers", ("plane", MLP, "--backend", "ray")),
    *_numeric("landscape", "--ray-cpus", ("plane", MLP, "--backend", "ray"), nan=True),
    *_numeric("landscape", "--ray-gpus", ("trajectory", MLP, "--backend", "ray"), zero=False,
              nan=True),
    _c("landscape", "--ray-gpus", "absent", "plane", MLP, "--backend", "ray", "--ray-gpus",
       "1", expect="0 GPUs"),
    *_numeric("landscape", "--tile", ("line", MLP, "--backend", "ray")),
    # ---- hessian ----------------------------------------------------------------------------
    *_run_argument("hessian"),
    _c("hessian", "--epoch", "unknown", MLP, "--epoch", "99", expect="99"),
    _c("hessian", "--epoch", "text", MLP, "--epoch", "abc", expect="abc"),
    *_numeric("hessian", "--top", (MLP,)),
    _c("hessian", "--layers", "unknown", MLP, "--layers", "nosuchlayer",
       expect="nosuchlayer"),
    *_numeric("hessian", "--samples", (MLP,)),
    *_numeric("hessian", "--trace-samples", (MLP,)),
    _c("hessian", "--seed", "negative", MLP, "--seed", "-1"),
    _c("hessian", "--seed", "text", MLP, "--seed", "abc"),
    _c("hessian", "--device", "unknown", MLP, "--device", "tpu"),
    _c("hessian", "--backend", "unknown", MLP, "--backend", "dask"),
    _c("hessian", "--ray-address", "unreachable", MLP, "--epochs", "--backend", "ray",
       "--ray-address", "127.0.0.1:9", expect="no Ray cluster answers"),
    *_numeric("hessian", "--ray-cpus", (MLP, "--backend", "ray"), nan=True),
    *_numeric("hessian", "--ray-gpus", (MLP, "--backend", "ray"), zero=False, nan=True),
    # ---- compare -----------------------------------------------------------------------------
    *_run_argument("compare", MLP, "--out", "cmp"),
    _c("compare", "RUN", "only one", MLP, "--out", "cmp", expect="two runs"),
    _c("compare", "RUN", "twice", MLP, MLP, "--out", "cmp", expect="twice"),
    _c("compare", "--out", "a file", MLP, CNN, "--out", "files/a-file.txt",
       expect="a-file.txt"),
    _c("compare", "--epoch", "unknown", MLP, CNN, "--out", "cmp", "--epoch", "99",
       expect="99"),
    _c("compare", "--epoch", "text", MLP, CNN, "--out", "cmp", "--epoch", "abc",
       expect="abc"),
    *_numeric("compare", "--steps", (MLP, CNN, "--out", "cmp")),
    _c("compare", "--range", "text", MLP, CNN, "--out", "cmp", "--range", "abc"),
    _c("compare", "--seed", "negative", MLP, CNN, "--out", "cmp", "--seed", "-1"),
    _c("compare", "--seed", "text", MLP, CNN, "--out", "cmp", "--seed", "abc"),
    *_numeric("compare", "--samples", (MLP, CNN, "--out", "cmp")),
    _c("compare", "--sample-seed", "negative", MLP, CNN, "--out", "cmp", "--sample-seed",
       "-1"),
    _c("compare", "--sample-seed", "text", MLP, CNN, "--out", "cmp", "--sample-seed", "abc"),
    *_numeric("compare", "--delta", (MLP, CNN, "--out", "cmp"), nan=True),
    *_numeric("compare", "--line-steps", (MLP, CNN, "--out", "cmp")),
    *_numeric("compare", "--top", (MLP, CNN, "--out", "cmp")),
    *_numeric("compare", "--trace-samples", (MLP, CNN, "--out", "cmp")),
    *_numeric("compare", "--probe-train", (MLP, CNN, "--out", "cmp")),
    _c("compare", "--device", "unknown", MLP, CNN, "--out", "cmp", "--device", "tpu"),
    # ---- export ------------------------------------------------------------------------------
    *_run_argument("export", "--tensorboard", "tb"),
    _c("export", "--tensorboard", "missing", MLP, expect="--tensorboard"),
    _c("export", "--tensorboard", "a file", MLP, "--tensorboard", "files/a-file.txt",
       expect="a-file.txt"),
    _c("export", "--tensorboard", "not empty", MLP, "--tensorboard", "files/not-a-run",
       expect="not-a-run"),
    _c("export", "--tensorboard", "inside the run", MLP, "--tensorboard", f"{MLP}/tb",
       expect="inside the run"),
    # ---- maps / filters / weights / dynamics -----------------------------------------------
    *_run_argument("maps", "--layer", "conv1"),
    _c("maps", "--layer", "missing", CNN, expect="--layer"),
    _c("maps", "--layer", "unknown", CNN, "--layer", "nosuchlayer", expect="nosuchlayer"),
    _c("maps", "--index", "negative", CNN, "--layer", "conv1", "--index", "-1"),
    _c("maps", "--index", "text", CNN, "--layer", "conv1", "--index", "abc"),
    _c("maps", "--index", "huge", CNN, "--layer", "conv1", "--index", HUGE),
    _c("maps", "--index", "empty", CNN, "--layer", "conv1", "--index", ","),
    _c("maps", "--class", "unknown", CNN, "--layer", "conv1", "--class", "nosuchclass"),
    _c("maps", "--class", "empty", CNN, "--layer", "conv1", "--class", ","),
    _c("maps", "--split", "unknown", CNN, "--layer", "conv1", "--split", "valid"),
    _c("maps", "--epochs", "unknown", CNN, "--layer", "conv1", "--epochs", "99",
       expect="99"),
    _c("maps", "--epochs", "empty", CNN, "--layer", "conv1", "--epochs", ","),
    _c("maps", "--scale", "unknown", CNN, "--layer", "conv1", "--scale", "nosuch"),
    _c("maps", "--order", "unknown", CNN, "--layer", "conv1", "--order", "nosuch"),
    *_numeric("maps", "--top-k", (CNN, "--layer", "conv1")),
    _c("maps", "--view", "unknown", CNN, "--layer", "conv1", "--view", "nosuch"),
    _c("maps", "--gif", "not applicable", MLP, "--layer", "fc1", "--gif", expect="--gif"),
    _c("maps", "--device", "unknown", CNN, "--layer", "conv1", "--device", "tpu"),
    *_run_argument("filters"),
    _c("filters", "--layer", "unknown", CNN, "--layer", "nosuchlayer", expect="nosuchlayer"),
    _c("filters", "--epochs", "unknown", CNN, "--epochs", "99", expect="99"),
    _c("filters", "--epochs", "text", CNN, "--epochs", "abc", expect="abc"),
    *_numeric("filters", "--max-filters", (CNN,)),
    *_numeric("filters", "--max-in", (CNN,)),
    _c("filters", "--scale", "unknown", CNN, "--scale", "nosuch"),
    *_run_argument("weights"),
    _c("weights", "--epochs", "unknown", MLP, "--epochs", "99", expect="99"),
    _c("weights", "--epochs", "empty", MLP, "--epochs", ","),
    _c("weights", "--layers", "unknown", MLP, "--layers", "nosuchlayer",
       expect="nosuchlayer"),
    *_numeric("weights", "--bins", (MLP,)),
    _c("weights", "--bins", "huge", MLP, "--bins", "1000000000"),
    *_run_argument("dynamics"),
    # ---- attention / recurrent ----------------------------------------------------------
    *_run_argument("attention"),
    _c("attention", "--layers", "unknown", VIT, "--layers", "nosuchlayer",
       expect="nosuchlayer"),
    _c("attention", "--layers", "not attention", VIT, "--layers", "head", expect="head"),
    _c("attention", "--samples", "out of range", VIT, "--samples", "0,5000", expect="5000"),
    _c("attention", "--samples", "text", VIT, "--samples", "abc", expect="abc"),
    _c("attention", "--samples", "empty", VIT, "--samples", ","),
    _c("attention", "--epochs", "unknown", VIT, "--epochs", "99", expect="99"),
    _c("attention", "--epochs", "empty", VIT, "--epochs", ","),
    *_numeric("attention", "--n", (VIT,)),
    *_numeric("attention", "--n-probe", (VIT,), zero=False),
    *_numeric("attention", "--seed", (VIT,), zero=False),
    _c("attention", "--device", "unknown", VIT, "--device", "tpu"),
    *_run_argument("recurrent"),
    _c("recurrent", "--layer", "unknown", LSTM, "--layer", "nosuchlayer",
       expect="nosuchlayer"),
    _c("recurrent", "--layer", "not recurrent", LSTM, "--layer", "fc", expect="fc"),
    _c("recurrent", "--epochs", "unknown", LSTM, "--epochs", "99", expect="99"),
    _c("recurrent", "--saturation-epochs", "unknown", LSTM, "--saturation-epochs", "99",
       expect="99"),
    *_numeric("recurrent", "--n", (LSTM,)),
    *_numeric("recurrent", "--n-train", (LSTM,)),
    *_numeric("recurrent", "--per-class", (LSTM,)),
    *_numeric("recurrent", "--seed", (LSTM,), zero=False),
    _c("recurrent", "--device", "unknown", LSTM, "--device", "tpu"),
    *_run_argument("attribute"),
    _c("attribute", "--samples", "out of range", CNN, "--samples", "0,5000", expect="5000"),
    _c("attribute", "--samples", "text", CNN, "--samples", "abc", expect="abc"),
    _c("attribute", "--method", "unknown", CNN, "--method", "lime", expect="lime"),
    _c("attribute", "--epochs", "unknown", CNN, "--epochs", "99", expect="99"),
    _c("attribute", "--target", "out of range", CNN, "--target", "99", expect="99"),
    _c("attribute", "--target", "text", CNN, "--target", "best", expect="best"),
    _c("attribute", "--baseline", "unknown", CNN, "--baseline", "blur", expect="blur"),
    *_numeric("attribute", "--steps", (CNN,)),
    _c("attribute", "--layer", "unknown", CNN, "--layer", "nosuchlayer", expect="nosuchlayer"),
    _c("attribute", "--layer", "not spatial", CNN, "--layer", "fc1", expect="fc1"),
    *_numeric("attribute", "--n-faithfulness", (CNN,), zero=False),
    *_numeric("attribute", "--seed", (CNN,), zero=False),
    _c("attribute", "--device", "unknown", CNN, "--device", "tpu"),
    _c("attribute", "--backend", "unknown", CNN, "--backend", "spark"),
    _c("attribute", "--ray-address", "without ray", CNN, "--ray-address", "auto",
       expect="--backend ray"),
    _c("attribute", "--ray-address", "unreachable", CNN, "--backend", "ray", "--ray-address",
       "127.0.0.1:9", expect="no Ray cluster answers"),
    *_numeric("attribute", "--ray-workers", (CNN, "--backend", "ray")),
    *_numeric("attribute", "--ray-cpus", (CNN, "--backend", "ray"), nan=True),
    *_numeric("attribute", "--ray-gpus", (CNN, "--backend", "ray"), zero=False, nan=True),
    _c("attribute", "--ray-gpus", "absent", CNN, "--backend", "ray", "--ray-gpus", "1",
       expect="0 GPUs"),
    *_run_argument("units", "--layer", "conv2"),
    _c("units", "--layer", "unknown", CNN, "--layer", "nosuchlayer", expect="nosuchlayer"),
    *_numeric("units", "--top", (CNN, "--layer", "conv2")),
    _c("units", "--reduce", "unknown", CNN, "--layer", "conv2", "--reduce", "median",
       expect="median"),
    _c("units", "--channels", "out of range", CNN, "--layer", "conv2", "--channels", "0:999",
       expect="999"),
    _c("units", "--channels", "text", CNN, "--layer", "conv2", "--channels", "abc",
       expect="abc"),
    _c("units", "--epochs", "unknown", CNN, "--layer", "conv2", "--epochs", "99", expect="99"),
    _c("units", "--split", "unknown", CNN, "--layer", "conv2", "--split", "val", expect="val"),
    *_numeric("units", "--n", (CNN, "--layer", "conv2")),
    *_numeric("units", "--batch-size", (CNN, "--layer", "conv2")),
    _c("units", "--device", "unknown", CNN, "--layer", "conv2", "--device", "tpu"),
    *_run_argument("visualize", "--layer", "conv2"),
    _c("visualize", "--layer", "unknown", CNN, "--layer", "nosuchlayer",
       expect="nosuchlayer"),
    _c("visualize", "--channels", "out of range", CNN, "--layer", "conv2", "--channels",
       "0:999", expect="999"),
    _c("visualize", "--channels", "text", CNN, "--layer", "conv2", "--channels", "abc",
       expect="abc"),
    *_numeric("visualize", "--steps", (CNN, "--layer", "conv2")),
    *_numeric("visualize", "--lr", (CNN, "--layer", "conv2"), nan=True),
    _c("visualize", "--epochs", "unknown", CNN, "--layer", "conv2", "--epochs", "99",
       expect="99"),
    *_numeric("visualize", "--seed", (CNN, "--layer", "conv2"), zero=False),
    _c("visualize", "--device", "unknown", CNN, "--layer", "conv2", "--device", "tpu"),
    # ---- layers / capture / embed -----------------------------------------------------------
    *_run_argument("layers"),
    _c("layers", "--epoch", "unknown", MLP, "--dry-run", "--epoch", "99", expect="99"),
    _c("layers", "--epoch", "text", MLP, "--dry-run", "--epoch", "abc", expect="abc"),
    *_run_argument("capture", "--layers", "relu1"),
    _c("capture", "--layers", "unknown", MLP, "--layers", "nosuchlayer",
       expect="nosuchlayer"),
    _c("capture", "--layers", "empty", MLP, "--layers", ","),
    _c("capture", "--epoch", "unknown", MLP, "--layers", "relu1", "--epoch", "99",
       expect="99"),
    _c("capture", "--epoch", "text", MLP, "--layers", "relu1", "--epoch", "abc",
       expect="abc"),
    _c("capture", "--split", "unknown", MLP, "--layers", "relu1", "--split", "valid"),
    *_numeric("capture", "--n", (MLP, "--layers", "relu1")),
    _c("capture", "--pool", "unknown", CNN, "--layers", "conv1", "--pool", "nosuch"),
    _c("capture", "--pool", "zero", CNN, "--layers", "conv1", "--pool", "0"),
    _c("capture", "--pool", "huge", CNN, "--layers", "conv1", "--pool", "1000"),
    _c("capture", "--dtype", "unknown", MLP, "--layers", "relu1", "--dtype", "int8"),
    *_numeric("capture", "--batch-size", (MLP, "--layers", "relu1")),
    _c("capture", "--device", "unknown", MLP, "--layers", "relu1", "--device", "tpu"),
    _c("capture", "--max-memory", "zero", MLP, "--layers", "relu1", "--max-memory", "0"),
    _c("capture", "--max-memory", "nan", MLP, "--layers", "relu1", "--max-memory", "nan"),
    _c("capture", "--max-memory", "text", MLP, "--layers", "relu1", "--max-memory", "lots"),
    *_run_argument("embed", "--layers", "relu1"),
    _c("embed", "--layers", "unknown", MLP, "--layers", "nosuchlayer", expect="nosuchlayer"),
    _c("embed", "--layers", "empty", MLP, "--layers", ","),
    _c("embed", "--method", "unknown", MLP, "--layers", "relu1", "--method", "mds"),
    _c("embed", "--epochs", "unknown", MLP, "--layers", "relu1", "--epochs", "99",
       expect="99"),
    _c("embed", "--epochs", "empty", MLP, "--layers", "relu1", "--epochs", ","),
    *_numeric("embed", "--n", (MLP, "--layers", "relu1")),
    *_numeric("embed", "--n-train", (MLP, "--layers", "relu1")),
    _c("embed", "--split", "unknown", MLP, "--layers", "relu1", "--split", "valid"),
    _c("embed", "--seed", "negative", MLP, "--layers", "relu1", "--seed", "-1"),
    _c("embed", "--seed", "huge", MLP, "--layers", "relu1", "--seed", HUGE),
    _c("embed", "--seed", "text", MLP, "--layers", "relu1", "--seed", "abc"),
    *_numeric("embed", "--perplexity", (MLP, "--layers", "relu1"), nan=True),
    _c("embed", "--pca-dims", "negative", MLP, "--layers", "relu1", "--pca-dims", "-3"),
    _c("embed", "--pca-dims", "text", MLP, "--layers", "relu1", "--pca-dims", "abc"),
    _c("embed", "--device", "unknown", MLP, "--layers", "relu1", "--device", "tpu"),
    _c("embed", "--backend", "unknown", MLP, "--layers", "relu1", "--backend", "spark"),
    _c("embed", "--ray-address", "without ray", MLP, "--layers", "relu1", "--ray-address",
       "auto", expect="--backend ray"),
    _c("embed", "--ray-address", "unreachable", MLP, "--layers", "relu1", "--backend", "ray",
       "--ray-address", "127.0.0.1:9", expect="no Ray cluster answers"),
    *_numeric("embed", "--ray-workers", (MLP, "--layers", "relu1", "--backend", "ray")),
    *_numeric("embed", "--ray-cpus", (MLP, "--layers", "relu1", "--backend", "ray"),
              nan=True),
    # ---- fit --------------------------------------------------------------------------------
    _c("fit", "--run", "a file", "--run", "files/a-file.txt", expect="a-file.txt"),
    _c("fit", "--run", "not a fit run", "--run", MLP, expect=MLP),
    _c("fit", "--function", "unknown", "--function", "nosuch(x)", base=("--run", NEW)),
    _c("fit", "--function", "syntax", "--function", "sin(x", base=("--run", NEW)),
    _c("fit", "--function", "hostile", "--function", "x.__class__", base=("--run", NEW)),
    _c("fit", "--function", "nested", "--function", "(" * 300 + "x" + ")" * 300,
       base=("--run", NEW)),
    _c("fit", "--function", "deep", "--function", "-" * 5000 + "x", base=("--run", NEW)),
    _c("fit", "--function", "long sum", "--function", "+".join(["x"] * 3000),
       base=("--run", NEW)),
    _c("fit", "--function", "too deep", "--function", "+".join(["x"] * 600),
       base=("--run", NEW)),
    _c("fit", "--function", "too long", "--function", "x+" * 6000 + "x",
       base=("--run", NEW)),
    _c("fit", "--function", "not finite", "--function", "1/x", "--points", "11",
       base=("--run", NEW)),
    _c("fit", "--function", "missing file", "--function", "files/missing.py:f",
       base=("--run", NEW), expect="missing.py"),
    _c("fit", "--function", "changed", "--function", "sin(x)", base=("--run", FIT)),
    *_numeric("fit", "--hidden", ("--run", NEW)),
    _c("fit", "--hidden", "ignored", "--hidden", "32", base=("--run", FIT)),
    *_numeric("fit", "--depth", ("--run", NEW)),
    _c("fit", "--depth", "ignored", "--depth", "2", base=("--run", FIT)),
    *_numeric("fit", "--epochs", ("--run", NEW)),
    _c("fit", "--epochs", "ignored", "--epochs", "5", base=("--run", FIT)),
    *_numeric("fit", "--passes", ("--run", NEW)),
    _c("fit", "--passes", "ignored", "--passes", "7", base=("--run", FIT)),
    *_numeric("fit", "--lr", ("--run", NEW), nan=True),
    _c("fit", "--lr", "inf", "--lr", "inf", base=("--run", NEW)),
    _c("fit", "--lr", "ignored", "--lr", "0.1", base=("--run", FIT)),
    *_numeric("fit", "--seed", ("--run", NEW), zero=False, huge=True),
    _c("fit", "--seed", "ignored", "--seed", "3", base=("--run", FIT)),
    _c("fit", "--poly", "unknown", "--poly", "legendre", base=("--run", FIT)),
    _c("fit", "--poly", "text degree", "--poly", "chebyshev:abc", base=("--run", FIT)),
    _c("fit", "--poly", "negative degree", "--poly", "chebyshev:-1", base=("--run", FIT)),
    _c("fit", "--poly", "huge degree", "--poly", "chebyshev:1000000000", base=("--run", FIT)),
    _c("fit", "--poly", "empty", "--poly", ",", base=("--run", FIT)),
    _c("fit", "--degree", "negative", "--degree", "-1", base=("--run", FIT)),
    _c("fit", "--degree", "text", "--degree", "abc", base=("--run", FIT)),
    _c("fit", "--degree", "huge", "--degree", "1000000000", base=("--run", FIT)),
    *_numeric("fit", "--points", ("--run", NEW)),
    _c("fit", "--points", "one", "--points", "1", base=("--run", NEW)),
    _c("fit", "--points", "huge", "--points", "1000000000", base=("--run", NEW)),
    _c("fit", "--points", "ignored", "--points", "50", base=("--run", FIT)),
    _c("fit", "--range", "empty", "--range", "5:-5", base=("--run", NEW)),
    _c("fit", "--range", "text", "--range", "abc", base=("--run", NEW)),
    _c("fit", "--range", "nan", "--range", "nan:1", base=("--run", NEW)),
    _c("fit", "--range", "inf", "--range", "-inf:inf", base=("--run", NEW)),
    _c("fit", "--range", "ignored", "--range", "-3:3", base=("--run", FIT)),
    _c("fit", "--extrapolate", "inside", "--extrapolate", "0:1", base=("--run", NEW)),
    _c("fit", "--extrapolate", "text", "--extrapolate", "abc", base=("--run", NEW)),
    _c("fit", "--extrapolate", "ignored", "--extrapolate", "-9:9", base=("--run", FIT)),
    _c("fit", "--device", "unknown", "--device", "tpu", base=("--run", NEW)),
    # ---- warp -------------------------------------------------------------------------------
    _c("warp", "--run", "a file", "--run", "files/a-file.txt", expect="a-file.txt"),
    _c("warp", "--data", "unknown", "--data", "nosuchdata", base=("--run", NEW)),
    _c("warp", "--data", "missing", "--data", "files/missing.csv", base=("--run", NEW),
       expect="missing.csv"),
    _c("warp", "--data", "empty", "--data", "files/empty.csv", base=("--run", NEW),
       expect="empty.csv"),
    _c("warp", "--data", "text", "--data", "files/text.csv", base=("--run", NEW),
       expect="text.csv"),
    _c("warp", "--data", "hostile", "--data", "files/object.npz", base=("--run", NEW),
       expect="object.npz"),
    _c("warp", "--hidden", "zero", "--hidden", "0", base=("--run", NEW)),
    _c("warp", "--hidden", "text", "--hidden", "abc", base=("--run", NEW)),
    _c("warp", "--hidden", "negative", "--hidden=-3,4", base=("--run", NEW)),
    *_numeric("warp", "--epochs", ("--run", NEW)),
    *_numeric("warp", "--lr", ("--run", NEW), nan=True),
    *_numeric("warp", "--batch-size", ("--run", NEW)),
    _c("warp", "--seed", "negative", "--seed", "-1", base=("--run", NEW)),
    _c("warp", "--seed", "text", "--seed", "abc", base=("--run", NEW)),
    _c("warp", "--epoch", "unknown", "--epoch", "99999", base=("--run", NEW), expect="99999"),
    _c("warp", "--layers", "unknown", "--layers", "nosuchlayer", base=("--run", NEW),
       expect="nosuchlayer"),
    *_numeric("warp", "--lines", ("--run", NEW)),
    _c("warp", "--lines", "huge", "--lines", "100000", base=("--run", NEW)),
    _c("warp", "--device", "unknown", "--device", "tpu", base=("--run", NEW)),
    # ---- gan --------------------------------------------------------------------------------
    _c("gan", "--data", "unknown", "--data", "nosuchdata", base=("--run", NEW)),
    _c("gan", "--data", "no labels", "--data", "curve", base=("--run", NEW),
       expect="without class labels"),
    _c("gan", "--data", "not images", "--data", "moons", base=("--run", NEW),
       expect="not images"),
    _c("gan", "--data-dir", "not applicable", "--data-dir", "files", base=("--run", NEW)),
    _c("gan", "--data-dir", "a file", "--data", "mnist", "--data-dir", "/etc/passwd",
       base=("--run", NEW), expect="/etc/passwd"),
    _c("gan", "--data-dir", "hostile", "--data", "mnist", "--data-dir", "files/garbage-mnist",
       base=("--run", NEW), expect="garbage-mnist"),
    _c("gan", "--run", "a file", "--run", "files/a-file.txt", "--epochs", "1",
       expect="a-file.txt"),
    _c("gan", "--run", "another run", "--run", MLP, "--epochs", "1", expect="--resume"),
    _c("gan", "--run", "not a GAN run", "--run", MLP, "--epochs", "1", "--resume",
       expect="not a GAN run"),
    _c("gan", "--run", "another tool's folder", "--run", "files/not-a-run", "--epochs", "1",
       expect="not a shenjing run"),
    *_numeric("gan", "--epochs", ("--run", NEW), huge=True),
    *_numeric("gan", "--batch-size", ("--run", NEW)),
    *_numeric("gan", "--lr", ("--run", NEW), nan=True),
    _c("gan", "--lr", "inf", "--lr", "inf", base=("--run", NEW)),
    *_numeric("gan", "--seed", ("--run", NEW), zero=False, huge=True),
    *_numeric("gan", "--n-eval", ("--run", NEW), huge=True),
    _c("gan", "--n-eval", "one", "--n-eval", "1", base=("--run", NEW)),
    _c("gan", "--device", "unknown", "--device", "tpu", base=("--run", NEW)),
    _c("gan", "--resume", "conflict", "--resume", "--force", base=("--run", NEW),
       expect="--resume"),
    _c("gan", "--force", "not a run", "--run", "files/not-a-run", "--force", "--epochs", "1",
       expect="not-a-run"),
    # ---- dann -------------------------------------------------------------------------------
    _c("dann", "--data-dir", "missing", "--data-dir", "files/no-such-folder",
       base=("--run", NEW), expect="no-such-folder"),
    _c("dann", "--data-dir", "a file", "--data-dir", "/etc/passwd", base=("--run", NEW),
       expect="/etc/passwd"),
    _c("dann", "--data-dir", "hostile", "--data-dir", "files/garbage-mnist",
       base=("--run", NEW), expect="garbage-mnist"),
    _c("dann", "--direction", "unknown", "--direction", "usps-to-mnist", base=("--run", NEW)),
    _c("dann", "--run", "a file", "--run", "files/a-file.txt", "--epochs", "1",
       expect="a-file.txt"),
    _c("dann", "--run", "another run", "--run", MLP, "--epochs", "1", expect="--resume"),
    _c("dann", "--run", "not a DANN run", "--run", MLP, "--epochs", "1", "--resume",
       expect="not a DANN run"),
    _c("dann", "--run", "another tool's folder", "--run", "files/not-a-run", "--epochs", "1",
       expect="not a shenjing run"),
    *_numeric("dann", "--epochs", ("--run", NEW), huge=True),
    *_numeric("dann", "--batch-size", ("--run", NEW)),
    *_numeric("dann", "--lr", ("--run", NEW), nan=True),
    _c("dann", "--lr", "inf", "--lr", "inf", base=("--run", NEW)),
    *_numeric("dann", "--lambda", ("--run", NEW), zero=False, nan=True),
    _c("dann", "--lambda", "inf", "--lambda", "inf", base=("--run", NEW)),
    _c("dann", "--align", "unknown", "--align", "wasserstein", base=("--run", NEW)),
    *_numeric("dann", "--align-weight", ("--run", NEW), nan=True),
    *_numeric("dann", "--seed", ("--run", NEW), zero=False, huge=True),
    *_numeric("dann", "--n-gap", ("--run", NEW), huge=True),
    _c("dann", "--n-gap", "too few", "--n-gap", "5", base=("--run", NEW)),
    _c("dann", "--device", "unknown", "--device", "tpu", base=("--run", NEW)),
    _c("dann", "--resume", "conflict", "--resume", "--force", base=("--run", NEW),
       expect="--resume"),
    _c("dann", "--force", "not a run", "--run", "files/not-a-run", "--force", "--epochs", "1",
       expect="not-a-run"),
]

#: options deliberately without a case, and why
NO_CASE: dict[tuple[str, str], str] = {}


# ---- the workspace --------------------------------------------------------------------------
NETS = '''
import torch
from torch import nn


class Plain(nn.Module):
    def __init__(self, n_classes=10):
        super().__init__()
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, n_classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Pair(Plain):
    def forward(self, x):
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(h), h


class Raises(Plain):
    def forward(self, x):
        raise RuntimeError("my own failure")


class FailsLater(Plain):
    """Runs on the small batches of the checks, fails on the second batch of the test
    split's evaluation."""

    big_batches = 0

    def forward(self, x):
        if x.shape[0] > 4:
            FailsLater.big_batches += 1
            if FailsLater.big_batches >= 2:
                raise RuntimeError("the second big batch is bad")
        return super().forward(x)


class NanNet(Plain):
    def forward(self, x):
        return super().forward(x) * float("nan")
'''


class Payload:
    """A pickle that makes a folder when loaded: a hostile file must never run it."""

    def __reduce__(self):
        return (os.mkdir, ("PWNED",))


def _make_files(root: Path) -> None:
    import torch

    from shenjing.models.weights import save_safetensors

    files = root / "files"
    files.mkdir()
    (files / "nets.py").write_text(NETS)
    (files / "exits.py").write_text("raise SystemExit(0)\n")
    sys.path.insert(0, str(files))
    try:
        import nets  # the same classes the CLI will load, for their weights
    finally:
        sys.path.remove(str(files))
        sys.modules.pop("nets", None)
    torch.manual_seed(0)
    good = save_safetensors(nets.Plain().state_dict(), files / "plain.safetensors")
    save_safetensors(nets.Pair(n_classes=3).state_dict(), files / "pair.safetensors")
    blob = good.read_bytes()
    (files / "truncated.safetensors").write_bytes(blob[: len(blob) // 2])
    (files / "huge-header.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}")
    (files / "empty.safetensors").write_bytes(b"")
    (files / "empty.pt").write_bytes(b"")
    with open(files / "payload.pt", "wb") as fh:
        pickle.dump({"fc1.weight": Payload()}, fh)
    (files / "a-file.txt").write_text("not a folder\n")
    (files / "text.npz").write_text("x,y\n1,2\n")
    (files / "empty.npz").write_bytes(b"")
    rng = np.random.default_rng(0)
    np.savez(files / "good.npz", x=rng.normal(size=(40, 1, 8, 8)).astype(np.float32),
             y=np.arange(40) % 4)
    blob = (files / "good.npz").read_bytes()
    (files / "truncated.npz").write_bytes(blob[: len(blob) // 2])
    (files / "good.npz").unlink()
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = Payload(), Payload()
    np.savez(files / "object.npz", x=objects, y=np.arange(2))
    np.savez(files / "wide.npz", x=rng.normal(size=(40, 3, 5)).astype(np.float32),
             y=np.arange(40) % 4)
    (files / "empty.csv").write_text("")
    (files / "text.csv").write_text("a,b,label\nx,y,z\n")
    mnist = files / "garbage-mnist"
    mnist.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (mnist / name).write_bytes(b"\x1f\x8b garbage")
    (files / "not-a-run").mkdir()
    (files / "not-a-run" / "notes.txt").write_text("someone else's folder\n")
    for name, text in (("empty-run", ""), ("garbage-run", "{not json"),
                       ("future-run", '{"format_version": 99}')):
        (files / name).mkdir()
        (files / name / "run.json").write_text(text)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Five small runs (an MLP, a CNN, a ViT and a row LSTM on digits, a function fit) and
    the files."""
    import shenjing.training as training
    from shenjing.stages.fit import fit

    root = tmp_path_factory.mktemp("bad-inputs")
    training.train("mlp", "digits", epochs=1, run=root / MLP, progress=False)
    training.train("simple_cnn", "digits", epochs=1, run=root / CNN, progress=False)
    training.train("vit", "digits", epochs=1, run=root / VIT, progress=False)
    training.train("row_lstm", "digits", epochs=1, run=root / LSTM, progress=False)
    fit(root / FIT, hidden=8, epochs=1, passes_per_epoch=2, n_points=20, gif=False,
        progress=False, n_eval=101)
    _make_files(root)
    return root


#: a run's writer-lock file (shenjing.runs); a refused command must not leave one behind
LOCK_FILE = ".lock"


def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder``: a file's SHA-256, 'dir' or 'link'."""
    out = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_symlink():
            out[key] = f"link -> {os.readlink(p)}"
        elif p.is_dir():
            out[key] = "dir"
        else:
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class _TooLong(BaseException):
    """Raised by the alarm: the command accepted the value and ran on."""


def _on_alarm(signum, frame):
    raise _TooLong()


def _params(case: Case) -> list[object]:
    marks = []
    if case.owner is not None:
        key, what = case.owner
        marks.append(pytest.mark.xfail(strict=True, reason=f"owner: {OWNED[key]}: {what}"))
    if case.slow:
        marks.append(pytest.mark.slow)
    return pytest.param(case, id=case.id, marks=marks)


def run_case(case: Case, folder: Path, capsys) -> tuple[int, str, str, BaseException | None]:
    """Run the case's command in ``folder``: exit code, stdout, stderr, and the exception
    that escaped the CLI (a traceback) or cut it off (:class:`_TooLong`), if any."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(CASE_SECONDS)
    escaped: BaseException | None = None
    # a warning is printed on stderr by the real CLI; pytest would hide it. Python's default
    # filters (what a user sees) ignore these categories outside __main__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                      ResourceWarning):
            warnings.simplefilter("ignore", quiet)
        try:
            code, out, err = invoke(capsys, *case.args)
        except BaseException as exc:  # a traceback is what is tested for
            escaped = exc
            captured = capsys.readouterr()
            code, out, err = -1, captured.out, captured.err
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                    for w in caught)
    return code, out, shown + err, escaped


@pytest.mark.parametrize("case", [_params(c) for c in CASES])
def test_a_bad_input_is_refused_in_one_line_and_changes_nothing(case, workspace, tmp_path,
                                                               monkeypatch, capsys):
    folder = tmp_path / "ws"
    shutil.copytree(workspace, folder, symlinks=True)
    monkeypatch.chdir(folder)
    before = _snapshot(folder)
    code, out, err, escaped = run_case(case, folder, capsys)
    if isinstance(escaped, _TooLong):
        pytest.fail(f"accepted: still running after {CASE_SECONDS} s\n{out[-500:]}")
    assert escaped is None, f"traceback: {type(escaped).__name__}: {escaped}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (1, 2), f"exit {code}; stdout: {out[-800:]!r}; stderr: {err[-800:]!r}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    line = lines[0]
    assert (case.expect or case.option) in line, line
    assert any(word in line.lower() for word in FIX_WORDS), f"no fix in: {line}"
    assert not (folder / "PWNED").exists(), "a hostile file's payload ran"
    after = _snapshot(folder)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"files created, changed or deleted: {changed[:10]}"


def test_a_refused_command_leaves_no_lock_file(workspace, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "ws"
    shutil.copytree(workspace, folder, symlinks=True)
    monkeypatch.chdir(folder)
    assert not list(folder.rglob(LOCK_FILE))
    code, _, err = invoke(capsys, "capture", MLP, "--layers", "nosuchlayer")
    assert code == 2 and "nosuchlayer" in err
    assert not list(folder.rglob(LOCK_FILE))


def test_a_diverging_learning_rate_stops_in_one_line_with_a_failed_status(workspace, tmp_path,
                                                                         monkeypatch, capsys):
    """``--lr 1e300`` is finite and positive, so it is not refused up front: training stops
    at the first overflow with one line and the run says ``failed`` (never NaN weights and
    exit 0, as before)."""
    from shenjing.runs import Run

    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(capsys, "train", "--run", "lr", "--epochs", "2", "--lr", "1e300")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "--lr" in lines[0], err
    assert "Traceback" not in err
    assert Run(tmp_path / "lr").stage("train")["status"] == "failed"


def test_help_and_a_bare_command_still_print_the_help(capsys):
    code, out, _ = invoke(capsys, "train", "--help")
    assert code == 0 and "Usage: shenjing train [OPTIONS]" in out
    code, _, err = invoke(capsys)  # `shenjing` alone: the help, exit 2, as Click does
    assert code == 2 and "Usage: shenjing [OPTIONS] COMMAND" in err
    code, out, _ = invoke(capsys, "--version")
    assert code == 0 and out.startswith("shenjing ")


# ---- the table is complete -----------------------------------------------------------------
def _commands() -> dict[str, list[object]]:
    """Every command and its parameters, from the Typer app itself; a group's parameters
    are its subcommands' (``landscape line --from`` is a ``landscape`` option here)."""
    import typer

    from shenjing.cli.app import app

    def params(command: object) -> list[object]:
        subcommands = getattr(command, "commands", {}).values()
        return [p for sub in subcommands for p in params(sub)] if subcommands else \
            list(command.params)  # type: ignore[attr-defined]

    group = typer.main.get_command(app)
    return {name: params(cmd) for name, cmd in group.commands.items()}  # type: ignore[attr-defined]


def _spelled(param: object) -> set[str]:
    if getattr(param, "param_type_name", "") == "argument":
        return {param.name.upper()}  # type: ignore[attr-defined]
    return set(param.opts)  # type: ignore[attr-defined]


def test_every_option_has_a_case():
    """A new command or option without a bad-input case fails here; each numeric option is
    tried with a value that makes no sense (0 or negative) and with text, floats with NaN."""
    kinds: dict[tuple[str, str], set[str]] = collections.defaultdict(set)
    for case in CASES:
        kinds[case.command, case.option].add(case.kind)
    missing, thin = [], []
    for command, params in _commands().items():
        for param in params:
            if getattr(param, "is_flag", False):
                continue  # a flag has no bad value (its conflicts have cases)
            names = _spelled(param)
            option = sorted(names, key=len)[-1]
            if (command, option) in NO_CASE:
                continue
            found = set().union(*(kinds.get((command, n), set()) for n in names))
            if not found:
                missing.append(f"{command} {option}")
                continue
            annotation = param.type_descriptor.annotation  # type: ignore[attr-defined]
            if annotation in (int, float):
                want = [{"zero", "negative"}, {"text"}] + ([{"nan"}] if annotation is float
                                                           else [])
                if any(not (w & found) for w in want):
                    thin.append(f"{command} {option} ({sorted(found)})")
    assert not missing, f"options without a bad-input case: {missing}"
    assert not thin, f"numeric options missing 0/negative, text or nan: {thin}"


def test_the_suite_counts():
    """≥ 100 distinct bad inputs; the counts the lead quotes (run with -s to see them)."""
    distinct = {c.args for c in CASES}
    assert len(distinct) == len(CASES), "two cases run the same command line"
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids), [i for i, n in collections.Counter(ids).items() if n > 1]
    commands = _commands()
    per_command = collections.Counter(c.command for c in CASES if c.command in commands)
    expected_failures = sum(c.owner is not None for c in CASES)
    print(f"\nbad-input suite: {len(CASES)} distinct inputs, {sum(per_command.values())} of "
          f"them on the app's {len(commands)} commands "
          f"({', '.join(f'{k} {v}' for k, v in sorted(per_command.items()))}); "
          f"{expected_failures} marked xfail for another file's owner")
    assert len(CASES) >= 100
    assert set(per_command) == set(commands), "a command without bad-input cases"
