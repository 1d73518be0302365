"""Linear heads without probabilities: ridge (classifier or regressor) and linear SVM.

Both standardise features on train. Ridge solves every alpha of its grid from one eigendecomposition
(of the d x d Gram matrix, or the n x n kernel when n < d), so the grid costs about one fit; the
solution equals scikit-learn's ``Ridge``/``RidgeClassifier`` (classes coded -1/+1).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from transferkit.heads.base import GridResult, best_index, c_array, checked_input, fit_standardizer, standardize
from transferkit.heads.metrics import primary_score

DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 5, 8))
DEFAULT_SVM_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 0, 5))


class LinearPredictor:
    """Scores = standardised X @ coef.T + intercept; classes by arg-max (or sign with one output column)."""

    kind = "linear"

    def __init__(
        self,
        mean: np.ndarray,
        scale: np.ndarray,
        coef: np.ndarray,
        intercept: np.ndarray,
        classes: np.ndarray | None,
    ) -> None:
        self.mean, self.scale = c_array(mean), c_array(scale)
        self.coef, self.intercept = c_array(np.atleast_2d(coef)), c_array(np.atleast_1d(intercept))
        self.classes_ = classes
        self.n_features_in_ = int(self.coef.shape[1])

    def _scores(self, X: Any) -> np.ndarray:
        X = checked_input(X, self.n_features_in_)
        return standardize(X, self.mean, self.scale) @ self.coef.T + self.intercept

    def decision_function(self, X: Any) -> np.ndarray:
        """Margins: (n,) for one output column, else (n, n_classes)."""
        s = self._scores(X)
        return s[:, 0] if s.shape[1] == 1 else s

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (classification) or values (regression, ``classes_`` is None)."""
        s = self._scores(X)
        if self.classes_ is None:
            return s[:, 0]
        if s.shape[1] == 1:
            return self.classes_[(s[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(s, axis=1)]

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Scaler, coefficients and classes as arrays."""
        arrays = {"scaler_mean": self.mean, "scaler_scale": self.scale, "coef": self.coef, "intercept": self.intercept}
        if self.classes_ is not None:
            arrays["classes"] = self.classes_
        return arrays, {}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> LinearPredictor:
        """Rebuild from :meth:`state` output."""
        mean, scale = arrays["scaler_mean"], arrays["scaler_scale"]
        return cls(mean, scale, arrays["coef"], arrays["intercept"], arrays.get("classes"))


def ridge_path(X: np.ndarray, Y: np.ndarray, alphas: Sequence[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(coef (k, d), intercept (k,)) of ridge regression with intercept for each alpha, from one eigensolve."""
    x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - x_mean, Y - y_mean
    n, d = Xc.shape
    if n >= d:
        evals, Q = np.linalg.eigh(Xc.T @ Xc)
        proj = Q.T @ (Xc.T @ Yc)
        back = Q
    else:
        evals, U = np.linalg.eigh(Xc @ Xc.T)
        proj = U.T @ Yc
        back = Xc.T @ U
    evals = np.clip(evals, 0.0, None)
    out = []
    for alpha in alphas:
        W = back @ (proj / (evals + alpha)[:, None])
        out.append((W.T, y_mean - x_mean @ W))
    return out


def _targets(y: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Regression: y as a column. Classification: -1/+1 one-vs-rest codes (one column for two classes)."""
    if task == "regression":
        return y[:, None], None
    classes = np.unique(y)
    Y = np.where(y[:, None] == classes[None, :], 1.0, -1.0)
    return (Y[:, 1:] if classes.size == 2 else Y), classes


def fit_ridge(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    task: str,
    seed: int,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
) -> GridResult:
    """Head family ``ridge``: alpha by validation score; larger alpha wins ties (simpler model)."""
    del seed  # ridge is deterministic
    mean, scale = fit_standardizer(X_train)
    Y, classes = _targets(y_train, task)
    order = sorted(alphas, reverse=True)
    preds = [
        LinearPredictor(mean, scale, coef, icpt, classes)
        for coef, icpt in ridge_path(standardize(X_train, mean, scale), Y, order)
    ]
    scores = [primary_score(task, y_val, p.predict(X_val)) for p in preds]
    i = best_index(scores)
    val_scores = [{"params": {"alpha": float(a)}, "score": s} for a, s in zip(order, scores, strict=True)]
    return GridResult(preds[i], {"alpha": float(order[i])}, val_scores, scores[i])


def fit_linear_svm(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    seed: int,
    Cs: Sequence[float] = DEFAULT_SVM_CS,
) -> GridResult:
    """Head family ``svm``: linear SVM (squared hinge, one-vs-rest), C by validation accuracy; smaller C wins ties."""
    mean, scale = fit_standardizer(X_train)
    Xs = standardize(X_train, mean, scale)
    best: LinearPredictor | None = None
    best_score, best_C = -np.inf, 0.0
    val_scores = []
    for C in sorted(Cs):
        # liblinear's primal solver crawled (500+ s) on 1,400 × 1,280 standardised CNN features where the dual
        # took 15 s for the whole grid: use the dual unless samples far outnumber features.
        svm = LinearSVC(C=C, dual=Xs.shape[0] <= 5 * Xs.shape[1], max_iter=2000, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svm.fit(Xs, y_train)
        pred = LinearPredictor(mean, scale, svm.coef_, svm.intercept_, svm.classes_)
        score = primary_score("classification", y_val, pred.predict(X_val))
        val_scores.append({"params": {"C": float(C)}, "score": score})
        if score > best_score:
            best, best_score, best_C = pred, score, float(C)
    assert best is not None
    return GridResult(best, {"C": best_C}, val_scores, best_score)
