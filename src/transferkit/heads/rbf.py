"""RBF-kernel SVM head: scikit-learn's SVC for fitting, a numpy one-vs-one predictor for prediction.

The predictor holds only the arrays SVC exposes (support vectors, dual_coef_, intercept_, n_support,
gamma), so a saved head rebuilds without pickle and predicts exactly like the head that was saved.
Gamma is searched as multiples of 1 / n_features (scikit-learn's 'scale' on standardised features).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
from sklearn.svm import SVC

from transferkit.heads.base import GridResult, c_array, checked_input, fit_standardizer, standardize
from transferkit.heads.metrics import primary_score

DEFAULT_RBF_CS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
DEFAULT_GAMMA_FACTORS: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)


class KernelSVMPredictor:
    """One-vs-one RBF SVM decision and voting, as libsvm does it, from SVC's public arrays."""

    kind = "rbf-svm"

    def __init__(
        self,
        mean: np.ndarray,
        scale: np.ndarray,
        support_vectors: np.ndarray,
        dual_coef: np.ndarray,
        intercept: np.ndarray,
        n_support: np.ndarray,
        gamma: float,
        classes: np.ndarray,
    ) -> None:
        self.mean, self.scale = c_array(mean), c_array(scale)
        self.support_vectors, self.dual_coef = c_array(support_vectors), c_array(dual_coef)
        self.intercept = c_array(intercept)
        self.n_support = np.asarray(n_support, dtype=np.int64)
        self.gamma = float(gamma)
        self.classes_ = classes
        self.n_features_in_ = int(self.support_vectors.shape[1])
        self._sv_sq = np.sum(self.support_vectors**2, axis=1)

    def _kernel(self, X: Any) -> np.ndarray:
        Xs = standardize(checked_input(X, self.n_features_in_), self.mean, self.scale)
        sq = np.sum(Xs**2, axis=1)[:, None] + self._sv_sq[None, :] - 2.0 * Xs @ self.support_vectors.T
        return np.exp(-self.gamma * np.clip(sq, 0.0, None))

    def decision_function(self, X: Any) -> np.ndarray:
        """Binary: (n,), positive means ``classes_[1]``. Multiclass: (n, n_pairs) one-vs-one, pairs (i<j) in order."""
        K = self._kernel(X)
        if self.classes_.size == 2:
            return K @ self.dual_coef[0] + self.intercept[0]
        start = np.concatenate([[0], np.cumsum(self.n_support)])
        cols = []
        for p, (i, j) in enumerate(combinations(range(self.classes_.size), 2)):
            si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
            cols.append(K[:, si] @ self.dual_coef[j - 1, si] + K[:, sj] @ self.dual_coef[i, sj] + self.intercept[p])
        return np.column_stack(cols)

    def class_scores(self, X: Any) -> np.ndarray:
        """(n, n_classes) scores whose arg-max is the prediction. Binary: ±decision. Multiclass: one-vs-one votes
        plus the summed pair confidences squashed into (-1/3, 1/3), which break vote ties (scikit-learn's
        ``decision_function_shape="ovr"``)."""
        dec = self.decision_function(X)
        k = self.classes_.size
        if k == 2:
            return np.column_stack([-dec, dec])
        votes = np.zeros((dec.shape[0], k))
        conf = np.zeros((dec.shape[0], k))
        for p, (i, j) in enumerate(combinations(range(k), 2)):
            win_i = dec[:, p] > 0
            votes[:, i] += win_i
            votes[:, j] += ~win_i
            conf[:, i] += dec[:, p]
            conf[:, j] -= dec[:, p]
        return votes + conf / (3 * (np.abs(conf) + 1))

    def predict(self, X: Any) -> np.ndarray:
        """Binary: sign of the decision; multiclass: one-vs-one votes, ties broken by the pairs' confidence
        (scikit-learn's ``break_ties=True``)."""
        return self.classes_[np.argmax(self.class_scores(X), axis=1)]

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Scaler, support vectors, dual coefficients, intercepts, counts per class, classes; gamma in JSON."""
        arrays = {
            "scaler_mean": self.mean,
            "scaler_scale": self.scale,
            "support_vectors": self.support_vectors,
            "dual_coef": self.dual_coef,
            "intercept": self.intercept,
            "n_support": self.n_support,
            "classes": self.classes_,
        }
        return arrays, {"gamma": self.gamma}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> KernelSVMPredictor:
        """Rebuild from :meth:`state` output."""
        return cls(
            arrays["scaler_mean"],
            arrays["scaler_scale"],
            arrays["support_vectors"],
            arrays["dual_coef"],
            arrays["intercept"],
            arrays["n_support"],
            float(meta["gamma"]),
            arrays["classes"],
        )


def fit_rbf_svm(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    seed: int,
    Cs: Sequence[float] = DEFAULT_RBF_CS,
    gamma_factors: Sequence[float] = DEFAULT_GAMMA_FACTORS,
) -> GridResult:
    """Head family ``rbf-svm``: C x gamma grid by validation accuracy; smaller C, then smaller gamma, win ties."""
    mean, scale = fit_standardizer(X_train)
    Xs = standardize(X_train, mean, scale)
    d = Xs.shape[1]
    best: KernelSVMPredictor | None = None
    best_score, best_params = -np.inf, {}
    val_scores = []
    for C in sorted(Cs):
        for factor in sorted(gamma_factors):
            gamma = float(factor) / d
            svm = SVC(C=C, kernel="rbf", gamma=gamma, random_state=seed).fit(Xs, y_train)
            pred = KernelSVMPredictor(
                mean, scale, svm.support_vectors_, svm.dual_coef_, svm.intercept_, svm.n_support_, gamma, svm.classes_
            )
            score = primary_score("classification", y_val, pred.predict(X_val))
            params = {"C": float(C), "gamma": gamma}
            val_scores.append({"params": params, "score": score})
            if score > best_score:
                best, best_score, best_params = pred, score, params
    assert best is not None
    return GridResult(best, best_params, val_scores, best_score)
