"""H-score (Bao et al., ICIP 2019), regularised by Ledoit-Wolf shrinkage (Ibrahim et al., 2022).

H(f) = tr(cov(f)⁻¹ cov(E[f | y])): how much of the feature variance separates the classes. The plain
covariance is singular or badly estimated when N is not ≫ D, so the regularised form replaces it by the
shrunk estimate cov_α = (1 − α) S + α (tr S / D) I with the Ledoit-Wolf α, and scales the between-class
covariance by (1 − α): H_α = tr(cov_α⁻¹ (1 − α) cov(E[f | y])). Both covariances use 1/N, so
0 ≤ H_α ≤ C − 1 (the reference code's `np.cov` uses 1/(N − 1) for the second: a constant factor).
Higher is better. Invariant to a global scale and to rotations of feature space.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from sklearn.covariance import ledoit_wolf_shrinkage

from transferkit.errors import DataError


def hscore(features: np.ndarray, labels: np.ndarray, *, shrinkage: float | str = "ledoit-wolf") -> float:
    """H-score of (N, D) features for class labels (N,).

    shrinkage: "ledoit-wolf" (the regularised H-score, default), or a fixed α in [0, 1]; 0 is the original
    H-score, with a pseudo-inverse where the covariance is singular.
    """
    F = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if F.ndim != 2 or labels.ndim != 1 or len(F) != len(labels):
        raise DataError(f"features {F.shape} and labels {labels.shape} do not match: give (N, D) and N labels")
    if not np.isfinite(F).all():
        raise DataError("features contain NaN or inf: extract them again (e.g. with --precision fp32)")
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"all {len(labels)} labels are one class: transferability needs at least two classes")
    N, D = F.shape
    X = F - F.mean(0)
    peak = np.abs(X).max() if X.size else 0.0
    X = X / peak if peak > 0 else X  # H-score is invariant to a global scale; this keeps XᵀX in range
    if shrinkage == "ledoit-wolf":
        alpha = float(ledoit_wolf_shrinkage(X, assume_centered=True)) if D > 1 else 0.0
    elif isinstance(shrinkage, (int, float)) and 0 <= shrinkage <= 1:
        alpha = float(shrinkage)
    else:
        raise DataError(f"shrinkage {shrinkage!r} is not 'ledoit-wolf' or a number in [0, 1]")
    S = X.T @ X / N
    mu = np.trace(S) / D
    cov = (1 - alpha) * S
    cov.flat[:: D + 1] += alpha * mu
    onehot = np.zeros((N, len(classes)))
    onehot[np.arange(N), y] = 1.0
    counts = onehot.sum(0)
    means = (onehot.T @ X) / counts[:, None]  # class means of the centred features: E[f | y] − E[f]
    G = means.T * np.sqrt(counts / N)  # cov(E[f | y]) = G Gᵀ
    return float((1 - alpha) * _trace_inv_quadratic(cov, G))


def _trace_inv_quadratic(cov: np.ndarray, G: np.ndarray) -> float:
    """tr(cov⁻¹ G Gᵀ) = ‖L⁻¹ G‖² via Cholesky; a pseudo-inverse (on the range of cov) when it is singular."""
    scale = np.abs(np.diag(cov)).max() if cov.size else 0.0
    if scale == 0:
        return 0.0
    try:
        L = scipy.linalg.cholesky(cov / scale, lower=True)
        if np.diag(L).min() > 1e-7:  # well conditioned enough for the triangular solve
            return float((scipy.linalg.solve_triangular(L, G, lower=True) ** 2).sum() / scale)
    except np.linalg.LinAlgError:
        pass
    w, Q = np.linalg.eigh(cov / scale)
    keep = w > 1e-12 * w.max()
    return float((((Q[:, keep].T @ G) ** 2) / w[keep, None]).sum() / scale)
