"""The report's one gate for reading a run's files (``report/run_files.py``): regular files
inside the run folder only; everything else refused with the reason, nothing opened."""

from __future__ import annotations

import os

import pytest

from shenjing.errors import DataError
from shenjing.report.run_files import files_inside_run, read_run_json, run_file


@pytest.fixture
def tree(tmp_path):
    """run/ with a figure, a JSON file and links in and out; outside/ with a secret."""
    run, outside = tmp_path / "run", tmp_path / "outside"
    (run / "figures").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    (run / "figures" / "a.png").write_bytes(b"png")
    (run / "figures" / "in.png").symlink_to("a.png")
    (run / "figures" / "out.png").symlink_to(outside / "secret.png")
    (run / "figures" / "dangling.png").symlink_to(outside / "gone.png")
    (run / "view.json").write_text('{"figures": ["figures/a.png"]}')
    return run, outside


@pytest.mark.parametrize("name,reason", [
    ("../outside/secret.png", "it names a place outside the run folder"),
    ("figures/../../outside/secret.png", "it names a place outside the run folder"),
    ("figures/out.png", "it is a link that leads outside the run folder"),
    ("figures/dangling.png", "it is a link that leads outside the run folder"),
    ("figures", "it is a folder"),
    (42, "not a file name (int '42')"),
    ("", "not a file name (str '')"),
    ("fig\0ures/a.png", "not a file name"),
])
def test_refused_names_say_why(tree, name, reason):
    run, _ = tree
    checked = run_file(run, name)
    assert checked.path is None and checked.refused.startswith(reason)
    assert checked.skipped().endswith("The report reads only regular files inside the run "
                                      "folder.")


def test_an_absolute_path_outside_is_refused_and_one_inside_is_read(tree):
    run, outside = tree
    assert run_file(run, str(outside / "secret.png")).refused == \
        "it names a place outside the run folder"
    inside = run_file(run, str(run / "figures" / "a.png"))
    assert inside.path == (run / "figures" / "a.png").resolve()


def test_files_inside_the_run_are_read_links_inside_followed_absent_is_not_an_error(tree):
    run, _ = tree
    assert run_file(run, "figures/a.png").path == (run / "figures" / "a.png").resolve()
    assert run_file(run, "figures/in.png").path == (run / "figures" / "a.png").resolve()
    absent = run_file(run, "figures/never-written.png")
    assert absent.path is None and absent.refused == ""


def test_a_run_reached_through_a_link_is_still_its_own_folder(tree, tmp_path):
    run, _ = tree
    (tmp_path / "alias").symlink_to(run, target_is_directory=True)
    assert run_file(tmp_path / "alias", "figures/a.png").readable
    assert run_file(tmp_path / "alias", "figures/out.png").refused


def test_special_files_are_refused_without_being_opened(tree):
    run, _ = tree
    os.mkfifo(run / "figures" / "pipe.png")  # opening it for reading would block forever
    assert run_file(run, "figures/pipe.png").refused == "it is not a regular file"


def test_a_link_loop_is_refused(tree):
    run, _ = tree
    (run / "loop1").symlink_to("loop2")
    (run / "loop2").symlink_to("loop1")
    assert run_file(run, "loop1").refused.startswith("it cannot be resolved")


def test_read_run_json(tree, tmp_path):
    run, outside = tree
    assert read_run_json(run, "view.json") == {"figures": ["figures/a.png"]}
    assert read_run_json(run, "missing.json") is None
    (outside / "x.json").write_text("{}")
    (run / "linked.json").symlink_to(outside / "x.json")
    with pytest.raises(DataError, match=r"Skipped linked\.json: it is a link that leads "
                       r"outside the run folder"):
        read_run_json(run, "linked.json")
    (run / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json is not valid JSON \(JSONDecodeError"):
        read_run_json(run, "bad.json")
    (run / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=r"deep\.json is not valid JSON \(RecursionError"):
        read_run_json(run, "deep.json")


def test_files_inside_run_walks_folders_and_follows_links_once(tree, tmp_path):
    run, outside = tree
    assert files_inside_run(run, [run / "figures" / "a.png"]) == ""
    assert files_inside_run(run, [run / "figures"]).endswith(
        "it is a link that leads outside the run folder")  # figures/dangling.png, out.png
    (run / "figures" / "out.png").unlink()
    (run / "figures" / "dangling.png").unlink()
    assert files_inside_run(run, [run / "figures"]) == ""
    (run / "figures" / "sub").mkdir()
    (run / "figures" / "sub" / "back").symlink_to(run / "figures", target_is_directory=True)
    assert files_inside_run(run, [run / "figures"]) == ""  # a loop inside: visited once
    (run / "figures" / "sub" / "x.png").symlink_to(outside / "secret.png")
    problem = files_inside_run(run, [run / "figures"])
    assert problem.endswith("x.png: it is a link that leads outside the run folder")
    assert files_inside_run(run, [outside / "secret.png"]).endswith(
        "it names a place outside the run folder")
