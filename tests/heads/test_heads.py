"""Every head on real data: accuracy far above chance, a complete selection record, auto picks the best."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeClassifier
from sklearn.svm import SVC

from transferkit.heads import FittedHead, fit_head, heads_for
from transferkit.heads.base import fit_standardizer, standardize
from transferkit.heads.linear import ridge_path
from transferkit.heads.rbf import KernelSVMPredictor

CLASSIFIERS = ("logreg", "svm", "rbf-svm", "ridge", "knn")
REGRESSORS = ("ridge", "knn")
# digits has 10 balanced classes (chance 0.10); these floors sit a few points under what each head reaches.
MIN_TEST_ACCURACY = {"logreg": 0.94, "svm": 0.93, "rbf-svm": 0.95, "ridge": 0.90, "knn": 0.95}


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_accuracy_on_digits(name: str, digit_heads: dict[str, FittedHead], digits) -> None:
    head = digit_heads[name]
    X_test, y_test = digits[4], digits[5]
    scores = head.evaluate(X_test, y_test)
    assert scores["accuracy"] >= MIN_TEST_ACCURACY[name]
    assert scores["macro_f1"] >= MIN_TEST_ACCURACY[name] - 0.02
    assert set(head.predict(X_test)) <= set(digits[1])


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_selection_record(name: str, digit_heads: dict[str, FittedHead], digits) -> None:
    head = digit_heads[name]
    X_val, y_val = digits[2], digits[3]
    assert head.name == name and head.requested == name and head.task == "classification"
    assert head.metric == "accuracy"
    assert head.fit_time_s > 0
    assert len(head.val_scores) >= 4
    grid_scores = [p["score"] for p in head.val_scores]
    assert head.val_score == max(grid_scores)
    assert head.params in [p["params"] for p in head.val_scores if p["score"] == head.val_score]
    # the kept model is the one that was scored: its validation accuracy is the recorded one
    assert head.evaluate(X_val, y_val)["accuracy"] == pytest.approx(head.val_score)
    summary = head.summary()
    assert summary["params"] == head.params and summary["fit_time_s"] == head.fit_time_s


def test_auto_picks_best_validation_head(digit_heads: dict[str, FittedHead]) -> None:
    auto = digit_heads["auto"]
    assert auto.requested == "auto"
    assert [c["name"] for c in auto.candidates] == heads_for("classification")
    for cand in auto.candidates:  # same seed, same data: the same scores as fitting each head alone
        assert cand["val_score"] == digit_heads[cand["name"]].val_score
        assert cand["params"] == digit_heads[cand["name"]].params
    best = max(c["val_score"] for c in auto.candidates)
    first_best = next(c["name"] for c in auto.candidates if c["val_score"] == best)
    assert auto.name == first_best and auto.val_score == best
    assert auto.fit_time_s >= max(c["fit_time_s"] for c in auto.candidates)


def test_auto_tie_goes_to_simpler_head() -> None:
    X = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2]] * 3)
    y = np.array([0, 0, 0, 1, 1, 1] * 3)
    head = fit_head("auto", X, y, X, y)
    assert all(c["val_score"] == 1.0 for c in head.candidates)
    assert head.name == "ridge"  # first of the simplicity order


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_binary_heads(name: str, binary_heads: dict[str, FittedHead], digits_binary) -> None:
    head = binary_heads[name]
    X_test, y_test = digits_binary[4], digits_binary[5]
    assert head.evaluate(X_test, y_test)["accuracy"] >= 0.93
    assert list(head.classes_) == [3, 8]
    if head.has_proba:
        proba = head.predict_proba(X_test)
        assert proba.shape == (len(X_test), 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        np.testing.assert_array_equal(head.classes_[proba.argmax(axis=1)], head.predict(X_test))


@pytest.mark.parametrize("name", [*REGRESSORS, "auto"])
def test_regression_on_diabetes(name: str, regression_heads: dict[str, FittedHead], diabetes) -> None:
    head = regression_heads[name]
    scores = head.evaluate(diabetes[4], diabetes[5])
    assert scores["r2"] > 0.3
    assert scores["mae"] < 60
    assert head.metric == "r2" and head.task == "regression"
    assert head.predict(diabetes[4]).dtype == np.float64


def test_auto_regression_candidates(regression_heads: dict[str, FittedHead]) -> None:
    auto = regression_heads["auto"]
    assert [c["name"] for c in auto.candidates] == ["ridge", "knn"]
    assert auto.val_score == max(c["val_score"] for c in auto.candidates)


@pytest.mark.parametrize("name", [*CLASSIFIERS, "auto"])
def test_same_seed_same_head(name: str, digit_heads: dict[str, FittedHead], digits) -> None:
    X_train, y_train, X_val, y_val, X_test, _ = digits
    again = fit_head(name, X_train, y_train, X_val, y_val, seed=0) if name != "auto" else None
    if again is None:  # auto refits every family: compare its pieces with the per-family fits instead
        auto = digit_heads["auto"]
        np.testing.assert_array_equal(auto.predict(X_test), digit_heads[auto.name].predict(X_test))
        return
    first = digit_heads[name]
    assert again.params == first.params
    assert again.val_scores == first.val_scores
    np.testing.assert_array_equal(again.predict(X_test), first.predict(X_test))
    if first.has_proba:
        np.testing.assert_array_equal(again.predict_proba(X_test), first.predict_proba(X_test))


def test_grid_options_are_used(digits) -> None:
    X_train, y_train, X_val, y_val, _, _ = digits
    head = fit_head("knn", X_train, y_train, X_val, y_val, ks=(3,), metrics=("euclidean",), scalings=(False,))
    assert head.params == {"k": 3, "metric": "euclidean", "standardize": False}
    assert len(head.val_scores) == 1


@pytest.mark.parametrize("n_samples", [80, 30])  # n >= d and n < d take different eigen routes
def test_ridge_path_matches_sklearn(n_samples: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_samples, 40))
    y = X[:, :3].sum(axis=1) + rng.normal(scale=0.5, size=n_samples)
    labels = np.digitize(y, [-1.0, 1.0])
    for alpha in (0.1, 10.0):
        ((coef, icpt),) = ridge_path(X, y[:, None], [alpha])
        ref = Ridge(alpha=alpha).fit(X, y)
        np.testing.assert_allclose(coef[0], ref.coef_, atol=1e-8)
        np.testing.assert_allclose(icpt[0], ref.intercept_, atol=1e-8)
        Y = np.where(labels[:, None] == np.arange(3), 1.0, -1.0)
        ((coef, icpt),) = ridge_path(X, Y, [alpha])
        ref_c = RidgeClassifier(alpha=alpha).fit(X, labels)
        np.testing.assert_allclose(coef, ref_c.coef_, atol=1e-8)
        np.testing.assert_allclose(icpt, ref_c.intercept_, atol=1e-8)


def test_rbf_predictor_matches_sklearn_svc(digits) -> None:
    X_train, y_train, _, _, X_test, _ = digits
    mean, scale = fit_standardizer(X_train)
    gamma = 0.1 / X_train.shape[1]
    svc = SVC(C=10.0, gamma=gamma, decision_function_shape="ovo").fit(standardize(X_train, mean, scale), y_train)
    ours = KernelSVMPredictor(
        mean, scale, svc.support_vectors_, svc.dual_coef_, svc.intercept_, svc.n_support_, gamma, svc.classes_
    )
    X_std = standardize(X_test, mean, scale)
    np.testing.assert_allclose(ours.decision_function(X_test), svc.decision_function(X_std), atol=1e-9)
    # per-class scores and predictions: scikit-learn's one-vs-rest view of the same machine, vote ties broken
    ovr = SVC(C=10.0, gamma=gamma, decision_function_shape="ovr", break_ties=True).fit(
        standardize(X_train, mean, scale), y_train)
    np.testing.assert_allclose(ours.class_scores(X_test), ovr.decision_function(X_std), atol=1e-9)
    np.testing.assert_array_equal(ours.predict(X_test), ovr.predict(X_std))
