"""`transferkit finetune` → `transferkit predict` on a CSV of real text; run folders rebuild from files alone."""

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from transferkit.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tweets_csv(tmp_path_factory):
    from transferkit import datasets
    from transferkit.data import stratified_sample

    ds = datasets.load("sentiment-tweets")
    path = tmp_path_factory.mktemp("csv") / "tweets.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in stratified_sample(ds.labels, 160, seed=0):
            w.writerow([ds.items[i], ds.class_names[ds.labels[i]]])
    return path


@pytest.fixture(scope="module")
def head_run(tweets_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    r = runner.invoke(app, ["finetune", "--data", str(tweets_csv), "--text-column", "review", "--label-column",
                            "sentiment", "--strategy", "head", "--epochs", "3", "--lr", "1e-3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "trainable parameters 770 of" in r.output  # 384 × 2 + 2: only the head
    return out


def test_predict_writes_probabilities_and_scores(head_run, tweets_csv, tmp_path):
    out = tmp_path / "pred.csv"
    r = runner.invoke(app, ["predict", str(head_run), "--data", str(tweets_csv), "--text-column", "review",
                            "--label-column", "sentiment", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 160 and set(rows[0]) == {"id", "prediction", "p_negative", "p_positive"}
    p = np.array([[float(row["p_negative"]), float(row["p_positive"])] for row in rows])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    acc = float(r.output.split("accuracy ")[1].split(",")[0])
    assert acc > 0.75  # the head learned (majority class is 0.68)
    history = list(csv.DictReader(open(head_run / "history.csv")))
    assert [int(h["epoch"]) for h in history] == [1, 2, 3]


def test_predict_refuses_labels_never_trained_on(head_run, tmp_path):
    data = tmp_path / "new.csv"
    data.write_text("review,sentiment\ngreat film,positive\nmeh,neutral\n")
    r = runner.invoke(app, ["predict", str(head_run), "--data", str(data), "--text-column", "review",
                            "--label-column", "sentiment", "--out", str(tmp_path / "p.csv")])
    assert "never trained on" in str(r.exception) and "neutral" in str(r.exception)


def test_user_errors_are_one_line(tweets_csv, tmp_path):
    # (main() turns these TransferkitErrors into one `error:` line and exit code 2; CliRunner sees the exception)
    cases = [
        (["finetune", "--data", str(tweets_csv), "--strategy", "nope", "--out", str(tmp_path / "a")], "strategy"),
        (["finetune", "--data", str(tweets_csv), "--batch-size", "10", "--grad-accum", "3", "--out",
          str(tmp_path / "b")], "grad_accum"),
        (["predict", str(tmp_path / "missing"), "--data", str(tweets_csv), "--out", str(tmp_path / "p.csv")],
         "does not exist: give a model folder"),
    ]
    for args, words in cases:
        r = runner.invoke(app, args)
        assert r.exception is not None and words in str(r.exception), (args, r.output)


def test_run_folder_holds_no_pickles_and_escaping_paths_are_refused(head_run, tmp_path):
    import shutil

    from transferkit.finetune import FinetuneError, load_run
    from transferkit.finetune.checkpoint import RunFolder

    names = sorted(p.name for p in head_run.iterdir())
    assert names == ["README.md", "history.csv", "history.json", "model.json", "model.safetensors", "run.json"]
    assert (head_run / "model.safetensors").read_bytes()[:8] != b"\x80\x04\x95"[:8]
    with pytest.raises(FinetuneError, match="outside the run folder"):
        RunFolder(head_run).inside("../../etc/passwd")
    # a pickle where the weights should be is refused, never unpickled
    bad = tmp_path / "bad"
    shutil.copytree(head_run, bad)
    import pickle

    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (bad / "model.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(FinetuneError, match="not a readable safetensors"):
        load_run(bad)
    assert not (tmp_path / "pwned").exists()
