"""The `contrastive` strategy (SetFit, Tunstall et al. 2022): tune the encoder on pairs, then fit the head.

The body is trained with a cosine-similarity loss on pairs of training items: each item of a batch is paired with
another training item, of its own class or of another with equal odds, and (cos(u, v) − [same class])² is
minimised, as SetFit's `CosineSimilarityLoss` does. The head is not trained by gradient at all: before every
validation, and at the end, a logistic regression is fitted on the tuned features of the training items and
written into the run's linear head, so the run folder is an ordinary fine-tuning folder (predict, export and
serve read it unchanged), and early stopping keeps the epoch whose fitted head scored best on validation.

The pairs are a loss term of the loop (`PairTerm`), so resume, data parallelism and the time limit work as for
every strategy. Cosines are taken on the features the head reads (the backbone's pooled features centred on
their pretrained training mean).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.data.dataset import Dataset
from transferkit.finetune.terms import LossTerm, TermBatch

#: inverse regularisation of the fitted head (scikit-learn's default, SetFit's head)
HEAD_C = 1.0


class PairTerm(LossTerm):
    """Contrastive pairs as a loss term: the partner of every source item is drawn from the training items."""

    name = "pairs"

    def __init__(self, data: Dataset, labels: np.ndarray, train_idx: np.ndarray, seed: int = 0) -> None:
        super().__init__()
        self.items, self.seed = data, int(seed)
        self.labels = np.asarray(labels, dtype=np.int64)
        train = np.sort(np.asarray(train_idx, dtype=np.int64))
        self._by_class = {int(c): train[self.labels[train] == c] for c in np.unique(self.labels[train])}
        self._train = train

    def extra_items(self, epoch: int, position: int, source: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, position, 11])
        out = np.empty(len(source), dtype=np.int64)
        for i, j in enumerate(np.asarray(source, dtype=np.int64)):
            c = int(self.labels[j])
            same = self._by_class[c]
            same = same[same != j] if len(same) > 1 else same
            other = self._train[self.labels[self._train] != c]
            positive = rng.random() < 0.5
            pool = same if (positive or not len(other)) else other
            out[i] = pool[rng.integers(len(pool))]
        return out

    def loss(self, batch: TermBatch, progress: float) -> torch.Tensor:
        u, v = batch.source_features.float(), batch.features.float()
        same = torch.as_tensor(self.labels[batch.source_index] == self.labels[batch.index], dtype=torch.float32,
                               device=u.device)
        cos = nn.functional.cosine_similarity(u, v, dim=1, eps=1e-8)
        return ((cos - same) ** 2).sum()

    def record(self) -> dict:
        return {"kind": "cosine pairs (SetFit)", "seed": self.seed, "train_items": int(len(self._train))}


@torch.inference_mode()
def head_features(model: Any, data: Dataset, idx: np.ndarray, collate: Callable, device: torch.device,
                  autocast: Callable[[], Any] | None = None, batch_size: int = 64) -> np.ndarray:
    """The standardised features the head reads, for the items at `idx` (in order), float64."""
    from transferkit.finetune.loop import predict_outputs  # the loop imports this module

    return predict_outputs(model, data, collate, indices=np.asarray(idx), batch_size=batch_size, device=device,
                           autocast=autocast, with_features=True).astype(np.float64)


def fit_head(model: Any, data: Dataset, labels: np.ndarray, train_idx: np.ndarray, collate: Callable,
             device: torch.device, autocast: Callable[[], Any] | None = None, seed: int = 0) -> None:
    """Fit a logistic regression on the training items' features and write it into `model.head` (classes absent
    from training get a bias that never wins). Every process computes the same head from the same weights."""
    from sklearn.linear_model import LogisticRegression

    z = head_features(model, data, np.asarray(train_idx), collate, device, autocast)
    y = np.asarray(labels, dtype=np.int64)[np.asarray(train_idx)]
    k, d = model.head.out_features, z.shape[1]
    w, b = np.zeros((k, d)), np.full(k, -30.0)
    present = np.unique(y)
    if len(present) == 1:
        b[present[0]] = 0.0
    else:
        clf = LogisticRegression(C=HEAD_C, max_iter=2000, random_state=seed).fit(z, y)
        if len(present) == 2:  # one coefficient row: split it symmetrically over the two logits
            w[present[0]], w[present[1]] = -clf.coef_[0] / 2, clf.coef_[0] / 2
            b[present[0]], b[present[1]] = -clf.intercept_[0] / 2, clf.intercept_[0] / 2
        else:
            w[present], b[present] = clf.coef_, clf.intercept_
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(w, dtype=model.head.weight.dtype))
        model.head.bias.copy_(torch.as_tensor(b, dtype=model.head.bias.dtype))
