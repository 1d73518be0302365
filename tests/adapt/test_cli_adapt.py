"""`transferkit shift` and `transferkit adapt` end to end on small real image folders (MNIST → UCI digits)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import transferkit
from transferkit import datasets

SRC = str(Path(transferkit.__file__).resolve().parents[1])  # the tree under test, also when cwd moves


def run(*args, cwd=None):
    path = os.pathsep.join([SRC, *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "transferkit.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=900)


def _folder(root, name, n_per_class, classes=range(10)):
    from PIL import Image

    ds = datasets.load(name)
    for c in classes:
        idx = np.flatnonzero(ds.labels == c)[:n_per_class]
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        for i in idx:
            Image.fromarray(ds.items[i]).save(root / str(c) / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("domains")
    return {"mnist": _folder(base / "mnist", "mnist", 8), "digits": _folder(base / "digits", "digits", 8),
            "digits3": _folder(base / "digits3", "digits", 5, classes=range(3))}


def _invoke(*args):
    """In process (typer's CliRunner): no interpreter start-up or torch import per call."""
    from typer.testing import CliRunner

    from transferkit.cli import app

    return CliRunner().invoke(app, list(args))


def test_shift_reports_a_shift_between_mnist_and_digits(folders):
    r = _invoke("shift", "--source", str(folders["mnist"]), "--target", str(folders["digits"]), "--image-size", "64",
            "--permutations", "100")
    assert r.exit_code == 0, r.output
    assert "proxy A-distance" in r.stdout and "per-class drift" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("shift:") or "shift: the target differs" in r.stdout


def test_adapt_writes_a_run_folder_that_load_run_reads(folders, tmp_path):
    out = tmp_path / "run"
    r = run("adapt", "--source", str(folders["mnist"]), "--target", str(folders["digits"]), "--image-size", "64",
            "--method", "coral", "--target-labels", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "target_accuracy" in r.stdout and "model written to" in r.stdout
    doc = json.loads((out / "model.json").read_text())
    assert doc["kind"] == "adapt-features" and doc["training"]["method"] == "coral"
    assert doc["backbone"]["spec"] == "effnet:lite0" and doc["backbone"]["build"] == {"image_size": 64}
    assert doc["class_names"] == [str(i) for i in range(10)] and "accuracy" in doc["metrics"]["target"]
    assert doc["precision"] in ("fp32", "bf16") and (out / "README.md").exists()
    from transferkit.adapt import load_run
    from transferkit.backbones import load_backbone
    from transferkit.data import load_data
    from transferkit.features import extract_features

    run_ = load_run(out)
    bb = load_backbone(run_.backbone_spec, **run_.backbone_options)
    X = extract_features(bb, load_data(str(folders["digits"])), progress=False).features()
    assert run_.predict_proba(X).shape == (80, 10)
    # `transferkit predict` takes adaptation runs too, and gives the same probabilities
    r = _invoke("predict", str(out), "--data", str(folders["digits"]), "--out", str(tmp_path / "pred.csv"))
    assert r.exit_code == 0, r.output
    import csv

    rows = list(csv.DictReader(open(tmp_path / "pred.csv")))
    assert len(rows) == 80 and "accuracy" in r.output
    p = np.array([[float(row[f"p_{c}"]) for c in range(10)] for row in rows])
    np.testing.assert_allclose(p, run_.predict_proba(X), atol=1e-5)
    r = run("adapt", "--benchmark", "nope", cwd=tmp_path)  # main(): one error line, exit 2, no traceback
    assert r.returncode == 2 and "Traceback" not in r.stderr and "error:" in r.stderr and "digits" in r.stderr


def test_adapt_refuses_differing_class_sets_and_bad_methods(folders):
    """The errors (main() prints them as one `error:` line, exit 2; the subprocess test covers that path)."""
    from transferkit.errors import TransferkitError

    r = _invoke("adapt", "--source", str(folders["mnist"]), "--target", str(folders["digits3"]), "--image-size",
                "64", "--method", "coral", "--target-labels")
    assert isinstance(r.exception, TransferkitError) and "class sets differ" in str(r.exception), r.output
    r = _invoke("adapt", "--source", str(folders["mnist"]), "--target", str(folders["digits"]), "--image-size", "64",
                "--method", "fancy")
    assert isinstance(r.exception, TransferkitError) and "fancy" in str(r.exception) and "coral" in str(r.exception)
    r = _invoke("adapt", "--benchmark", "nope")
    assert isinstance(r.exception, TransferkitError) and "digits" in str(r.exception)
