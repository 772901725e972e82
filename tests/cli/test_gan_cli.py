"""``shenjing gan`` in-process: one stage call, its lines, the report, resume and refusals."""

from __future__ import annotations

import json

from cli_invoke import invoke


def test_gan_trains_measures_and_reports(capsys, tmp_path):
    run = tmp_path / "gan"
    code, out, err = invoke(capsys, "gan", "--epochs", "2", "--n-eval", "100", "--run",
                            str(run))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("classifier: mlp trained on the same data, test accuracy 0.9")
    assert "not FID" in lines[1]
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in epochs] == ["epoch 0", "epoch 1", "epoch 2"]
    assert all("classes covered" in ln and "Fréchet" in ln for ln in epochs)
    assert lines[-1] == f"report: {run / 'report.html'}"
    assert (run / "report.html").is_file()
    stages = json.loads((run / "run.json").read_text())["stages"]
    assert stages["gan"]["status"] == "done" and stages["report"]["status"] == "done"
    assert "gan" in stages["report"]["sections"]

    # again without --resume: refused in one line, nothing changed
    before = (run / "gan" / "history.jsonl").read_bytes()
    code, out, err = invoke(capsys, "gan", "--epochs", "2", "--run", str(run))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--resume" in err
    # --resume to more epochs continues after the last one
    code, out, err = invoke(capsys, "gan", "--epochs", "3", "--n-eval", "100", "--run",
                            str(run), "--resume")
    assert code == 0, err
    assert "resumed after epoch 2" in out
    assert (run / "gan" / "history.jsonl").read_bytes().startswith(before)


def test_gan_refuses_an_unlabelled_dataset_in_one_line(capsys, tmp_path):
    code, _out, err = invoke(capsys, "gan", "--data", "curve", "--run", str(tmp_path / "r"))
    assert code == 2
    assert err.strip().startswith("UsageError: --data 'curve' is regression data without "
                                  "class labels")
    assert not (tmp_path / "r").exists()


def test_gan_help_says_it_resumes(capsys):
    code, out, _ = invoke(capsys, "gan", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "Resumable: --resume continues a killed run" in text
    assert "not FID" in text
