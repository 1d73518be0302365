"""Each adaptation loss against a direct float64 computation written from the papers' formulas."""

import math

import numpy as np
import pytest
import torch

from transferkit.adapt import losses as L


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_gradient_reversal_negates_and_scales_gradients():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64)
    (L.grad_reverse(x, 0.7) @ w).sum().backward()
    assert torch.allclose(x.grad, -0.7 * w.expand(5, 3))
    y = torch.randn(4, 2, requires_grad=True)
    out = L.GradientReversal(2.0)(y)
    assert torch.equal(out, y)  # identity forward
    out.sum().backward()
    assert torch.equal(y.grad, torch.full_like(y, -2.0))


def test_dann_schedule_ramps_from_zero_to_one():
    assert L.dann_schedule(0.0) == 0.0
    assert 0.99 < L.dann_schedule(1.0) < 1.0
    assert L.dann_schedule(0.1) < L.dann_schedule(0.5)


def _direct_mmd(xs, xt, sigmas):
    def k(a, b):
        return sum(math.exp(-float(np.sum((a - b) ** 2)) / s) for s in sigmas)
    n, m = len(xs), len(xt)
    kss = sum(k(a, b) for a in xs for b in xs) / n**2
    ktt = sum(k(a, b) for a in xt for b in xt) / m**2
    kst = sum(k(a, b) for a in xs for b in xt) / (n * m)
    return kss + ktt - 2 * kst


def test_multi_kernel_mmd_matches_a_direct_double_sum():
    xs, xt = _rng(0).normal(size=(7, 4)), _rng(1).normal(loc=0.5, size=(5, 4))
    z = np.concatenate([xs, xt])
    n = len(z)
    base = sum(float(np.sum((a - b) ** 2)) for a in z for b in z) / (n * n - n)
    sigmas = [base * 2.0**k for k in (-2, -1, 0, 1, 2)]
    got = L.multi_kernel_mmd(torch.tensor(xs), torch.tensor(xt), kernel_mul=2.0, kernel_num=5)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(_direct_mmd(xs, xt, sigmas), rel=1e-10)
    same = L.multi_kernel_mmd(torch.tensor(xs), torch.tensor(xs))
    assert abs(float(same)) < 1e-12


def test_multi_kernel_mmd_has_gradients_and_grows_with_shift():
    xs = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    near = L.multi_kernel_mmd(xs, xs + 0.1)
    far = L.multi_kernel_mmd(xs, xs + 2.0)
    assert far > near > 0
    xt = (xs + 1.0).requires_grad_()
    L.multi_kernel_mmd(xs, xt).backward()
    assert xt.grad is not None and xt.grad.abs().sum() > 0


def test_coral_loss_matches_the_frobenius_formula():
    xs, xt = _rng(2).normal(size=(20, 6)), _rng(3).normal(scale=2.0, size=(15, 6))
    cs, ct = np.cov(xs, rowvar=False), np.cov(xt, rowvar=False)
    expected = np.sum((cs - ct) ** 2) / (4 * 6**2)
    got = L.coral_loss(torch.tensor(xs), torch.tensor(xt))
    assert float(got) == pytest.approx(expected, rel=1e-12)
    assert float(L.coral_loss(torch.tensor(xs), torch.tensor(xs + 3.0))) == pytest.approx(0.0, abs=1e-12)


def test_cdan_multilinear_map_is_the_flattened_outer_product():
    f = torch.tensor(_rng(4).normal(size=(3, 5)))
    p = torch.softmax(torch.tensor(_rng(5).normal(size=(3, 4))), 1)
    out = L.multilinear_map(f, p)
    assert out.shape == (3, 20)
    for n in range(3):
        assert np.allclose(out[n].numpy(), np.outer(p[n].numpy(), f[n].numpy()).ravel())


def test_information_maximization_matches_a_direct_float64_computation():
    logits = _rng(3).normal(size=(7, 4)) * 2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ent = -(p * np.log(p + 1e-5)).sum(1).mean()
    mean = p.mean(0)
    div = -(mean * np.log(mean + 1e-5)).sum()
    got = L.information_maximization(torch.as_tensor(logits, dtype=torch.float32))
    assert float(got) == pytest.approx(ent - div, abs=1e-5)
    # confident, evenly spread predictions score lower than uniform ones
    sharp = torch.eye(4).repeat(2, 1) * 20
    assert float(L.information_maximization(sharp)) < float(L.information_maximization(torch.zeros(8, 4)))


def test_entropy_weights_and_weighted_domain_loss():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    w = L.entropy_weights(p)
    assert float(w[0]) == pytest.approx(2.0, abs=1e-6)
    assert float(w[1]) == pytest.approx(1 + 0.5, rel=1e-6)  # exp(-ln 2) = 1/2
    logits = torch.tensor([0.3, -1.0, 2.0, 0.1], dtype=torch.float64)
    is_src = torch.tensor([1, 1, 0, 0])
    weights = torch.tensor([1.0, 3.0, 2.0, 2.0], dtype=torch.float64)
    bce = [math.log1p(math.exp(-0.3)), math.log1p(math.exp(1.0)), math.log1p(math.exp(2.0)),
           math.log1p(math.exp(0.1))]
    wn = [0.25, 0.75, 0.5, 0.5]
    expected = sum(a * b for a, b in zip(wn, bce)) / sum(wn)
    assert float(L.domain_adversarial_loss(logits, is_src, weights)) == pytest.approx(expected, rel=1e-12)
    assert float(L.domain_adversarial_loss(logits, is_src)) == pytest.approx(np.mean(bce), rel=1e-12)


def test_mcc_loss_matches_the_papers_recipe():
    logits = _rng(6).normal(size=(9, 4)) * 3
    T = 2.5
    z = logits / T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    h = -(p * np.log(p + 1e-8)).sum(1)
    w = 1 + np.exp(-h)
    w = 9 * w / w.sum()
    c = (p * w[:, None]).T @ p
    c = c / c.sum(1, keepdims=True).T  # c[i, j] / sum_k c[j, k]
    expected = (c.sum() - np.trace(c)) / 4
    got = L.mcc_loss(torch.tensor(logits), temperature=T)
    assert float(got) == pytest.approx(expected, rel=1e-10)
    confident = torch.tensor(np.eye(4)[[0, 1, 2, 3, 0, 1]] * 50.0)
    assert float(L.mcc_loss(confident, temperature=1.0)) < 1e-6  # no confusion between classes


def test_randomized_multilinear_map_matches_its_formula_and_approximates_the_full_map():
    g = torch.Generator().manual_seed(0)
    f = torch.tensor(_rng(7).normal(size=(6, 40)))
    p = torch.softmax(torch.tensor(_rng(8).normal(size=(6, 5))), 1)
    rmap = L.RandomizedMultilinearMap(40, 5, 4096, generator=g)
    out = rmap(f, p)
    assert out.shape == (6, 4096) and out.dtype == torch.float64
    Rf, Rg = rmap.Rf.double().numpy(), rmap.Rg.double().numpy()
    direct = (f.numpy() @ Rf) * (p.numpy() @ Rg) / math.sqrt(4096)
    assert np.allclose(out.numpy(), direct, rtol=1e-10, atol=1e-12)
    # E[<T(a), T(b)>] = <f_a ⊗ g_a, f_b ⊗ g_b> = <f_a, f_b>·<g_a, g_b>: the Gram matrices agree to a few per cent
    full = L.multilinear_map(f, p).numpy()
    gram, approx = full @ full.T, out.numpy() @ out.numpy().T
    assert np.abs(approx - gram).max() < 0.1 * np.abs(gram).max()
