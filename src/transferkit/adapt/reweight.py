"""Instance reweighting on frozen features: KLIEP importance weights, then a weighted source classifier.

KLIEP (Sugiyama et al., NIPS 2008) models the density ratio w(x) = p_target(x) / p_source(x) as a non-negative
mix of Gaussian kernels centred on target items, w(x) = Σ_l α_l K(x, c_l), and chooses α ≥ 0 to maximise the
target log-likelihood Σ_t log w(x_t) subject to the source mean of w being 1 (exponentiated-gradient ascent,
renormalised onto the constraint after each step). Source
items that look like the target then count more in a logistic regression fitted on the source (the covariate-shift
correction of Shimodaira 2000). The representation is not changed: both domains are read through the source's
standardisation, so the classifier's source and target maps are the same.

Kernels live on the top `pca_dim` principal components of the pooled z-scored features (distances in 1,000+
dimensions concentrate, and the kernel would give every item the same weight); the bandwidth is chosen among
multiples of the median source-target distance by likelihood cross-validation on the target.
"""

from __future__ import annotations

import numpy as np

from transferkit.adapt.align import fit_logreg, zscore_stats
from transferkit.adapt.model import FeatureClassifier

#: the largest weight any source item may get (a few items with enormous weights would be the whole fit)
MAX_WEIGHT = 20.0
#: kernel widths tried, as multiples of the median source-target distance
BANDWIDTHS = (0.1, 0.2, 0.4, 1.0)


def kliep_weights(Zs: np.ndarray, Zt: np.ndarray, *, centres: int = 100, iters: int = 300, step: float = 0.5,
                  pca_dim: int = 16, seed: int = 0) -> np.ndarray:
    """Importance weights w(x_s) ≈ p_target / p_source of the source items (mean 1, clipped at MAX_WEIGHT)."""
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([Zs, Zt])
    mean = pooled.mean(0)
    dim = int(min(pca_dim, pooled.shape[1], len(pooled) - 1))
    _, _, vt = np.linalg.svd(pooled[rng.choice(len(pooled), min(len(pooled), 4000), replace=False)] - mean,
                             full_matrices=False)
    P = vt[:dim].T
    S, T = (Zs - mean) @ P, (Zt - mean) @ P
    C = T[rng.choice(len(T), min(centres, len(T)), replace=False)]
    a, b = S[rng.choice(len(S), min(500, len(S)), replace=False)], T[rng.choice(len(T), min(500, len(T)),
                                                                               replace=False)]
    median = float(np.median(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)))) or 1.0
    # the bandwidth by likelihood cross-validation (Sugiyama et al.): fit on 4/5 of the target, keep the width whose
    # weights give the held-out fifth the highest mean log w
    fold = rng.permutation(len(T)) % 5 == 0
    scores = {}
    for sigma in (median * f for f in BANDWIDTHS):
        alpha = _fit_alpha(_kernel(T[~fold], C, sigma), _kernel(S, C, sigma).mean(0), iters, step)
        scores[sigma] = float(np.mean(np.log(np.maximum(_kernel(T[fold], C, sigma) @ alpha, 1e-300))))
    sigma = max(scores, key=scores.get)
    alpha = _fit_alpha(_kernel(T, C, sigma), _kernel(S, C, sigma).mean(0), iters, step)
    w = np.minimum(_kernel(S, C, sigma) @ alpha, MAX_WEIGHT)
    return w / max(float(w.mean()), 1e-12)


def _kernel(X: np.ndarray, C: np.ndarray, sigma: float) -> np.ndarray:
    d2 = (X ** 2).sum(1)[:, None] + (C ** 2).sum(1)[None, :] - 2 * X @ C.T
    return np.exp(-np.maximum(d2, 0.0) / (2 * sigma ** 2))


def _fit_alpha(At: np.ndarray, bs: np.ndarray, iters: int, step: float) -> np.ndarray:
    """argmax Σ log(At·α) s.t. bsᵀα = 1, α ≥ 0: exponentiated gradient, renormalised onto the constraint."""
    alpha = np.ones(At.shape[1]) / max(float(bs.sum()), 1e-12)
    for _ in range(iters):
        g = At.T @ (1.0 / np.maximum(At @ alpha, 1e-300)) / len(At)
        alpha = alpha * np.exp(step * g / max(float(np.abs(g).max()), 1e-12))
        alpha = alpha / max(float(bs @ alpha), 1e-300)
    return alpha


def kliep(Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray, class_names: list[str], *, C: float = 1.0,
          pca_dim: int = 16, seed: int = 0) -> FeatureClassifier:
    """Logistic regression on the source, each item weighted by its KLIEP importance weight."""
    mean, std = zscore_stats(Xs)
    Zs, Zt = (Xs - mean) / std, (Xt - mean) / std
    w = kliep_weights(Zs, Zt, pca_dim=pca_dim, seed=seed)
    W, b = fit_logreg(Zs, ys, len(class_names), C, seed, sample_weight=w)
    ess = float(w.sum() ** 2 / (w ** 2).sum())  # effective sample size: how many source items the fit really uses
    return FeatureClassifier("linear", {"mean": mean, "std": std, "weight": W, "bias": b}, list(class_names),
                             extra={"kliep_effective_items": np.asarray([ess], np.float32)})
