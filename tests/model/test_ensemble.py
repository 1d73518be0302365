"""Greedy ensemble selection (Caruana et al. 2004) and the ensemble model kind: the weights lower validation
log-loss, the validation score is cross-fitted, and the folder predicts the weighted average of its members."""

import numpy as np
import pytest

from transferkit.model import load_model, read_info
from transferkit.model.ensemble import _log_loss, cross_fitted_accuracy, select_weights


def _member(y, right, rng, classes=3):
    """Probabilities that put 0.7 on the true class for the items in `right`, 0.7 on a wrong one elsewhere."""
    p = np.full((len(y), classes), 0.3 / (classes - 1))
    wrong = (y + 1 + rng.integers(0, classes - 1, len(y))) % classes
    p[np.arange(len(y)), np.where(right, y, wrong)] = 0.7
    return p


def test_selection_weights_complementary_members_and_ignores_a_useless_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    a = _member(y, np.arange(400) < 300, rng)      # right on the first 300
    b = _member(y, np.arange(400) >= 100, rng)     # right on the last 300
    noise = np.full((400, 3), 1 / 3)               # knows nothing
    w = select_weights([a, b, noise], y)
    assert w.sum() == pytest.approx(1.0) and w[0] > 0.2 and w[1] > 0.2 and w[2] == 0
    avg = w[0] * a + w[1] * b
    assert _log_loss(avg, y) < min(_log_loss(a, y), _log_loss(b, y))
    assert select_weights([a], y).tolist() == [1.0]


def test_the_validation_score_is_cross_fitted():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    members = [_member(y, rng.random(200) < 0.6, rng) for _ in range(5)]
    honest = cross_fitted_accuracy(members, y)
    w = select_weights(members, y)
    in_sample = float((sum(wi * m for wi, m in zip(w, members)).argmax(1) == y).mean())
    assert 0.0 < honest <= in_sample + 1e-12  # fitted and scored on the same items flatters it


def test_the_ensemble_folder_predicts_the_weighted_average_of_its_members(models, items_for):
    folder = models["ensemble"]
    info = read_info(folder)
    assert info.kind == "ensemble" and len(info.training["members"]) >= 1
    texts, _ = items_for("probe")
    loaded = load_model(folder)
    want = sum(m["weight"] * load_model(folder / m["folder"]).predict_proba(texts)
               for m in info.training["members"])
    np.testing.assert_allclose(loaded.predict_proba(texts), want, atol=1e-12)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "members", "model.json", "model.safetensors"]
