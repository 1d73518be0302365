"""FeatureExtractor is a real scikit-learn transformer that goes through the feature store."""

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from transferkit import FeatureExtractor


def test_pipeline_fits_and_predicts_on_real_digits(digits_small):
    X, y = list(digits_small.items), digits_small.labels
    clf = make_pipeline(FeatureExtractor("effnet:lite0", image_size=64), LogisticRegression(max_iter=500))
    clf.fit(X[:200], y[:200])
    assert clf.score(X[200:], y[200:]) > 0.6  # chance is 0.1


def test_params_clone_and_grid_search_reuse_the_cache(digits_small, monkeypatch):
    # eager, so every batch goes through the counted `encode` (a frozen graph, where it pays here, does not)
    monkeypatch.setattr("transferkit.features.inference.graph_speedup", lambda backbone, precision: 1.0)
    fe = FeatureExtractor("effnet:lite0", image_size=64)
    assert fe.get_params()["image_size"] == 64
    assert clone(fe).set_params(pooling="mean").pooling == "mean"
    X, y = list(digits_small.items[:90]), digits_small.labels[:90]
    shared = FeatureExtractor("effnet:lite0", image_size=64).fit().backbone_  # clones share one loaded model
    calls = []
    inner = shared.encode
    monkeypatch.setattr(shared, "encode", lambda m, b: calls.append(len(b["pixel_values"])) or inner(m, b))
    pipe = make_pipeline(fe, LogisticRegression(max_iter=300))
    grid = GridSearchCV(pipe, {"logisticregression__C": [1e-4, 1.0]}, cv=2).fit(X, y)
    scores = grid.cv_results_["mean_test_score"]
    assert scores[1] > scores[0] + 0.1  # C=1e-4 underfits: the search compares real fits
    assert grid.best_params_["logisticregression__C"] == 1.0
    # 2 C values x 2 folds fit and score 4 times on the two 45-item halves, then the refit reads all 90 items:
    # with the store each distinct set runs the model once (45, 45, then 64 + 26), not once per fit
    assert sorted(calls) == [26, 45, 45, 64]
    grid.predict(X)  # features of all 90 are cached now: prediction runs no model
    assert len(calls) == 4


def test_text_transform_and_feature_names():
    fe = FeatureExtractor("st:all-MiniLM-L6-v2", cache=False).fit()
    out = fe.transform(["good", "bad"])
    assert out.shape == (2, 384) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert fe.get_feature_names_out()[0] == "f0"
    for precision in ("fp32", "bf16"):  # without the store, the features are the ones the store would hold
        texts = ["good", "bad", "a longer sentence about the film"]
        plain = FeatureExtractor("st:all-MiniLM-L6-v2", cache=False, precision=precision).fit().transform(texts)
        cached = FeatureExtractor("st:all-MiniLM-L6-v2", precision=precision).fit().transform(texts)
        np.testing.assert_array_equal(plain, cached)
