"""``shenjing landscape line|plane|trajectory`` and the old ``landscape RUN --line A:B``
(``--plane``, ``--trajectory``) spelling: the same files either way, a deprecation note for
the old one, and an option given to a kind it does not apply to refused in one line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: cli_invoke
from cli_invoke import invoke

EVERY_KIND = ("--steps", "--samples", "--split", "--device", "--engine", "--dtype",
              "--precision", "--batch-size", "--no-figures", "--quiet", "--trust-code",
              # where the points are computed (docs/scale.md)
              "--backend", "--ray-address", "--ray-workers", "--ray-cpus", "--ray-gpus",
              "--tile")
OPTIONS: dict[str, set[str]] = {
    "line": {*EVERY_KIND, "--from", "--to", "--start-run", "--range", "--compile",
             "--no-compile"},
    "plane": {*EVERY_KIND, "--epoch", "--range", "--norm", "--seed", "--include-1d", "--bn",
              "--compile", "--no-compile"},
    "trajectory": set(EVERY_KIND),
}
"""Which options each kind takes: what the stage function of that kind uses."""

VALUES = {"--from": "0", "--to": "final", "--start-run": "RUN", "--epoch": "final",
          "--norm": "filter", "--seed": "0", "--bn": "eval", "--range": "-1:1"}
"""A value each option would accept where it applies (flags take none)."""

OLD_SPELLING = {"line": ("--line", "0:final"), "plane": ("--plane",),
                "trajectory": ("--trajectory",)}


def _not_applying() -> list[tuple[str, str, list[str]]]:
    """(kind, option, the kinds that take it) for every option a kind does not take."""
    every = set().union(*OPTIONS.values())
    return [(kind, option, [k for k in OPTIONS if option in OPTIONS[k]])
            for kind in OPTIONS for option in sorted(every - OPTIONS[kind])]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """An MLP on 2-D points: with a flat input and the engine path and batch size given,
    the engine measures nothing, so two runs of one command choose the same settings."""
    from shenjing.training import train

    path = tmp_path_factory.mktemp("spellings") / "mlp"
    train("mlp", "moons", epochs=2, run=path, progress=False, model_kwargs={"hidden": [16]})
    return path


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_each_kind_takes_exactly_its_options():
    """The table above is what the commands accept (so the rejections below cover all)."""
    import typer.main

    from shenjing.cli.app import app

    group = typer.main.get_command(app).commands["landscape"]  # type: ignore[attr-defined]
    for kind, command in group.commands.items():
        taken = {name for p in command.params if p.param_type_name == "option"
                 for name in (*p.opts, *p.secondary_opts)}
        assert taken == OPTIONS[kind], kind


@pytest.mark.parametrize("spelling", ["new", "old"])
@pytest.mark.parametrize(("kind", "option", "owners"), _not_applying(),
                         ids=[f"{k} {o}" for k, o, _ in _not_applying()])
def test_an_option_of_another_kind_is_refused_in_one_line(run_dir, capsys, spelling, kind,
                                                          option, owners):
    given = [option, *([VALUES[option]] if option in VALUES else [])]
    given = [str(run_dir) if v == "RUN" else v for v in given]
    args = (["landscape", kind, str(run_dir), *given] if spelling == "new" else
            ["landscape", str(run_dir), *OLD_SPELLING[kind], *given])
    before = _listing(run_dir)
    code, out, err = invoke(capsys, *args, "--quiet", "--no-figures")
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    what = f"a {kind}" if spelling == "new" else f"--{kind}"
    where = " and ".join(f"`landscape {k}`" for k in owners)
    assert lines[0].startswith(f"UsageError: {option} does not apply to {what}"), lines[0]
    assert f"; it is an option of {where}; see `shenjing landscape {kind} --help`" in lines[0]
    assert _listing(run_dir) == before


def test_the_trajectory_says_why_range_does_not_apply(run_dir, capsys):
    code, _, err = invoke(capsys, "landscape", "trajectory", str(run_dir), "--range", "-1:1")
    assert code == 2
    assert err.startswith("UsageError: --range does not apply to a trajectory: its plane "
                          "covers the trajectory's own extent; it is an option of "
                          "`landscape line` and `landscape plane`"), err


def test_an_unknown_option_is_still_clicks_one_line(run_dir, capsys):
    code, _, err = invoke(capsys, "landscape", "plane", str(run_dir), "--nosuch")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("UsageError: No such option: --nosuch"), err


@pytest.mark.parametrize(("args", "message"), [
    ([], "UsageError: choose exactly one of --line START:END, --plane, --trajectory; or, "
         "the new spelling, `shenjing landscape line|plane|trajectory RUN`"),
    (["--plane", "--trajectory"], "UsageError: choose exactly one of"),
    (["--line"], "UsageError: --line '' must look like START:END"),
    (["--line=0"], "UsageError: --line '0' must look like START:END"),
    (["--line", "0:final", "--to", "1"], "UsageError: --line and --to both give the line's "
                                         "ends; use `shenjing landscape line RUN --from "
                                         "START --to END` alone"),
])
def test_the_old_spelling_refuses_what_it_cannot_translate(run_dir, capsys, args, message):
    code, _, err = invoke(capsys, "landscape", str(run_dir), *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(message), err


def test_the_old_spelling_is_translated_token_for_token():
    from shenjing.cli._landscape_group import translate_old_spelling

    assert translate_old_spelling(["--steps", "5", "--line=init:3", "runs/a", "--quiet"]) == \
        ("line", ["--steps", "5", "--from", "init", "--to", "3", "runs/a", "--quiet"])
    assert translate_old_spelling(["runs/a", "--line", " 0 : final "]) == \
        ("line", ["runs/a", "--from", "0", "--to", "final"])
    assert translate_old_spelling(["--trajectory", "runs/a", "--steps", "9"]) == \
        ("trajectory", ["runs/a", "--steps", "9"])


@pytest.mark.parametrize(("args", "usage"), [
    (["--help"], "Usage: shenjing landscape [OPTIONS] COMMAND [ARGS]..."),
    (["RUN", "--help"], "Usage: shenjing landscape [OPTIONS] COMMAND [ARGS]..."),
    (["RUN", "--plane", "--help"], "Usage: shenjing landscape plane [OPTIONS]"),
    (["line", "--help"], "Usage: shenjing landscape line [OPTIONS]"),
])
def test_help_of_either_spelling(capsys, args, usage):
    code, out, _ = invoke(capsys, "landscape", *args)
    assert code == 0 and out.startswith(usage), out[:200]


# each kind once, small: 3 points per axis on 50 samples, one engine path (no measuring)
SMALL = ("--steps", "3", "--samples", "50", "--engine", "loop", "--batch-size", "50",
         "--quiet", "--no-figures")
SPELLINGS = {
    "line": (["line", "RUN", "--from", "0", "--to", "final"], ["RUN", "--line", "0:final"]),
    "plane": (["plane", "RUN", "--norm", "layer", "--seed", "3"],
              ["RUN", "--plane", "--norm", "layer", "--seed", "3"]),
    "trajectory": (["trajectory", "RUN"], ["RUN", "--trajectory"]),
}


def _arrays(run: Path) -> dict[str, object]:
    """Every array of every landscape file, the metadata without what differs between two
    runs of the same command (its timings, the run folder's path)."""
    found: dict[str, object] = {}
    for path in sorted((run / "landscapes").glob("*.npz")):
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                value = npz[key]
                if key == "meta":
                    meta = json.loads(str(value))
                    for volatile in ("seconds", "ms_per_point"):
                        meta.pop(volatile, None)
                    meta.get("provenance", {}).pop("run_path", None)
                    value = meta
                found[f"{path.name}:{key}"] = value
    return found


@pytest.mark.parametrize("kind", list(SPELLINGS))
def test_both_spellings_write_the_same_arrays(run_dir, tmp_path, capsys, kind):
    new, old = SPELLINGS[kind]
    runs = {}
    for name, args in (("new", new), ("old", old)):
        run = tmp_path / name / run_dir.name
        shutil.copytree(run_dir, run)
        code, out, err = invoke(capsys, "landscape", *[str(run) if a == "RUN" else a
                                                       for a in args], *SMALL)
        assert code == 0, (out, err)
        runs[name] = (run, out.replace(str(run), "RUN"), err)
    (new_run, new_out, new_err), (old_run, old_out, _) = runs["new"], runs["old"]
    assert new_out == old_out and new_err == ""
    new_arrays, old_arrays = _arrays(new_run), _arrays(old_run)
    assert new_arrays.keys() == old_arrays.keys() and new_arrays
    for key, value in new_arrays.items():
        if isinstance(value, dict):
            assert value == old_arrays[key], key
        else:
            np.testing.assert_array_equal(value, old_arrays[key], err_msg=key, strict=True)


def test_the_old_spelling_ends_with_one_note_naming_the_new(run_dir, tmp_path, capsys):
    run = tmp_path / run_dir.name
    shutil.copytree(run_dir, run)
    code, out, err = invoke(capsys, "landscape", str(run), "--line", "0:final", *SMALL)
    assert code == 0, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0] == ("note: `shenjing landscape RUN --line/--plane/--trajectory` is "
                        f"deprecated; write: shenjing landscape line {run} --from 0 --to "
                        f"final {' '.join(SMALL)}")
    assert "line: 5 points, 5 computed" in " ".join(out.split())  # 3 steps + α = 0 and 1
