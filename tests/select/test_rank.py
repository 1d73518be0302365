"""`transferkit.select.rank` on real bundled digits with real backbones (EfficientNet-Lite0 at 64 px)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.backbones import load_backbone
from transferkit.data import Dataset
from transferkit.data.splits import stratified_sample
from transferkit.errors import DataError
from transferkit.features import FeatureSet, FeatureStore
from transferkit.heads.probe import probe_features
from transferkit.select import UnknownMetricError, hscore, leep, logme, nce, rank, source_probabilities


@pytest.fixture(scope="module")
def candidates(lite0_small):
    """Pretrained lite0, the same architecture with random weights, and an early layer of lite0."""
    torch.manual_seed(0)
    return [lite0_small,
            load_backbone("effnet:lite0", pretrained=False, image_size=64),
            load_backbone("effnet:lite0", pooling="layer:_blocks.4", image_size=64)]


def test_rank_scores_orders_and_caches(candidates, minilm, digits_small, tmp_path):
    store = FeatureStore(tmp_path / "store")
    rows = rank([*candidates, minilm, "effnet:lite3"], digits_small, metric="all", store=store)
    ranked = [r for r in rows if r["rank"] is not None]
    assert [r["rank"] for r in ranked] == [1, 2, 3]
    assert [r["logme"] for r in ranked] == sorted((r["logme"] for r in ranked), reverse=True)
    by_label = {(r["model"], r["pooling"]): r for r in rows}
    # each score is the library function on the cached features
    pre = by_label[("effnet:lite0", "mean")]
    fs = FeatureSet.open(pre["features"])
    X, y = fs.features(), fs.labels()
    assert pre["logme"] == logme(X, y) and pre["hscore"] == hscore(X, y)
    probs = source_probabilities(candidates[0], X)
    assert pre["leep"] == leep(probs, y) and pre["nce"] == nce(probs, y)
    assert pre["n_items"] == 300 and pre["cached"] is False and pre["extract_s"] > 0 and pre["score_s"] > 0
    # a layer has no source classifier on top: LEEP/NCE are reported unavailable, the ranking goes on
    layer = by_label[("effnet:lite0", "layer:_blocks.4")]
    assert layer["leep"] is None and layer["nce"] is None and np.isfinite(layer["logme"])
    assert "leep/nce unavailable" in layer["note"] and layer["rank"] is not None
    assert by_label[("effnet:lite0 (random init)", "mean")]["pretrained"] is False
    # candidates that cannot run keep a row that says why
    text = by_label[("st:all-MiniLM-L6-v2", minilm.pooling)]
    assert text["rank"] is None and "reads text" in text["note"]
    missing = by_label[("effnet:lite3", None)]
    assert missing["rank"] is None and missing["note"].startswith("cannot load") and "lite3" in missing["note"]
    # a second ranking reuses every feature set, and probing the winner needs no model
    again = rank(candidates, digits_small, metric="all", store=store)
    assert all(r["cached"] for r in again)
    assert [(r["model"], r["logme"]) for r in again] == [(r["model"], r["logme"]) for r in ranked]
    report = probe_features(ranked[0]["features"], head="logreg")
    assert report["heads"][0]["accuracy"] > 0.5


def test_single_metric_and_sample(candidates, digits_small, tmp_path):
    rows = rank(candidates[:2], digits_small, metric="leep", sample=120, seed=3, store=FeatureStore(tmp_path))
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["leep"] >= rows[1]["leep"]
    assert all(r["n_items"] == 120 and "logme" not in r for r in rows)
    assert rows[0]["leep"] <= 0


def test_stratified_sample_is_exact_proportional_and_seeded():
    labels = np.repeat([0, 1, 2, 3], [500, 300, 150, 50])
    idx = stratified_sample(labels, 100, seed=0)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100
    assert np.bincount(labels[idx]).tolist() == [50, 30, 15, 5]
    assert np.array_equal(idx, stratified_sample(labels, 100, seed=0))
    assert not np.array_equal(idx, stratified_sample(labels, 100, seed=1))
    small = stratified_sample(labels, 5, seed=0)  # every class keeps at least one item
    assert len(small) == 5 and set(labels[small].tolist()) == {0, 1, 2, 3}
    assert len(stratified_sample(labels, 5000)) == 1000
    with pytest.raises(DataError, match="smaller than the 4 classes"):
        stratified_sample(labels, 3)


def test_user_errors_name_the_input_and_the_fix(lite0_small, digits_small):
    with pytest.raises(UnknownMetricError, match="'accuracy'.*logme"):
        rank(["no-such:model"], digits_small, metric="accuracy")  # fails before loading anything
    one = Dataset(digits_small.items[:10], np.zeros(10, dtype=np.int64), ("zero", "one"), "image", "ones")
    with pytest.raises(DataError, match="'ones'.*one class"):
        rank([lite0_small], one)
    unlabelled = Dataset(digits_small.items[:10], None, (), "image", "raw")
    with pytest.raises(DataError, match="no labels"):
        rank([lite0_small], unlabelled)
    values = Dataset(digits_small.items[:40], np.linspace(0, 1, 40), (), "image", "values")
    with pytest.raises(DataError, match="needs class labels.*--metric logme"):
        rank([lite0_small], values, metric="leep")
    with pytest.raises(DataError, match="sample=1"):
        rank([lite0_small], digits_small, sample=1)


def test_regression_targets_are_ranked_by_logme_only(lite0_small, digits_small, tmp_path):
    values = Dataset(digits_small.items[:40], digits_small.labels[:40] * 0.1 + np.linspace(0, 0.01, 40), (),
                     "image", "values")
    rows = rank([lite0_small], values, metric="all", store=FeatureStore(tmp_path))
    assert rows[0]["rank"] == 1 and np.isfinite(rows[0]["logme"])
    assert "hscore" not in rows[0] and "need class labels" in rows[0]["note"]
