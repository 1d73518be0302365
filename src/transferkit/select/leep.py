"""LEEP (Nguyen et al., ICML 2020): how well the source model's own class probabilities predict target labels.

From the source-task probabilities θ(x) (N×Z) and target labels y, form the empirical joint
P̂(y, z) = 1/N Σᵢ θ(xᵢ)_z [yᵢ = y], the conditional P̂(y | z), and score the "expected empirical
predictor" LEEP = 1/N Σᵢ log Σ_z P̂(yᵢ | z) θ(xᵢ)_z. It is ≤ 0; higher is better.

The source probabilities come from the backbone's `source_head` applied to its default pooled
features: the very features the store caches, so LEEP costs one small matrix product, no extra pass.
"""

from __future__ import annotations

import numpy as np
import torch

from transferkit.backbones.base import Backbone
from transferkit.errors import DataError

#: poolings whose output is the input of the source classifier (effnet reports its default as "mean")
DEFAULT_POOLINGS = ("default", "mean", "avg")


def source_head_unavailable(backbone: Backbone) -> str | None:
    """Why source-task probabilities cannot be had from `backbone`'s features, or None when they can."""
    if backbone.source_head is None:
        return f"{backbone.spec} has no source-task classifier (text encoders and plain modules have none)"
    if backbone.pooling.startswith("layer:"):
        return (f"pooling {backbone.pooling} is not the input of the source classifier: "
                "rank the default pooling for LEEP/NCE")
    if backbone.pooling not in DEFAULT_POOLINGS:
        return f"pooling {backbone.pooling!r} is not the input of the source classifier: use the default pooling"
    width = getattr(backbone.source_head, "in_features", None)
    if width is not None and width != backbone.feature_dim:
        return f"the source classifier reads {width} features but the pooling gives {backbone.feature_dim}"
    return None


def source_probabilities(backbone: Backbone, features: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
    """(N, Z) float64 source-task probabilities: softmax(source_head(features)) on the backbone's device."""
    reason = source_head_unavailable(backbone)
    if reason is not None:
        raise DataError(reason)
    head = backbone.source_head
    param = next(head.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    out = []
    head.eval()
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(features[start : start + batch_size])).to(device, dtype)
            out.append(head(x).double().log_softmax(-1).exp().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def _check_probs(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Row-normalised float64 probabilities, class ids 0..C-1 and C; DataError on bad shapes or one class."""
    P = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if P.ndim != 2 or labels.ndim != 1 or len(P) != len(labels):
        raise DataError(f"source probabilities {P.shape} and labels {labels.shape} do not match: "
                        "give an (N, Z) array and N labels")
    if not np.isfinite(P).all() or (P < 0).any():
        raise DataError("source probabilities must be finite and non-negative (softmax outputs)")
    total = P.sum(1, keepdims=True)
    if (total <= 0).any():
        raise DataError("a row of source probabilities sums to zero: give softmax outputs")
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"all {len(labels)} labels are one class: transferability needs at least two classes")
    return P / total, y, len(classes)


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP of source-task probabilities (N, Z) for target class labels (N,); ≤ 0, higher is better."""
    P, y, C = _check_probs(source_probs, labels)
    N = len(y)
    onehot = np.zeros((N, C))
    onehot[np.arange(N), y] = 1.0
    joint = onehot.T @ P / N  # P̂(y, z)
    pz = joint.sum(0)  # P̂(z)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P̂(y | z)
    eep = np.empty(N)  # Σ_z P̂(yᵢ | z) θ(xᵢ)_z, in (0, 1]; per class, so no (N, Z) temporary
    for c in range(C):
        eep[y == c] = P[y == c] @ cond[c]
    return float(np.mean(np.log(np.clip(eep, 1e-300, 1.0))))
