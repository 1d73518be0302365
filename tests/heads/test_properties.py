"""Property tests on random small problems: predictions have the right shape and only training classes."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferkit.heads import fit_head


@st.composite
def small_problem(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random small classification problem; every class appears in train, features may be degenerate."""
    n_classes = draw(st.integers(2, 4))
    n_train = draw(st.integers(2 * n_classes, 24))
    n_val = draw(st.integers(1, 10))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.0, 1e-3, 1.0, 1e3]))
    y_train = rng.permutation(np.arange(n_train) % n_classes) * 10 + 1  # labels need not be 0..k-1
    X_train = rng.normal(size=(n_train, d)) * scale + y_train[:, None] / 10
    X_val = rng.normal(size=(n_val, d)) * max(scale, 1.0)
    y_val = rng.choice(np.unique(y_train), size=n_val)
    return X_train, y_train, X_val, y_val


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=small_problem(), name=st.sampled_from(["logreg", "svm", "rbf-svm", "ridge", "knn"]))
def test_predictions_shape_and_classes(problem, name: str) -> None:
    X_train, y_train, X_val, y_val = problem
    head = fit_head(name, X_train, y_train, X_val, y_val, seed=0)
    pred = head.predict(X_val)
    assert pred.shape == (len(X_val),)
    assert set(pred.tolist()) <= set(y_train.tolist())
    np.testing.assert_array_equal(head.classes_, np.unique(y_train))
    assert 0.0 <= head.val_score <= 1.0
    if head.has_proba:
        proba = head.predict_proba(X_val)
        assert proba.shape == (len(X_val), len(np.unique(y_train)))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert np.all(proba >= 0)


@settings(max_examples=8, deadline=None)
@given(problem=small_problem(), name=st.sampled_from(["ridge", "knn"]))
def test_regression_predictions_are_finite(problem, name: str) -> None:
    X_train, y_train, X_val, _ = problem
    y_float = y_train.astype(float) / 7.0
    y_val = np.linspace(-1.0, 1.0, len(X_val) + 1)  # at least two distinct values: R² is defined
    X_val = np.vstack([X_val, X_val[:1]])
    head = fit_head(name, X_train, y_float, X_val, y_val, task="regression")
    pred = head.predict(X_val)
    assert pred.shape == (len(X_val),) and np.all(np.isfinite(pred))
    assert np.isfinite(head.val_score)
