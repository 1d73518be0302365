"""Errors a user can cause raise TransferkitError subclasses with one-line messages naming the problem."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.errors import DataError, HeadError, TransferkitError
from transferkit.heads import LogisticProbe, fit_head, make_head

rng = np.random.default_rng(0)
X = rng.normal(size=(40, 5))
y = np.arange(40) % 2
X_VAL = rng.normal(size=(10, 5))
Y_VAL = np.arange(10) % 2


def raises(exc: type[Exception], pattern: str) -> object:
    """pytest.raises that also checks the message is one line."""

    class _Check:
        def __enter__(self) -> None:
            self.ctx = pytest.raises(exc, match=pattern)
            self.info = self.ctx.__enter__()

        def __exit__(self, *args: object) -> bool:
            handled = self.ctx.__exit__(*args)
            assert isinstance(self.info.value, TransferkitError)
            assert "\n" not in str(self.info.value)
            return handled

    return _Check()


def test_unknown_head_lists_valid_names() -> None:
    with raises(HeadError, r"unknown head 'xgboost'.*logreg, svm, rbf-svm, ridge, knn, auto"):
        fit_head("xgboost", X, y, X_VAL, Y_VAL)


def test_unknown_task() -> None:
    with raises(HeadError, r"unknown task 'ranking'"):
        make_head("ridge", "ranking")


@pytest.mark.parametrize("name", ["logreg", "svm", "rbf-svm"])
def test_classification_only_head_for_regression(name: str) -> None:
    with raises(HeadError, rf"'{name}' is classification-only.*ridge, knn, auto"):
        fit_head(name, X, X[:, 0], X_VAL, X_VAL[:, 0], task="regression")


def test_unknown_option() -> None:
    with raises(HeadError, r"no option 'depth'.*valid options: ks, metrics, scalings"):
        make_head("knn", depth=3)


def test_single_class() -> None:
    with raises(DataError, r"y_train holds a single class \(1\)"):
        fit_head("logreg", X, np.ones(40, dtype=int), X_VAL, Y_VAL)


@pytest.mark.parametrize("where", ["X_train", "X_val"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features(where: str, bad: float) -> None:
    Xtr, Xva = X.copy(), X_VAL.copy()
    (Xtr if where == "X_train" else Xva)[3, 2] = bad
    with raises(DataError, rf"{where} contains 1 NaN/inf values"):
        fit_head("ridge", Xtr, y, Xva, Y_VAL)


def test_mismatched_feature_dims() -> None:
    with raises(DataError, r"X_val has 4 features but X_train has 5"):
        fit_head("knn", X, y, X_VAL[:, :4], Y_VAL)


def test_label_count_mismatch() -> None:
    with raises(DataError, r"y_val has 9 labels for 10 feature rows"):
        fit_head("ridge", X, y, X_VAL, Y_VAL[:9])


def test_real_valued_targets_for_classification() -> None:
    with raises(DataError, r"y_train holds non-integer floats.*task='regression'"):
        fit_head("ridge", X, X[:, 0], X_VAL, Y_VAL)


def test_one_dimensional_features() -> None:
    with raises(DataError, r"X_train has shape \(40,\)"):
        fit_head("ridge", X[:, 0], y, X_VAL, Y_VAL)


def test_predict_checks_width_and_values() -> None:
    head = fit_head("ridge", X, y, X_VAL, Y_VAL)
    with raises(DataError, r"X has 3 features but the head was fitted on 5"):
        head.predict(X[:, :3])
    with raises(DataError, r"X contains 1 NaN/inf"):
        head.predict(np.where(np.arange(5) == 0, np.nan, 1.0)[None, :])


def test_predict_proba_unavailable() -> None:
    head = fit_head("svm", X, y, X_VAL, Y_VAL)
    with raises(HeadError, r"head 'svm' \(classification\) gives no probabilities; use head 'logreg' or 'knn'"):
        head.predict_proba(X_VAL)
    regressor = fit_head("knn", X, X[:, 0], X_VAL, X_VAL[:, 0], task="regression")
    with raises(HeadError, r"head 'knn' is a regressor and gives no probabilities"):
        regressor.predict_proba(X_VAL)


def test_probe_errors() -> None:
    with raises(DataError, r"y holds a single class"):
        LogisticProbe(C=1.0).fit(X, np.zeros(40, dtype=int))
    with raises(DataError, r"pass both X_val and y_val"):
        LogisticProbe().fit(X, y, X_val=X_VAL)
    with raises(DataError, r"X_val has 4 features but the head was fitted on 5"):
        LogisticProbe().fit(X, y, X_VAL[:, :4], Y_VAL)
