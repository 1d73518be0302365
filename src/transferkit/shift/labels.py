"""Per-class feature drift and label-shift estimation (black box shift estimation, Lipton et al. 2018)."""

from __future__ import annotations

import numpy as np


def bbse(conf_joint: np.ndarray, target_pred_freq: np.ndarray, source_prior: np.ndarray) -> dict:
    """BBSE: solve C·w = μ̂ for the class weights w = q(y)/p(y), where C[i, j] = P_source(ŷ = i, y = j) on held-out
    source data and μ̂[i] = P_target(ŷ = i); q = w·p clipped at 0 and renormalised is the target label distribution.
    Returns {"weights", "target_prior", "tv": total variation between source and estimated target priors}."""
    w, *_ = np.linalg.lstsq(conf_joint, target_pred_freq, rcond=None)
    w = np.clip(w, 0.0, None)
    q = w * source_prior
    q = q / q.sum() if q.sum() > 0 else source_prior.copy()
    return {"weights": w, "target_prior": q, "tv": float(0.5 * np.abs(q - source_prior).sum())}


def class_drift(Zs: np.ndarray, ys: np.ndarray, Zt: np.ndarray, yt: np.ndarray, n_classes: int) -> list[dict]:
    """Per class: how far the target class mean moved from the source class mean, in units of the source class's
    RMS spread (√(mean per-feature variance)), and the items of each side. Z are standardised features."""
    rows = []
    for c in range(n_classes):
        a, b = Zs[ys == c], Zt[yt == c]
        row: dict = {"class": c, "n_source": int(len(a)), "n_target": int(len(b)), "drift": None}
        if len(a) >= 2 and len(b) >= 1:
            spread = float(np.sqrt(a.var(0).mean()))
            row["drift"] = float(np.linalg.norm(a.mean(0) - b.mean(0)) / max(spread, 1e-12))
        rows.append(row)
    return rows
