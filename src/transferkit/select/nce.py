"""NCE (Tran et al., ICCV 2019): negative conditional entropy of target labels given source labels.

The source label of an item is the source model's most probable class (argmax of its source-task
probabilities). With the empirical joint P̂(y, z) of target and source labels, NCE = −H(Y | Z)
= Σ_{y,z} P̂(y, z) log P̂(y | z). It is ≤ 0; 0 means the source label determines the target label.
"""

from __future__ import annotations

import numpy as np

from transferkit.errors import DataError


def nce(source: np.ndarray, labels: np.ndarray) -> float:
    """NCE of source labels (N,) or source probabilities (N, Z) (argmax taken) for target labels (N,)."""
    z = np.asarray(source)
    labels = np.asarray(labels)
    if z.ndim == 2:
        if not np.isfinite(z).all():
            raise DataError("source probabilities contain NaN or inf: extract them again")
        z = z.argmax(1)
    if z.ndim != 1 or labels.ndim != 1 or len(z) != len(labels):
        raise DataError(f"source labels {np.shape(source)} and target labels {labels.shape} do not match: "
                        "give one of each per item")
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"all {len(labels)} labels are one class: transferability needs at least two classes")
    _, zi = np.unique(z, return_inverse=True)
    joint = np.zeros((zi.max() + 1, len(classes)))
    np.add.at(joint, (zi, y), 1.0)
    joint /= len(y)  # P̂(z, y)
    pz = joint.sum(1, keepdims=True)
    mask = joint > 0
    cond = joint / pz  # every row has P̂(z) > 0: only source labels that occur are kept
    return float(np.sum(joint[mask] * np.log(cond[mask])))
