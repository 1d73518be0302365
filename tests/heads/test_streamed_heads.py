"""The out-of-core heads (ridge, logistic regression) against the in-memory ones on real data, without loading the
features."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from transferkit.data.splits import stratified_split
from transferkit.errors import HeadError
from transferkit.features.store import FeatureSet
from transferkit.heads.linear import fit_linear_svm, fit_ridge
from transferkit.heads.logreg import fit_logreg
from transferkit.heads.metrics import score_all
from transferkit.heads.streamed import evaluate_rows, fit_linear_svm_streamed, fit_logreg_streamed, fit_ridge_streamed


def _store(tmp_path, X: np.ndarray, y: np.ndarray, task: str, shard_size: int = 97) -> FeatureSet:
    n, d = X.shape
    meta = {"key": "digits-pixels", "n_items": n, "feature_dim": d, "shard_size": shard_size,
            "n_shards": -(-n // shard_size), "data": {"task": task, "name": "digits"}, "backbone": {"spec": "pixels"}}
    fs = FeatureSet.create(tmp_path / "fs", meta, y)
    for i in range(meta["n_shards"]):
        lo, hi = fs.shard_bounds(i)
        fs.write_shard(i, X[lo:hi])
    fs.mark_complete()
    return FeatureSet.open(tmp_path / "fs")


@pytest.fixture
def no_full_load(monkeypatch):
    def refuse(self, *a, **k):
        raise AssertionError("the streamed head loaded every feature")
    monkeypatch.setattr(FeatureSet, "features", refuse)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_streamed_ridge_equals_the_in_memory_ridge_on_digits(tmp_path, task, no_full_load):
    digits = load_digits()
    X = digits.data.astype(np.float32)
    y = digits.target if task == "classification" else digits.target.astype(np.float64)
    fs = _store(tmp_path, X, y, task)
    split = stratified_split(digits.target, seed=0)
    train, val, test = (np.sort(s) for s in (split.train, split.val, split.test))
    X64 = X.astype(np.float64)  # the store holds float32; the streamed head sums in float64, as this reference does
    ref = fit_ridge(X64[train], y[train], X64[val], y[val], task, 0)

    got = fit_ridge_streamed(fs, split.train, split.val, task)  # unsorted split indices are fine
    assert got.params == ref.params
    assert [s["score"] for s in got.val_scores] == pytest.approx([s["score"] for s in ref.val_scores], abs=1e-9)
    np.testing.assert_allclose(got.predictor.coef, ref.predictor.coef, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(got.predictor.scale, ref.predictor.scale, rtol=1e-9)
    scores = evaluate_rows(got.predictor, fs, test, task)
    expected = score_all(task, y[test], ref.predictor.predict(X64[test]))
    assert scores == pytest.approx(expected, abs=1e-9)


@pytest.fixture
def shard_reads(monkeypatch):
    """Every shard read from a feature store, as (index, rows)."""
    reads = []
    real = FeatureSet.read_shard

    def read(self, i, dtype=np.float32):
        arr = real(self, i, dtype)
        reads.append((i, arr.shape[0]))
        return arr
    monkeypatch.setattr(FeatureSet, "read_shard", read)
    return reads


def test_streamed_ridge_reads_one_shard_at_a_time(tmp_path, no_full_load, shard_reads):
    digits = load_digits()
    fs = _store(tmp_path, digits.data.astype(np.float32), digits.target, "classification", shard_size=200)
    split = stratified_split(digits.target, seed=1)
    result = fit_ridge_streamed(fs, split.train, split.val, "classification")
    assert max(rows for _, rows in shard_reads) <= 200 and result.val_score > 0.9


def test_streamed_ridge_refuses_unusable_rows(tmp_path):
    digits = load_digits()
    fs = _store(tmp_path, digits.data.astype(np.float32), digits.target, "classification")
    with pytest.raises(HeadError, match="row indices"):
        fit_ridge_streamed(fs, [0, 1, fs.n_items], [2], "classification")
    with pytest.raises(HeadError, match="validation row"):
        fit_ridge_streamed(fs, [0, 1, 2], [], "classification")


def test_streamed_logreg_equals_the_in_memory_probe_on_digits(tmp_path, no_full_load):
    digits = load_digits()
    X, y = digits.data.astype(np.float32), digits.target
    fs = _store(tmp_path, X, y, "classification")
    split = stratified_split(y, seed=0)
    train, val, test = (np.sort(s) for s in (split.train, split.val, split.test))
    X64 = X.astype(np.float64)
    ref = fit_logreg(X64[train], y[train], X64[val], y[val], seed=0)

    got = fit_logreg_streamed(fs, split.train, split.val, seed=0)
    assert got.params == ref.params  # the same C, from the same search
    assert [s["score"] for s in got.val_scores] == [s["score"] for s in ref.val_scores]
    np.testing.assert_allclose(got.predictor.scaler_scale_, ref.predictor.scaler_scale_, rtol=1e-9)
    np.testing.assert_allclose(got.predictor.coef_, ref.predictor.coef_, rtol=1e-3, atol=1e-4)
    scores = evaluate_rows(got.predictor, fs, test, "classification")
    expected = score_all("classification", y[test], ref.predictor.predict(X64[test]))
    assert scores["accuracy"] == pytest.approx(expected["accuracy"], abs=0.005) and scores["accuracy"] > 0.9


def test_streamed_logreg_keeps_what_its_cache_allows_and_fits_the_same(tmp_path, no_full_load, shard_reads,
                                                                       monkeypatch):
    from transferkit.heads.streamed import PreparedRows

    digits = load_digits()
    fs = _store(tmp_path, digits.data.astype(np.float32), digits.target, "classification", shard_size=200)
    kept = []
    close = PreparedRows.close
    monkeypatch.setattr(PreparedRows, "close", lambda self: (kept.append((len(self._cached), len(self._spilled))),
                                                            close(self)))
    split = stratified_split(digits.target, seed=1)
    fits = {}
    for cache in (0, 10**9):
        shard_reads.clear()
        fits[cache] = (fit_logreg_streamed(fs, split.train, split.val, seed=1, Cs=[0.1, 1.0], refine_steps=0,
                                           cache_bytes=cache), len(shard_reads))
    (plain, plain_reads), (cached, cached_reads) = fits[0], fits[10**9]
    assert kept[0][0] == 0 and kept[0][1] >= 1  # no cache: every block in the temporary file (grouped)
    assert kept[1] == (fs.meta["n_shards"], 0)  # room for all: every block in memory
    # the same rows, from memory or read back from the file (in larger blocks: sums in another order)
    assert plain.params == cached.params
    np.testing.assert_allclose(plain.predictor.coef_, cached.predictor.coef_, rtol=1e-3, atol=1e-3)  # L-BFGS tol
    per_pass = fs.meta["n_shards"]
    assert plain_reads < 30 * per_pass  # standardiser (2), first pass (1), validation per C: never per evaluation
    assert cached_reads == plain_reads  # training rows are read once (then from memory or the file)


def test_streamed_logreg_and_svm_refuse_one_class_and_unlabelled_stores(tmp_path):
    from transferkit.errors import DataError

    digits = load_digits()
    fs = _store(tmp_path / "a", digits.data.astype(np.float32), digits.target, "classification")
    ones = np.flatnonzero(digits.target == 1)
    for fit in (fit_logreg_streamed, fit_linear_svm_streamed):
        with pytest.raises(DataError, match="single class"):
            fit(fs, ones[:20], ones[20:30])
    unlabelled = _store(tmp_path / "b", digits.data.astype(np.float32), None, "unlabelled")
    for fit in (fit_logreg_streamed, fit_linear_svm_streamed):
        with pytest.raises(HeadError, match="unlabelled features"):
            fit(unlabelled, [0, 1, 2], [3])


@pytest.mark.parametrize("classes", [(3, 8), tuple(range(10))])
def test_streamed_svm_solves_the_in_memory_svm_objective_on_digits(tmp_path, no_full_load, classes):
    digits = load_digits()
    keep = np.isin(digits.target, classes)
    X, y = digits.data[keep].astype(np.float32), digits.target[keep]
    fs = _store(tmp_path, X, y, "classification")
    split = stratified_split(y, seed=0)
    train, val, test = (np.sort(s) for s in (split.train, split.val, split.test))
    X64 = X.astype(np.float64)
    ref = fit_linear_svm(X64[train], y[train], X64[val], y[val], seed=0)  # scikit-learn's LinearSVC

    got = fit_linear_svm_streamed(fs, split.train, split.val, seed=0)
    assert got.params == ref.params
    assert [s["score"] for s in got.val_scores] == pytest.approx([s["score"] for s in ref.val_scores], abs=0.005)
    # liblinear's dual stops at its own tolerance; both approach the one minimiser of the same primal
    np.testing.assert_allclose(got.predictor.coef, ref.predictor.coef, atol=0.005 * np.abs(ref.predictor.coef).max())
    np.testing.assert_allclose(got.predictor.intercept, ref.predictor.intercept, atol=0.005)
    scores = evaluate_rows(got.predictor, fs, test, "classification")
    expected = score_all("classification", y[test], ref.predictor.predict(X64[test]))
    assert scores["accuracy"] == pytest.approx(expected["accuracy"], abs=0.005) and scores["accuracy"] > 0.9
