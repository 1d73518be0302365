"""Small real models of every route, each written as a model folder; tests/model, tests/export and tests/serve
share them (session-scoped, imported by tests/conftest.py).

Everything is fp32, so "the same answers" can be asserted at a tight tolerance on any host (bf16 hosts round
differently; the precision rule itself is tested in tests/test_runtime.py and test_precision.py)."""

import numpy as np
import pandas as pd
import pytest

from transferkit import datasets
from transferkit.data import stratified_sample


@pytest.fixture(scope="session")
def tweets_csv(tmp_path_factory):
    """200 real tweets (VADER) as a table with a `label` column."""
    ds = datasets.load("sentiment-tweets")
    idx = stratified_sample(ds.labels, 200, seed=0)
    path = tmp_path_factory.mktemp("tweets") / "tweets.csv"
    pd.DataFrame({"text": [ds.items[i] for i in idx], "label": [ds.class_names[ds.labels[i]] for i in idx]}
                 ).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def digit_folders(tmp_path_factory):
    """Real MNIST (source) and UCI digits (target) as PNG folders, 10 a class."""
    from PIL import Image

    root = tmp_path_factory.mktemp("digits")
    for name in ("mnist", "digits"):
        ds = datasets.load(name)
        for c in range(10):
            (root / name / str(c)).mkdir(parents=True)
            for i in np.flatnonzero(ds.labels == c)[:10]:
                Image.fromarray(ds.items[i]).save(root / name / str(c) / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def models(tweets_csv, digit_folders, tmp_path_factory):
    """{route: model folder} for probe (text, logreg), probe-svm (text, a head without probabilities), finetune
    (images, last block), adapt-features (images, CORAL) and source-free (AdaBN of the fine-tuned run)."""
    from typer.testing import CliRunner

    from transferkit.cli import app

    root = tmp_path_factory.mktemp("models")
    run = CliRunner().invoke
    out = {}
    for name, head in (("probe", "logreg"), ("probe-svm", "svm")):
        r = run(app, ["extract", "--data", str(tweets_csv), "--precision", "fp32", "--out", str(root / "feats")])
        assert r.exit_code == 0, r.output
        r = run(app, ["probe", str(root / "feats"), "--head", head, "--out", str(root / name)])
        assert r.exit_code == 0, r.output
        out[name] = root / name
    common = ["--image-size", "32", "--precision", "fp32"]
    r = run(app, ["finetune", "--data", str(digit_folders / "mnist"), "--strategy", "last-k", "--last-k", "1",
                  "--epochs", "2", "--batch-size", "16", "--lr", "1e-3", *common, "--out", str(root / "finetune")])
    assert r.exit_code == 0, r.output
    out["finetune"] = root / "finetune"
    r = run(app, ["adapt", "--method", "coral", "--source", str(digit_folders / "mnist"), "--target",
                  str(digit_folders / "digits"), *common, "--out", str(root / "adapt-features")])
    assert r.exit_code == 0, r.output
    out["adapt-features"] = root / "adapt-features"
    r = run(app, ["adapt", "--method", "adabn", "--source-run", str(root / "finetune"), "--target",
                  str(digit_folders / "digits"), "--out", str(root / "source-free")])
    assert r.exit_code == 0, r.output
    out["source-free"] = root / "source-free"
    # the strong baselines, as compare hands them over (OUT/best of a comparison that runs only the baseline)
    for name, data, spec in (("baseline", tweets_csv, "baseline:tfidf"),
                             ("baseline-pixels", digit_folders / "mnist", "baseline:pixels"),
                             ("hybrid", tweets_csv, "probe:hybrid")):
        r = run(app, ["compare", "--data", str(data), "--strategies", spec, "--precision", "fp32", "--out",
                      str(root / f"cmp-{name}"), "--tsne-points", "50"])
        assert r.exit_code == 0, r.output
        out[name] = root / f"cmp-{name}" / "best"
    r = run(app, ["compare", "--data", str(tweets_csv), "--strategies", "baseline:tfidf,probe:logreg,probe:svm,"
                  "ensemble:caruana", "--precision", "fp32", "--out", str(root / "cmp-ensemble"),
                  "--tsne-points", "50"])
    assert r.exit_code == 0, r.output
    out["ensemble"] = root / "cmp-ensemble" / "runs" / "ensemble-caruana" / "model"
    return out


@pytest.fixture(scope="session")
def items_for(tweets_csv, digit_folders):
    """route -> (raw items, their folder/table for the CLI): the data each model reads."""
    texts = pd.read_csv(tweets_csv)["text"].tolist()[:24]
    images = sorted((digit_folders / "digits").rglob("*.png"))[::5]
    return lambda route: (texts, tweets_csv) if reads_text(route) else (images, digit_folders / "digits")


def reads_text(route: str) -> bool:
    """Whether the model of `route` in `models` reads the tweets (else the digit images)."""
    return route.startswith("probe") or route in ("baseline", "hybrid", "ensemble")
