"""score_all: the right keys and values per task; unknown tasks are rejected."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from transferkit.errors import HeadError
from transferkit.heads import score_all


def test_classification_scores() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    scores = score_all("classification", y_true, y_pred)
    assert set(scores) == {"accuracy", "macro_f1"}
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert all(isinstance(v, float) for v in scores.values())


def test_regression_scores() -> None:
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    scores = score_all("regression", y_true, y_true + np.array([0.5, -0.5, 0.5, -0.5]))
    assert set(scores) == {"r2", "mae"}
    assert scores["mae"] == pytest.approx(0.5)
    assert scores["r2"] == pytest.approx(1 - 1.0 / 5.0)
    assert score_all("regression", y_true, y_true)["r2"] == 1.0


def test_unknown_task() -> None:
    with pytest.raises(HeadError, match="unknown task 'ranking'.*classification, regression"):
        score_all("ranking", [0], [0])
