"""The probe workflow on real data: pretrained features beat the same head on raw inputs."""

import numpy as np
import pytest

from transferkit import datasets
from transferkit.backbones import load_backbone
from transferkit.data import stratified_sample, stratified_split
from transferkit.errors import FeatureStoreError, TransferkitError
from transferkit.features import extract_features
from transferkit.heads.probe import fit_and_score, probe_features
from transferkit.heads.probe_model import load_head_of


@pytest.mark.slow
def test_pretrained_features_beat_raw_pixels_on_mnist(tmp_path):
    """MNIST (real, 5,000 digits): EfficientNet-Lite0 ImageNet features vs the same logreg probe on pixels."""
    ds = datasets.load("mnist")
    fs = extract_features(load_backbone("effnet:lite0", image_size=112), ds, out=tmp_path / "f", progress=False)
    split = stratified_split(ds.labels, seed=0)
    feat_rows, _ = fit_and_score("logreg", fs.features(), ds.labels, split, "classification")
    pixels = ds.items.reshape(len(ds), -1).astype(np.float32) / 255
    pix_rows, _ = fit_and_score("logreg", pixels, ds.labels, split, "classification")
    # measured: features 0.88, pixels 0.83 (seed 0)
    assert feat_rows[0]["accuracy"] > pix_rows[0]["accuracy"] + 0.02


def test_minilm_features_beat_tfidf_on_tweets(minilm, tmp_path):
    """VADER tweets (real, 1,200): MiniLM features + logreg vs TF-IDF + the same logreg probe."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    ds = datasets.load("sentiment-tweets")
    ds = ds.subset(stratified_sample(ds.labels, 1200, seed=0))
    fs = extract_features(minilm, ds, out=tmp_path / "f", progress=False)
    split = stratified_split(ds.labels, seed=0)
    feat_rows, _ = fit_and_score("logreg", fs.features(), ds.labels, split, "classification")
    tfidf = TfidfVectorizer(min_df=2).fit([ds.items[i] for i in split.train])
    raw = tfidf.transform(ds.items).toarray().astype(np.float32)
    raw_rows, _ = fit_and_score("logreg", raw, ds.labels, split, "classification")
    # measured: features 0.87, TF-IDF 0.73 (seed 0)
    assert feat_rows[0]["accuracy"] > raw_rows[0]["accuracy"] + 0.05


def test_probe_features_reports_every_head_and_saves_the_best(lite0_small, digits_small, tmp_path):
    fs = extract_features(lite0_small, digits_small, out=tmp_path / "f", progress=False)
    report = probe_features(tmp_path / "f", head="auto", save=tmp_path / "head")
    assert {r["head"] for r in report["heads"]} == {"logreg", "svm", "rbf-svm", "ridge", "knn"}
    assert report["n_train"] + report["n_val"] + report["n_test"] == 300
    best = max(report["heads"], key=lambda r: r["val_score"])
    assert report["best"] == best["head"] or best["val_score"] == next(
        r["val_score"] for r in report["heads"] if r["head"] == report["best"]
    )
    # the best head is written as a model folder: backbone reference + head, predicting from raw items the way
    # the probe did from the cached features
    assert sorted(p.name for p in (tmp_path / "head").iterdir()) == ["README.md", "model.json", "model.safetensors"]
    from transferkit.model import load_model

    model = load_model(tmp_path / "head")
    assert model.info.kind == "probe" and model.info.training["head"] == report["best"]
    assert model.info.backbone["build"] == {"image_size": 64} and model.info.precision == fs.meta["precision"]
    test_row = next(r for r in report["heads"] if r["head"] == report["best"])
    assert model.info.metrics["test"]["accuracy"] == test_row["accuracy"]
    items = list(digits_small.items[:40])
    head = load_head_of(tmp_path / "head", model.info)
    np.testing.assert_array_equal(model.predict(items), head.predict(fs.features()[:40]))


def test_unlabelled_features_cannot_be_probed(minilm, tmp_path):
    from transferkit.data import Dataset

    extract_features(minilm, Dataset(["a", "b"], None, (), "text"), out=tmp_path / "u", progress=False)
    with pytest.raises(FeatureStoreError, match="unlabelled"):
        probe_features(tmp_path / "u")


def test_probe_over_max_memory_fits_shard_by_shard_like_in_memory(lite0_small, digits_small, tmp_path,
                                                                  monkeypatch):
    from transferkit.features import FeatureSet
    from transferkit.heads.probe import in_memory_bytes

    fs = extract_features(lite0_small, digits_small, out=tmp_path / "f", shard_size=64, progress=False)
    whole = probe_features(fs, head="auto")
    assert not whole["streamed"] and whole["in_memory_mb"] == round(in_memory_bytes(fs) / 2**20, 1)
    real = FeatureSet.features
    monkeypatch.setattr(FeatureSet, "features", lambda *a, **k: pytest.fail("the streamed probe loaded every feature"))
    report = probe_features(fs, head="auto", max_memory="1MB", save=tmp_path / "head")  # 300 x 1280 needs ~9 MB
    assert report["streamed"] and report["max_memory_mb"] == 1.0
    rows = {r["head"]: r for r in report["heads"]}
    assert set(rows) == {"ridge", "logreg", "svm"}
    for name, row in rows.items():  # the same fits as in memory, up to the solver's tolerance
        ref = next(r for r in whole["heads"] if r["head"] == name)
        assert row["chosen"] == ref["chosen"] and row["accuracy"] == pytest.approx(ref["accuracy"], abs=0.005)
    monkeypatch.setattr(FeatureSet, "features", real)
    from transferkit.model import load_model

    model = load_model(tmp_path / "head")  # a model folder like any other
    assert model.info.training["head"] == report["best"]
    assert (model.predict(list(digits_small.items[:40])) == digits_small.labels[:40]).mean() > 0.7
    with pytest.raises(TransferkitError, match="needs every feature in memory"):
        probe_features(fs, head="knn", max_memory="1MB")
    with pytest.raises(TransferkitError, match="not a memory size"):
        probe_features(fs, max_memory="lots")
