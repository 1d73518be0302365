"""The `transferkit` command end to end on real bundled data, as a user runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from transferkit import datasets


def run(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "transferkit.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def reviews_csv(tmp_path_factory):
    """A real review table: 300 Amazon review sentences (VADER) with positive/negative labels."""
    ds = datasets.load("sentiment-amazon")
    rng = np.random.default_rng(0)
    idx = rng.choice(len(ds), 300, replace=False)
    path = tmp_path_factory.mktemp("csv") / "reviews.csv"
    pd.DataFrame({"text": [ds.items[i] for i in idx],
                  "label": [ds.class_names[ds.labels[i]] for i in idx]}).to_csv(path, index=False)
    return path


def test_extract_then_probe_on_a_review_table(reviews_csv, tmp_path):
    r = run("extract", "--model", "st:all-MiniLM-L6-v2", "--data", str(reviews_csv), "--text-column", "text",
            "--label-column", "label", "--out", str(tmp_path / "feats"))
    assert r.returncode == 0, r.stderr
    assert "300 labelled items × 384 features" in r.stdout and "1/1 shards computed" in r.stdout
    again = run("extract", "--model", "st:all-MiniLM-L6-v2", "--data", str(reviews_csv), "--label-column", "label",
                "--out", str(tmp_path / "feats"))
    assert again.returncode == 0 and "already complete: no model work" in again.stdout
    # nor is torch imported (it costs about a second): the identity and the precision come from records
    code = ("import atexit, sys; atexit.register(lambda: print('torch imported:', 'torch' in sys.modules)); "
            "sys.argv = ['transferkit', *sys.argv[1:]]; from transferkit.cli.app import main; main()")
    light = subprocess.run([sys.executable, "-c", code, "extract", "--model", "st:all-MiniLM-L6-v2", "--data",
                            str(reviews_csv), "--label-column", "label", "--out", str(tmp_path / "feats")],
                           capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert "already complete: no model work" in light.stdout and "torch imported: False" in light.stdout, light
    p = run("probe", str(tmp_path / "feats"), "--head", "logreg", "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["heads"][0]["head"] == "logreg" and report["heads"][0]["accuracy"] > 0.7  # chance ≈ 0.58
    table = run("probe", str(tmp_path / "feats"), "--head", "auto", "--out", str(tmp_path / "model"))
    assert table.returncode == 0 and "best by validation" in table.stdout
    # a model folder, JSON + safetensors + its card only (no pickle), that predict reads from raw text
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["README.md", "model.json", "model.safetensors"]
    pred = run("predict", str(tmp_path / "model"), "--data", str(reviews_csv), "--out", str(tmp_path / "p.csv"))
    assert pred.returncode == 0, pred.stderr
    assert "300 predictions (probe model" in pred.stdout and "accuracy" in pred.stdout


def test_a_cached_re_extract_does_not_build_the_model(reviews_csv, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from transferkit.cli import app
    from transferkit.cli.options import BackboneArgs

    built = []
    real = BackboneArgs.load
    monkeypatch.setattr(BackboneArgs, "load", lambda self, modality: built.append(modality) or real(self, modality))
    args = ["extract", "--data", str(reviews_csv), "--label-column", "label", "--out", str(tmp_path / "f")]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0 and "1/1 shards computed" in first.output and built == ["text"]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "already complete: no model work" in again.output
    assert built == ["text"]  # the features' key came from the identity record: no model built
    other = CliRunner().invoke(app, [*args, "--pooling", "cls"])  # other features: built, and the folder refused
    assert "already holds other features" in str(other.exception) and built == ["text", "text"]


def test_extract_an_image_folder_with_the_default_backbone(tmp_path):
    from PIL import Image

    ds = datasets.load("digits")
    for i in range(40):
        folder = tmp_path / "imgs" / ds.class_names[ds.labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.items[i]).save(folder / f"{i}.png")
    r = run("extract", "--data", str(tmp_path / "imgs"), "--image-size", "64", "--out", str(tmp_path / "f"))
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    assert meta["backbone"]["spec"] == "effnet:lite0" and meta["n_items"] == 40


@pytest.mark.parametrize("args,words", [
    (["extract", "--data", "/no/such/folder", "--out", "x"], "/no/such/folder"),
    (["extract", "--data", "bundled:digits", "--model", "timm:resnet18", "--out", "x"], "timm:resnet18"),
    (["extract", "--data", "bundled:digits", "--model", "resnet18", "--out", "x"], "SOURCE:NAME"),
    (["probe", "/no/such/feats"], "/no/such/feats"),
    (["extract", "--data", "bundled:digits", "--store-dtype", "float64", "--out", "x"], "float32, float16"),
])
def test_user_errors_are_one_line_without_traceback(args, words, tmp_path):
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and words in r.stderr
    assert r.stderr.strip().startswith("error:")


def test_bad_head_is_named(reviews_csv, tmp_path):
    run("extract", "--data", str(reviews_csv), "--label-column", "label", "--out", str(tmp_path / "f"))
    r = run("probe", str(tmp_path / "f"), "--head", "forest")
    assert r.returncode == 2 and "forest" in r.stderr and "logreg" in r.stderr


def test_models_lists_offline_backbones_and_bundled_data():
    r = run("models")
    assert r.returncode == 0, r.stderr
    for word in ("effnet:lite0", "st:all-MiniLM-L6-v2", "timm:resnet50", "digits", "mnist", "sentiment-tweets"):
        assert word in r.stdout


def test_every_command_has_help():
    """Each command answers --help (that it imports nothing heavy for it: tests/architecture/test_layers.py)."""
    from typer.testing import CliRunner

    from transferkit.cli import app

    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    assert {"demo", "models", "extract", "probe", "rank", "finetune", "predict", "adapt"} <= set(names)
    for cmd in names:
        r = CliRunner().invoke(app, [cmd, "--help"])
        assert r.exit_code == 0 and "Usage" in r.output, (cmd, r.output)


@pytest.mark.slow
def test_demo_quick_runs_offline_and_prints_the_table(tmp_path):
    r = run("demo", "--quick", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "results.json").read_text())
    tasks = {row["task"] for row in rows}
    assert tasks == {"tweet sentiment", "MNIST digits"}
    assert any("baseline" in row["method"] for row in rows)
    assert "tweet sentiment:" in r.stdout and "MNIST digits:" in r.stdout
    report = json.loads((tmp_path / "compare" / "results.json").read_text())  # demo grows a compare of the routes
    assert [s["name"] for s in report["strategies"]][0] == "baseline:tfidf"  # the compare includes the baseline
    assert [s["status"] for s in report["strategies"]] == ["ok", "ok", "ok"]
    assert "recommended:" in r.stdout and (tmp_path / "compare" / "index.html").exists()
    # it ends by handing over the recommended model, and saying how to use it
    assert (tmp_path / "compare" / "best" / "model.json").exists()
    assert f"transferkit predict {tmp_path / 'compare' / 'best'}" in r.stdout.replace("\n", "")


def test_extract_skips_bad_images_when_asked_and_lists_them(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((12, 12), 40 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    fail = run("extract", "--data", str(tmp_path / "imgs"), "--image-size", "32", "--out", str(tmp_path / "f"))
    assert fail.returncode == 2 and "broken.png" in fail.stderr and "Traceback" not in fail.stderr
    ok = run("extract", "--data", str(tmp_path / "imgs"), "--image-size", "32", "--out", str(tmp_path / "f"),
             "--on-bad-input", "skip")
    assert ok.returncode == 0, ok.stderr
    assert "skipped 1 bad item" in ok.stderr and "broken.png" in ok.stderr
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    assert meta["n_items"] == 6 and meta["data"]["skipped"][0]["item"].endswith("broken.png")
