"""Shared real-data splits and fitted heads for the heads tests (fitted once per session: 2 shared CPUs)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import train_test_split

from transferkit.heads import FittedHead, fit_head

CLASSIFIERS = ("logreg", "svm", "rbf-svm", "ridge", "knn")
REGRESSORS = ("ridge", "knn")

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def three_way(X: np.ndarray, y: np.ndarray, stratify: bool = True, seed: int = 0) -> Split:
    """60/20/20 train/val/test split."""
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=0.2, stratify=y if stratify else None, random_state=seed
    )
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=0.25, stratify=y_rest if stratify else None, random_state=seed
    )
    return X_train, y_train, X_val, y_val, X_test, y_test


@pytest.fixture(scope="session")
def digits() -> Split:
    """sklearn's 8x8 digits (10 classes, 64 raw pixel features)."""
    return three_way(*load_digits(return_X_y=True))


@pytest.fixture(scope="session")
def digits_binary() -> Split:
    """Digits 3 vs 8 only: a real two-class problem (exercises the one-column code paths)."""
    X, y = load_digits(return_X_y=True)
    keep = np.isin(y, (3, 8))
    return three_way(X[keep], y[keep])


@pytest.fixture(scope="session")
def diabetes() -> Split:
    """sklearn's diabetes regression set (442 rows, 10 features)."""
    return three_way(*load_diabetes(return_X_y=True), stratify=False)


@pytest.fixture(scope="session")
def digit_heads(digits: Split) -> dict[str, FittedHead]:
    """Every classification head (and auto) fitted once on digits with seed 0."""
    X_train, y_train, X_val, y_val, _, _ = digits
    heads = {name: fit_head(name, X_train, y_train, X_val, y_val, seed=0) for name in CLASSIFIERS}
    heads["auto"] = fit_head("auto", X_train, y_train, X_val, y_val, seed=0)
    return heads


@pytest.fixture(scope="session")
def binary_heads(digits_binary: Split) -> dict[str, FittedHead]:
    """Every classification head fitted on the two-class digits problem."""
    X_train, y_train, X_val, y_val, _, _ = digits_binary
    return {name: fit_head(name, X_train, y_train, X_val, y_val, seed=0) for name in CLASSIFIERS}


@pytest.fixture(scope="session")
def regression_heads(diabetes: Split) -> dict[str, FittedHead]:
    """Ridge, kNN and auto fitted on diabetes."""
    X_train, y_train, X_val, y_val, _, _ = diabetes
    heads = {name: fit_head(name, X_train, y_train, X_val, y_val, task="regression") for name in REGRESSORS}
    heads["auto"] = fit_head("auto", X_train, y_train, X_val, y_val, task="regression")
    return heads
