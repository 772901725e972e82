"""Bad values for ``capture``, ``embed``, ``warp`` and ``fit``: exit 2, one line naming the
option and the fix, and nothing in the run folder created or changed."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cli_invoke
from cli_invoke import invoke


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    import shenjing.training as training

    folder = tmp_path_factory.mktemp("bad") / "mlp"
    training.train("mlp", "digits", epochs=1, run=folder, progress=False)
    return folder


def _contents(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(folder.rglob("*"))}


CASES = [
    (["embed", "{run}", "--layers", "relu1", "--n", "0"], "--n 0: expected a whole number ≥ 3"),
    (["embed", "{run}", "--layers", "relu1", "--perplexity", "0"],
     "--perplexity 0.0: expected a finite number > 0"),
    (["embed", "{run}", "--layers", "relu1", "--perplexity", "nan"],
     "--perplexity nan: expected a finite number > 0"),
    (["embed", "{run}", "--layers", "relu1", "--pca-dims", "-3"],
     "--pca-dims -3: expected a whole number ≥ 1"),
    (["embed", "{run}", "--layers", "relu1", "--n-train", "-1"],
     "--n-train -1: expected a whole number ≥ 2"),
    (["embed", "{run}", "--layers", "relu1", "--seed", "-1"],
     "--seed -1: expected a whole number from 0"),
    (["capture", "{run}", "--layers", "relu1", "--n", "-5"], "--n -5: expected a whole number ≥ 1"),
    (["capture", "{run}", "--layers", "relu1", "--max-memory", "-1G"],
     "--max-memory '-1G' must be a positive size"),
    (["capture", "{run}", "--layers", "relu1", "--max-memory", "lots"],
     "--max-memory 'lots' is not a size"),
    (["warp", "--run", "{new}", "--lines", "0"], "--lines 0: expected a whole number ≥ 2"),
    (["warp", "--run", "{new}", "--hidden", "0"], "--hidden '0': '0' is not a whole number ≥ 1"),
    (["warp", "--run", "{new}", "--hidden", "abc"], "--hidden 'abc': 'abc' is not a whole number"),
    (["warp", "--run", "{new}", "--lr", "inf"], "--lr inf: expected a finite number > 0"),
    (["fit", "--run", "{new}", "--epochs", "0"], "epochs 0: expected a whole number ≥ 1"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(c[0][:1] + c[0][-2:])
                                                            for c in CASES])
def test_a_bad_value_is_refused_before_anything_is_written(tmp_path, capsys, mlp_run, args,
                                                          message):
    new = tmp_path / "new-run"
    before = _contents(mlp_run)
    code, out, err = invoke(capsys, *[a.format(run=mlp_run, new=new) for a in args])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    assert _contents(mlp_run) == before
    assert not new.exists()


def test_max_memory_is_obeyed_when_streaming_to_disk(capsys, mlp_run):
    """``--max-memory 1K`` used to be ignored by the disk capture (3.5 MiB written)."""
    code, _, err = invoke(capsys, "capture", str(mlp_run), "--layers", "relu1",
                          "--max-memory", "1K")
    assert code == 1 and "above the 1.00 KiB allowed (--max-memory)" in err, err
    assert not list((mlp_run / "activations").rglob("*.npy"))
