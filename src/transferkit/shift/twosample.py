"""Two-sample statistics on features: kernel MMD with a permutation p-value, and the proxy A-distance."""

from __future__ import annotations

import warnings

import numpy as np


def _cap(X: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return X if len(X) <= n else X[np.sort(rng.choice(len(X), n, replace=False))]


def median_bandwidth(Z: np.ndarray, rng: np.random.Generator, max_items: int = 1000) -> float:
    """The median heuristic: median pairwise squared distance of (a sample of) the pooled data."""
    S = _cap(Z, max_items, rng).astype(np.float64)
    sq = (S * S).sum(1)
    d = np.clip(sq[:, None] + sq[None, :] - 2 * S @ S.T, 0, None)
    med = float(np.median(d[np.triu_indices(len(S), 1)])) if len(S) > 1 else 1.0
    return med if med > 0 else 1.0


def mmd_test(Xs: np.ndarray, Xt: np.ndarray, *, permutations: int = 500, seed: int = 0,
             max_items: int = 1500) -> dict:
    """Kernel two-sample test: squared MMD under a Gaussian kernel exp(-||a-b||²/σ²) with σ² the median pairwise
    squared distance, and the permutation p-value (1 + #{permuted ≥ observed}) / (1 + permutations).

    Features are z-scored with pooled statistics first; each side is subsampled to `max_items` for speed.
    Returns {"mmd2": biased V-statistic, "p_value", "bandwidth", "n_source", "n_target", "permutations"}.
    """
    rng = np.random.default_rng(seed)
    A, B = _cap(np.asarray(Xs, np.float64), max_items, rng), _cap(np.asarray(Xt, np.float64), max_items, rng)
    Z = np.concatenate([A, B])
    mu, sd = Z.mean(0), Z.std(0)
    Z = (Z - mu) / np.where(sd > 1e-12, sd, 1.0)
    sigma2 = median_bandwidth(Z, rng)
    sq = (Z * Z).sum(1)
    K = np.exp(-np.clip(sq[:, None] + sq[None, :] - 2 * Z @ Z.T, 0, None) / sigma2)
    n, m = len(A), len(B)
    v = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
    observed = float(v @ K @ v)
    exceed = 0
    for start in range(0, permutations, 100):  # permuted sign vectors in blocks: MMD² = vᵀKv for each column
        k = min(100, permutations - start)
        V = np.stack([v[rng.permutation(n + m)] for _ in range(k)], axis=1)
        stats = np.einsum("ij,ij->j", V, K @ V)
        exceed += int((stats >= observed - 1e-12).sum())
    return {"mmd2": observed, "p_value": (1 + exceed) / (1 + permutations), "bandwidth": sigma2, "n_source": n,
            "n_target": m, "permutations": permutations}


def proxy_a_distance(Xs: np.ndarray, Xt: np.ndarray, *, seed: int = 0, max_items: int = 2000) -> dict:
    """Proxy A-distance 2(1 - 2ε) (Ben-David et al. 2007), ε the held-out error of a linear domain classifier
    trained on half of an equal-size sample of each domain (chance: ε = 0.5, PAD = 0; separable: PAD = 2).
    Negative values (ε > 0.5, noise) are reported as they are."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    k = min(len(Xs), len(Xt), max_items)
    A, B = _cap(np.asarray(Xs), k, rng), _cap(np.asarray(Xt), k, rng)
    Z = np.concatenate([A, B])
    d = np.r_[np.zeros(len(A)), np.ones(len(B))]
    Ztr, Zte, dtr, dte = train_test_split(Z, d, test_size=0.5, stratify=d, random_state=seed)
    scaler = StandardScaler().fit(Ztr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=0.1, max_iter=500, random_state=seed).fit(scaler.transform(Ztr), dtr)
    err = float((clf.predict(scaler.transform(Zte)) != dte).mean())
    return {"pad": 2.0 * (1.0 - 2.0 * err), "domain_error": err, "n_per_domain": k}
