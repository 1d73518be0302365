"""LogME against a slow, direct float64 evaluation of the paper's evidence, maximised by brute force."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from transferkit.errors import DataError
from transferkit.select import log_evidence, logme

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------ the reference


def paper_evidence(F: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """You et al. (2021), eq. for L(α, β) with A = αI + βFᵀF and m = βA⁻¹Fᵀy, divided by N."""
    N, D = F.shape
    A = alpha * np.eye(D) + beta * F.T @ F
    m = beta * np.linalg.solve(A, F.T @ y)
    _, logdet = np.linalg.slogdet(A)
    return (N / 2 * np.log(beta) + D / 2 * np.log(alpha) - N / 2 * np.log(2 * np.pi)
            - beta / 2 * np.sum((F @ m - y) ** 2) - alpha / 2 * m @ m - logdet / 2) / N


def marginal_evidence(F: np.ndarray, y: np.ndarray, log_lam: float, log_beta: float) -> float:
    """log N(y; 0, β⁻¹(I + FFᵀ/λ)) / N, λ = α/β: the same quantity, computed stably by Cholesky."""
    N = len(y)
    M = np.eye(N) + F @ F.T / np.exp(log_lam)
    L = np.linalg.cholesky(M)
    q = np.linalg.solve(L, y)
    return (-N / 2 * np.log(2 * np.pi) + N / 2 * log_beta - np.log(np.diag(L)).sum()
            - np.exp(log_beta) / 2 * q @ q) / N


def _safe(F: np.ndarray, y: np.ndarray, p: np.ndarray) -> float:
    try:
        with np.errstate(all="ignore"):
            v = marginal_evidence(F, y, *p)
    except np.linalg.LinAlgError:
        return -np.inf
    return float(v) if np.isfinite(v) else -np.inf


def brute_force_max(F: np.ndarray, y: np.ndarray) -> float:
    """max over (log λ, log β): a 15×15 grid around the data's scales, then Nelder-Mead from the best 3 points."""
    ll0 = np.log(max(np.linalg.norm(F, 2) ** 2, 1e-300))
    lb0 = -np.log(max(np.mean(y**2), 1e-300))
    grid = [np.array([ll0 + a, lb0 + b]) for a in np.arange(-28, 29, 4.0) for b in np.arange(-28, 29, 4.0)]
    vals = [_safe(F, y, p) for p in grid]
    best = max(vals)
    for i in np.argsort(vals)[-3:]:
        r = scipy.optimize.minimize(lambda p: -_safe(F, y, p), grid[i], method="Nelder-Mead",
                                    options={"xatol": 1e-9, "fatol": 1e-14, "maxiter": 4000})
        best = max(best, -r.fun)
    return best


# ----------------------------------------------------------------------------------------------- inputs


@st.composite
def problems(draw: st.DrawFn, max_n: int = 25, max_d: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Real-valued (F, y): Gaussian, low-rank, duplicate or constant columns, wild scales; class or real y."""
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(2, max_n))
    d = draw(st.integers(1, max_d))
    kind = draw(st.sampled_from(["gauss", "lowrank", "duplicate", "constant"]))
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n, d))
    if kind == "lowrank":
        k = int(rng.integers(1, d + 1))
        F = rng.normal(size=(n, k)) @ rng.normal(size=(k, d))
    elif kind == "duplicate":
        F[:, -1] = F[:, 0]
    elif kind == "constant":
        F[:, 0] = 3.0
    F *= draw(st.sampled_from([1e-4, 1.0, 1e4]))
    if draw(st.booleans()):
        y = (rng.random(n) < 0.5).astype(float)  # one one-hot column of a class problem
        y[rng.integers(n)] = 1.0  # y ≡ 0 has unbounded evidence (β → ∞): not a class column
    else:
        y = F @ rng.normal(size=d) / max(np.abs(F).max(), 1e-300) + rng.normal(size=n)
    return F, y


# ------------------------------------------------------------------------------------------------ tests


@SETTINGS
@given(problems(), st.floats(-3, 3), st.floats(-3, 3))
def test_the_two_reference_formulas_agree(problem, log_alpha, log_beta):
    """The test's stable marginal form is the paper's formula (checked where the paper's form is well conditioned)."""
    F, y = problem
    F = F / np.abs(F).max()
    a, b = np.exp(log_alpha), np.exp(log_beta)
    assert marginal_evidence(F, y, log_alpha - log_beta, log_beta) == pytest.approx(
        paper_evidence(F, y, a, b), rel=1e-7, abs=1e-7)


def unbounded(F: np.ndarray, y: np.ndarray) -> bool:
    """y exactly in the span of F with rank(F) < N: the evidence grows without bound as β → ∞."""
    Fs = F / np.abs(F).max()
    coef, *_ = np.linalg.lstsq(Fs, y, rcond=None)
    return np.linalg.matrix_rank(Fs) < len(y) and np.sum((Fs @ coef - y) ** 2) <= 1e-12 * np.sum(y**2)


@SETTINGS
@given(problems())
def test_fixed_point_reaches_the_brute_force_maximum(problem):
    F, y = problem
    assume(not unbounded(F, y))  # there LogME is finite by its cap on β; the supremum is +inf
    fit = log_evidence(F, y)
    ours = float(fit.evidence[0])
    assert np.isfinite(ours) and np.isfinite(fit.alpha).all() and np.isfinite(fit.beta).all()
    # the value is the evidence at the returned (α, β): it is attainable
    at_ours = _safe(F, y, np.log([fit.alpha[0] / fit.beta[0], fit.beta[0]]))
    if np.isfinite(at_ours):
        assert ours == pytest.approx(at_ours, abs=1e-7)
    # and no (α, β) a brute-force search finds is better
    assert ours >= brute_force_max(F, y) - 1e-6


def test_vectorised_columns_equal_one_at_a_time():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(40, 12))
    Y = np.eye(4)[rng.integers(0, 4, 40)]
    both = log_evidence(F, Y)
    for k in range(4):
        one = log_evidence(F, Y[:, k])
        assert both.evidence[k] == pytest.approx(one.evidence[0], abs=1e-10)
        assert both.alpha[k] == pytest.approx(one.alpha[0], rel=1e-6)


def test_classification_score_is_the_mean_over_one_hot_columns():
    rng = np.random.default_rng(1)
    F, labels = rng.normal(size=(30, 5)), rng.integers(0, 3, 30)
    expected = np.mean([log_evidence(F, (labels == c).astype(float)).evidence[0] for c in range(3)])
    assert logme(F, labels) == pytest.approx(expected, abs=1e-12)
    assert logme(F, np.array(["abc"[i] for i in labels])) == pytest.approx(expected, abs=1e-12)


@SETTINGS
@given(problems(max_n=30, max_d=40), st.sampled_from([1e-6, 0.3, 7.0, 1e6]), st.integers(0, 2**32 - 1))
def test_global_scale_and_rotation_of_features_leave_it_unchanged(problem, c, seed):
    """Exact invariances: F → cF (α absorbs c²) and F → FQ for orthogonal Q (the evidence sees only FFᵀ)."""
    F, y = problem
    base = log_evidence(F, y).evidence[0]
    assert log_evidence(c * F, y).evidence[0] == pytest.approx(base, abs=1e-6)
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(F.shape[1], F.shape[1])))
    assert log_evidence(F @ Q, y).evidence[0] == pytest.approx(base, abs=1e-6)


@SETTINGS
@given(problems(max_n=30, max_d=12))
def test_a_duplicate_column_is_finite_and_acts_as_that_column_scaled_by_sqrt2(problem):
    """Not invariant: duplicating column j doubles the prior variance along it, i.e. it is column j × √2."""
    F, y = problem
    dup = np.column_stack([F, F[:, 0]])
    scaled = F.copy()
    scaled[:, 0] *= np.sqrt(2)
    value = log_evidence(dup, y).evidence[0]
    assert np.isfinite(value)
    assert value == pytest.approx(log_evidence(scaled, y).evidence[0], abs=1e-6)


def test_per_column_scaling_is_not_an_invariance():
    rng = np.random.default_rng(3)
    F = rng.normal(size=(60, 4))
    labels = (F[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(int)
    G = F.copy()
    G[:, 0] *= 1e-3  # shrinks the informative direction: the evidence must drop
    assert logme(G, labels) < logme(F, labels) - 0.01


@SETTINGS
@given(problems(), st.sampled_from([1e-3, 0.5, 20.0]))
def test_regression_targets_scale_like_a_density(problem, c):
    """log p(c·y) = log p(y) − N log c, so the per-item score moves by exactly −log c."""
    F, y = problem
    assert logme(F, c * y, regression=True) == pytest.approx(logme(F, y, regression=True) - np.log(c), abs=1e-6)


@pytest.mark.parametrize("F", [
    np.zeros((20, 5)),
    np.ones((20, 5)),
    np.random.default_rng(0).normal(size=(20, 300)),  # N < D
    np.repeat(np.random.default_rng(1).normal(size=(20, 1)), 6, axis=1),  # rank 1, duplicate columns
    np.random.default_rng(2).normal(size=(20, 5)) * 1e200,
    np.random.default_rng(3).normal(size=(20, 5)) * 1e-200,
    np.random.default_rng(4).normal(size=(2, 3)),  # tiny
], ids=["zeros", "constant", "N<D", "rank1-duplicates", "huge", "tiny", "two-items"])
def test_degenerate_features_give_a_finite_score(F):
    labels = np.arange(len(F)) % 2
    with np.errstate(all="raise"):  # no overflow, no 0/0, no log(0) on the way
        assert np.isfinite(logme(F, labels))


def test_perfectly_fit_targets_stay_finite():
    """y in the span of a rank-deficient F has unbounded evidence; LogME caps β and stays finite."""
    F = np.array([[3e-4], [3e-4], [1e-4]])
    y = np.array([3.0, 3.0, 1.0])
    assert unbounded(F, y)
    assert np.isfinite(log_evidence(F, y).evidence).all()


def test_zero_regression_target_is_finite():
    assert np.isfinite(log_evidence(np.random.default_rng(0).normal(size=(10, 3)), np.zeros(10)).evidence).all()


def test_informative_features_score_higher_than_noise():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 200)
    good = np.eye(3)[labels] * 2 + rng.normal(size=(200, 3)) * 0.5
    noise = rng.normal(size=(200, 3))
    assert logme(good, labels) > logme(noise, labels) + 0.1


@pytest.mark.parametrize("F,labels,words", [
    (np.full((4, 2), np.nan), np.array([0, 1, 0, 1]), "NaN"),
    (np.ones((4, 2)), np.array([1, 1, 1, 1]), "one class"),
    (np.ones((4, 2)), np.array([0, 1, 0]), "3 labels for 4"),
    (np.ones(4), np.array([0, 1, 0, 1]), "(N, D)"),
])
def test_bad_inputs_raise_a_user_error(F, labels, words):
    with pytest.raises(DataError, match=None) as e:
        logme(F, labels)
    assert words in str(e.value)
