"""Shift diagnostics on real features: no shift between random halves of one set, shift between MNIST and
UCI digits; BBSE recovers a known label shift; error cases."""

import numpy as np
import pytest

from transferkit.errors import AdaptError
from transferkit.shift import bbse, mmd_test, proxy_a_distance, shift_report


def test_random_halves_of_one_set_show_no_shift(digit_features):
    X, _ = digit_features["digits"]
    ps = []
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(len(X))
        ps.append(mmd_test(X[perm[:300]], X[perm[300:]], permutations=200, seed=seed)["p_value"])
    assert sum(p > 0.05 for p in ps) >= 4, ps
    rep = shift_report(X[:300], X[300:], permutations=200)
    assert rep.verdict.startswith("no shift") or rep.mmd["p_value"] < 0.05  # one seed may reject at α = 0.05


def test_mnist_vs_digits_is_a_large_shift(digit_features):
    (Xs, ys), (Xt, yt) = digit_features["mnist"], digit_features["digits"]
    rep = shift_report(Xs, Xt, ys=ys, yt=yt, class_names=[str(i) for i in range(10)], permutations=200)
    assert rep.shift and rep.mmd["p_value"] <= 1 / 201 + 1e-12
    assert rep.pad["pad"] > 1.5 and rep.verdict.startswith("shift") and "large" in rep.verdict
    assert len(rep.classes) == 10 and all(r["drift"] > 0 for r in rep.classes)
    assert rep.drift_basis == "target labels"
    assert {r["diagnostic"] for r in rep.rows()} >= {"proxy A-distance"}
    unl = shift_report(Xs, Xt, ys=ys, class_names=[str(i) for i in range(10)], permutations=50)
    assert unl.drift_basis == "predicted target classes" and unl.label_shift is not None
    # the features moved: the BBSE number comes with its assumption, and says it is doubtful here
    assert "assumes p(x|y)" in rep.verdict and rep.label_shift["assumption_doubtful"]
    assert "assumes p(x|y)" in next(r["meaning"] for r in rep.rows() if r["diagnostic"].startswith("label shift"))


def test_proxy_a_distance_is_near_zero_for_one_distribution():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(800, 10))
    assert abs(proxy_a_distance(X[:400], X[400:])["pad"]) < 0.4
    assert proxy_a_distance(X[:400], X[400:] + 3.0)["pad"] > 1.9


def test_bbse_recovers_a_known_label_shift(digit_features):
    """Resample the digits so class 0..4 are 3× as frequent as 5..9; BBSE on MNIST-trained... no: same domain."""
    X, y = digit_features["digits"]
    rng = np.random.default_rng(0)
    src = rng.permutation(len(X))[:300]
    rest = np.setdiff1d(np.arange(len(X)), src)
    keep = np.concatenate([rest[y[rest] < 5], rest[y[rest] >= 5][::3]])
    rep = shift_report(X[src], X[keep], ys=y[src], yt=y[keep], class_names=[str(i) for i in range(10)],
                       permutations=50)
    est, true = np.array(rep.label_shift["target_prior"]), np.array(rep.label_shift["true_target_prior"])
    assert np.abs(est - true).sum() / 2 < 0.12
    assert rep.label_shift["tv"] > 0.15
    if not rep.shift:  # pure label shift that MMD does not flag: the estimate stands without the caveat
        assert "assumes p(x|y)" not in rep.verdict and not rep.label_shift["assumption_doubtful"]


def test_bbse_solves_the_linear_system_exactly():
    conf = np.array([[0.4, 0.1], [0.1, 0.4]])  # joint P(ŷ, y), source prior (0.5, 0.5)
    w_true = np.array([1.5, 0.5])
    mu = conf @ w_true
    est = bbse(conf, mu, np.array([0.5, 0.5]))
    assert np.allclose(est["weights"], w_true) and np.allclose(est["target_prior"], [0.75, 0.25])


@pytest.mark.parametrize("n_target", [0, 1, 4])
def test_too_few_target_items_is_a_clear_error(n_target):
    X = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(AdaptError, match="at least 5"):
        shift_report(X, X[:n_target])


def test_feature_dimension_mismatch_is_a_clear_error():
    rng = np.random.default_rng(0)
    with pytest.raises(AdaptError, match="same backbone"):
        shift_report(rng.normal(size=(20, 4)), rng.normal(size=(20, 5)))
