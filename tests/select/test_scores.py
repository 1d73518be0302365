"""LEEP, NCE and H-score against direct small computations, with the bounds and invariances they have."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.covariance import LedoitWolf

from transferkit.errors import DataError
from transferkit.select import hscore, leep, nce, source_head_unavailable, source_probabilities

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def source_problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Softmax source probabilities (N, Z) and target labels with at least two classes."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, z, c = draw(st.integers(2, 40)), draw(st.integers(1, 12)), draw(st.integers(2, 5))
    logits = rng.normal(size=(n, z)) * draw(st.sampled_from([0.1, 1.0, 10.0, 50.0]))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    labels = rng.integers(0, c, n)
    labels[:2] = [0, 1]
    return probs / probs.sum(1, keepdims=True), labels


def leep_by_loops(P: np.ndarray, y: np.ndarray) -> float:
    """Nguyen et al. (2020), eqs. 1–3, item by item."""
    N, Z = P.shape
    classes = sorted(set(y.tolist()))
    joint = {(c, z): sum(P[i, z] for i in range(N) if y[i] == c) / N for c in classes for z in range(Z)}
    marg = {z: sum(joint[(c, z)] for c in classes) for z in range(Z)}
    total = 0.0
    for i in range(N):
        total += np.log(sum(joint[(y[i], z)] / marg[z] * P[i, z] for z in range(Z) if marg[z] > 0))
    return total / N


def nce_by_loops(z: np.ndarray, y: np.ndarray) -> float:
    """Tran et al. (2019): −H(Y | Z) from counts."""
    N = len(y)
    h = 0.0
    for a in set(z.tolist()):
        nz = np.sum(z == a)
        for b in set(y.tolist()):
            n = np.sum((z == a) & (y == b))
            if n:
                h -= n / N * np.log(n / nz)
    return -h


@SETTINGS
@given(source_problems())
def test_leep_matches_the_definition_and_is_not_positive(problem):
    P, y = problem
    value = leep(P, y)
    assert value == pytest.approx(leep_by_loops(P, y), abs=1e-10)
    assert value <= 0.0


@SETTINGS
@given(source_problems())
def test_nce_matches_the_definition_and_is_not_positive(problem):
    P, y = problem
    z = P.argmax(1)
    assert nce(P, y) == pytest.approx(nce_by_loops(z, y), abs=1e-10)
    assert nce(z, y) == nce(P, y) <= 0.0
    relabelled = (z * 7 + 3) % 101  # NCE sees only which items share a source label
    assert nce(relabelled, y) == pytest.approx(nce(z, y), abs=1e-12)


def test_a_source_that_determines_the_target_scores_zero():
    y = np.array([0, 1, 2, 0, 1, 2, 2])
    z = np.array([5, 3, 4, 5, 3, 4, 4])  # a relabelling of y
    P = np.eye(6)[z]
    assert leep(P, y) == pytest.approx(0.0, abs=1e-12)
    assert nce(z, y) == pytest.approx(0.0, abs=1e-12)


def test_an_uninformative_source_scores_minus_the_label_entropy():
    """Identical probabilities for every item: P̂(y | z) = P̂(y), so LEEP = NCE = −H(Y)."""
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.bincount(y) / len(y)
    P = np.tile([0.2, 0.5, 0.3], (len(y), 1))
    assert leep(P, y) == pytest.approx(np.sum(p * np.log(p)), abs=1e-12)
    assert nce(P, y) == pytest.approx(np.sum(p * np.log(p)), abs=1e-12)


def h_score_direct(F: np.ndarray, y: np.ndarray, regularised: bool = True) -> float:
    """tr(cov_α(f)⁻¹ (1 − α) cov(E[f | y])) with sklearn's LedoitWolf (α = 0 and the plain covariance otherwise)."""
    g = np.zeros_like(F)
    for c in np.unique(y):
        g[y == c] = F[y == c].mean(0)
    cov_g = np.cov(g, rowvar=False, bias=True).reshape(F.shape[1], F.shape[1])
    if regularised:
        lw = LedoitWolf().fit(F)
        return float(np.trace(np.linalg.pinv(lw.covariance_) @ ((1 - lw.shrinkage_) * cov_g)))
    cov_f = np.cov(F, rowvar=False, bias=True).reshape(F.shape[1], F.shape[1])
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-10) @ cov_g))


@st.composite
def feature_problems(draw: st.DrawFn, max_d: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, d, c = draw(st.integers(4, 50)), draw(st.integers(1, max_d)), draw(st.integers(2, 4))
    y = rng.integers(0, c, n)
    y[:2] = [0, 1]
    F = rng.normal(size=(n, d)) + draw(st.sampled_from([0.0, 1.0, 5.0])) * rng.normal(size=(c, d))[y]
    return F * draw(st.sampled_from([1e-3, 1.0, 1e3])), y


@SETTINGS
@given(feature_problems())
def test_hscore_matches_the_regularised_formula_and_its_bounds(problem):
    F, y = problem
    value = hscore(F, y)
    assert value == pytest.approx(h_score_direct(F, y), rel=1e-6, abs=1e-9)
    assert -1e-12 <= value <= len(np.unique(y)) - 1 + 1e-9  # tr(S⁻¹ S_between) ≤ rank(S_between) ≤ C − 1


@SETTINGS
@given(feature_problems(max_d=8))
def test_plain_hscore_matches_the_original_formula(problem):
    F, y = problem
    if len(F) <= F.shape[1] + 2:
        F = np.vstack([F, F + np.random.default_rng(0).normal(size=F.shape)])
        y = np.concatenate([y, y])
    assert hscore(F, y, shrinkage=0.0) == pytest.approx(h_score_direct(F, y, regularised=False), rel=1e-6, abs=1e-9)


@SETTINGS
@given(feature_problems(), st.integers(0, 2**32 - 1), st.sampled_from([1e-5, 3.0, 1e5]))
def test_hscore_is_invariant_to_global_scale_and_rotation(problem, seed, c):
    F, y = problem
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(F.shape[1], F.shape[1])))
    assert hscore(c * F @ Q, y) == pytest.approx(hscore(F, y), rel=1e-6, abs=1e-9)


def test_plain_hscore_is_invariant_to_any_invertible_linear_map():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 80)
    F = rng.normal(size=(80, 5)) + rng.normal(size=(3, 5))[y]
    A = rng.normal(size=(5, 5)) + 3 * np.eye(5)
    assert hscore(F @ A, y, shrinkage=0.0) == pytest.approx(hscore(F, y, shrinkage=0.0), rel=1e-8)


@pytest.mark.parametrize("F", [
    np.random.default_rng(0).normal(size=(30, 500)),  # N < D
    np.zeros((30, 8)),
    np.repeat(np.random.default_rng(1).normal(size=(30, 1)), 8, axis=1),
    np.random.default_rng(2).normal(size=(30, 4)) * 1e200,
], ids=["N<D", "zeros", "rank1", "huge"])
@pytest.mark.parametrize("shrinkage", ["ledoit-wolf", 0.0])
def test_hscore_is_finite_on_degenerate_features(F, shrinkage):
    y = np.arange(len(F)) % 3
    value = hscore(F, y, shrinkage=shrinkage)
    assert np.isfinite(value) and -1e-12 <= value <= 2 + 1e-9


def test_scores_reject_bad_inputs():
    P = np.full((4, 3), 1 / 3)
    with pytest.raises(DataError, match="one class"):
        leep(P, np.zeros(4, int))
    with pytest.raises(DataError, match="one class"):
        nce(P, np.zeros(4, int))
    with pytest.raises(DataError, match="one class"):
        hscore(np.ones((4, 2)), np.zeros(4, int))
    with pytest.raises(DataError, match="do not match"):
        leep(P, np.array([0, 1, 0]))
    with pytest.raises(DataError, match="non-negative"):
        leep(-P, np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match="shrinkage"):
        hscore(np.ones((4, 2)), np.array([0, 1, 0, 1]), shrinkage=2.0)


def test_source_probabilities_are_the_models_own_predictions(lite0_small, digits_small):
    """softmax(source_head(cached features)) equals softmax of the full model's forward pass."""
    items = list(digits_small.items[:6])
    feats = lite0_small.embed(items, precision="fp32")
    probs = source_probabilities(lite0_small, feats)
    with torch.inference_mode():
        logits = lite0_small.model(lite0_small.collate(items)["pixel_values"])
    assert probs.shape == (6, 1000)
    np.testing.assert_allclose(probs, logits.double().softmax(-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)


def test_source_head_unavailable_says_why(minilm):
    from transferkit.backbones import load_backbone

    assert "no source-task classifier" in source_head_unavailable(minilm)
    layer = load_backbone("effnet:lite0", pooling="layer:_blocks.3", image_size=32)
    assert "layer:_blocks.3" in source_head_unavailable(layer)
    with pytest.raises(DataError, match="layer:_blocks.3"):
        source_probabilities(layer, np.zeros((2, layer.feature_dim), np.float32))
