"""LogisticProbe: C chosen on validation, same solution as scikit-learn, a well-behaved sklearn classifier."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import StandardScaler

from transferkit.heads import DEFAULT_C_GRID, LogisticProbe, log_grid_search


def two_gaussians(
    n_per_class: int, d: int, shift: float, seed: int, flip: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Gaussians at ±shift on every axis (a weak signal spread over all features), ``flip`` label noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_per_class)
    X = rng.normal(size=(2 * n_per_class, d)) + np.where(y[:, None] == 1, shift, -shift)
    flipped = rng.random(y.size) < flip
    return X, np.where(flipped, 1 - y, y)


def test_strong_regularisation_chosen_when_it_wins() -> None:
    # 40 samples per class in 80 dims with 25% flipped labels: weak C fits the noise, strong C averages it out.
    X, y = two_gaussians(40, 80, 0.1, seed=0, flip=0.25)
    X_val, y_val = two_gaussians(500, 80, 0.1, seed=1)
    weak = LogisticProbe(C=1e4).fit(X, y).score(X_val, y_val)
    strong = LogisticProbe(C=1e-2).fit(X, y).score(X_val, y_val)
    assert strong > weak + 0.03
    probe = LogisticProbe(Cs=[1e-2, 1e4], refine_steps=0).fit(X, y, X_val, y_val)
    assert probe.C_ == 1e-2
    assert probe.score(X_val, y_val) == pytest.approx(strong)


def test_weak_regularisation_chosen_when_it_wins(digits) -> None:
    X_train, y_train, X_val, y_val, _, _ = digits
    probe = LogisticProbe(Cs=[1e-5, 1.0], refine_steps=0).fit(X_train, y_train, X_val, y_val)
    assert probe.C_ == 1.0
    scores = {s["C"]: s["val_score"] for s in probe.search_}
    assert scores[1.0] > scores[1e-5] + 0.1


def test_default_sweep_follows_validation(digits) -> None:
    X_train, y_train, X_val, y_val, X_test, y_test = digits
    probe = LogisticProbe().fit(X_train, y_train, X_val, y_val)
    tried = [s["C"] for s in probe.search_]
    assert tried[:13] == list(DEFAULT_C_GRID)
    assert len(tried) == 13 + 2 * 3  # three refinement rounds, two points each
    best = max(s["val_score"] for s in probe.search_)
    assert probe.C_ == min(s["C"] for s in probe.search_ if s["val_score"] == best)
    assert probe.score(X_test, y_test) > 0.94


@pytest.mark.parametrize("binary", [False, True])
def test_same_solution_as_sklearn(digits, binary: bool) -> None:
    X_train, y_train, _, _, X_test, y_test = digits
    if binary:
        keep, keep_test = np.isin(y_train, (1, 7)), np.isin(y_test, (1, 7))
        X_train, y_train, X_test, y_test = X_train[keep], y_train[keep], X_test[keep_test], y_test[keep_test]
    scaler = StandardScaler().fit(X_train)
    ref = LogisticRegression(C=0.1, max_iter=1000).fit(scaler.transform(X_train), y_train)
    probe = LogisticProbe(C=0.1, precision="float64").fit(X_train, y_train)
    assert probe.coef_.shape == ref.coef_.shape
    np.testing.assert_allclose(probe.predict_proba(X_test), ref.predict_proba(scaler.transform(X_test)), atol=2e-3)
    assert np.mean(probe.predict(X_test) == ref.predict(scaler.transform(X_test))) > 0.99
    fast = LogisticProbe(C=0.1).fit(X_train, y_train)  # float32 products
    np.testing.assert_allclose(fast.predict_proba(X_test), probe.predict_proba(X_test), atol=2e-3)


def test_fit_without_validation_holds_out_then_refits(digits) -> None:
    X_train, y_train, _, _, X_test, y_test = digits
    probe = LogisticProbe(Cs=[1e-3, 1e-1, 1e1], refine_steps=1, seed=3).fit(X_train, y_train)
    assert probe.C_ in [s["C"] for s in probe.search_]
    assert probe.n_features_in_ == X_train.shape[1]
    assert probe.score(X_test, y_test) > 0.93
    again = LogisticProbe(Cs=[1e-3, 1e-1, 1e1], refine_steps=1, seed=3).fit(X_train, y_train)
    np.testing.assert_array_equal(again.coef_, probe.coef_)


def test_sklearn_estimator_protocol(digits) -> None:
    X_train, y_train, _, _, X_test, _ = digits
    probe = LogisticProbe(C=0.5, seed=7)
    assert probe.get_params()["C"] == 0.5 and probe.get_params()["seed"] == 7
    twin = clone(probe)
    assert twin is not probe and twin.get_params() == probe.get_params()
    twin.set_params(C=2.0, precision="float64")
    assert twin.C == 2.0 and probe.C == 0.5
    scores = cross_val_score(LogisticProbe(C=0.1), X_train, y_train, cv=3)
    assert scores.mean() > 0.9
    probe.fit(X_train, y_train)
    np.testing.assert_array_equal(probe.classes_, np.arange(10))
    proba = probe.predict_proba(X_test)
    assert proba.shape == (len(X_test), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(probe.classes_[probe.decision_function(X_test).argmax(axis=1)], probe.predict(X_test))
    fitted_clone = clone(probe)
    assert not hasattr(fitted_clone, "coef_")


def test_string_labels() -> None:
    X, y = two_gaussians(30, 4, 1.0, seed=0)
    labels = np.array(["cat", "dog"])[y]
    probe = LogisticProbe(C=1.0).fit(X, labels)
    assert list(probe.classes_) == ["cat", "dog"]
    assert set(probe.predict(X)) <= {"cat", "dog"}


def test_search_finds_peak_of_unimodal_score() -> None:
    for peak in (-4.3, 0.0, 2.71):
        result = log_grid_search(lambda c, p=peak: -((np.log10(c) - p) ** 2), DEFAULT_C_GRID, refine_steps=3)
        assert abs(np.log10(result.best) - peak) <= 1 / 16 + 1e-9
        assert len(result.history) == 19


def test_search_tie_prefers_stronger_regularisation() -> None:
    result = log_grid_search(lambda c: 1.0, [1.0, 0.01, 100.0], refine_steps=2)
    assert result.best == 0.01
