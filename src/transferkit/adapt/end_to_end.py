"""End-to-end domain adaptation through the fine-tuning loop: DANN, CDAN and MMD train the backbone too.

`finetune(..., target=unlabelled)` with `FinetuneConfig(domain_loss=...)` draws, for every source batch, a
target batch of the same size (order a pure function of (seed, epoch), so resume stays exact), encodes both in
one forward pass of the same network and adds `domain_tradeoff` × one of:

- dann (Ganin et al. 2016): a domain discriminator behind gradient reversal, coefficient 2/(1+exp(-10p))-1;
- cdan (Long et al. 2018): the discriminator reads the multilinear map features ⊗ predictions (the randomized map
  of the paper, 1024 dims, above `RANDOMIZED_ABOVE` dimensions);
- mmd (DAN, Long et al. 2015): multi-kernel MMD between source and target features of each micro-batch.

The features are the standardised backbone features the head reads. The discriminator (same architecture as the
feature-level adapters') is trained with the run and saved in its resume state, but the written model is
backbone + head only, so `transferkit predict` reads the folder like any fine-tuning run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferkit.adapt import losses as L
from transferkit.adapt.adapters import RANDOMIZED_ABOVE, _discriminator
from transferkit.data.dataset import Dataset
from transferkit.errors import AdaptError

#: CLI method name → FinetuneConfig.domain_loss
END_TO_END = {"dann-e2e": "dann", "cdan-e2e": "cdan", "mmd-e2e": "mmd"}


class DomainTerm(nn.Module):
    """The domain loss of one micro-batch whose first `m` rows are source items and the last `m` target items.

    forward returns the term on a "sum over m source items" scale (BCE summed over both domains / 2, or MMD × m),
    so the loop scales it like its summed classification loss. Initialised from `seed` alone.
    """

    def __init__(self, method: str, feature_dim: int, n_classes: int, seed: int) -> None:
        super().__init__()
        self.method = method
        self.rmap: L.RandomizedMultilinearMap | None = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if method == "cdan":
                dim = feature_dim * n_classes
                if dim > RANDOMIZED_ABOVE:
                    self.rmap = L.RandomizedMultilinearMap(feature_dim, n_classes, 1024,
                                                           generator=torch.Generator().manual_seed(seed))
                    dim = 1024
            else:
                dim = feature_dim
            self.disc = _discriminator(dim) if method in ("dann", "cdan") else None
        self.in_dim = dim

    def forward(self, features: torch.Tensor | None, logits: torch.Tensor | None, m: int,
                coeff: float) -> torch.Tensor:
        if features is None:  # a process with no items must still join DDP's all-reduce: a zero touching every weight
            w = next(self.disc.parameters())
            return self.disc(torch.zeros(1, self.in_dim, device=w.device)).sum() * 0.0
        f = features.float()
        if self.method == "mmd":
            return L.multi_kernel_mmd(f[:m], f[m:]) * m
        if self.method == "cdan":
            probs = torch.softmax(logits.float(), 1).detach()
            f = self.rmap(f, probs) if self.rmap is not None else L.multilinear_map(f, probs)
        d = self.disc(L.grad_reverse(f, coeff))
        is_src = torch.cat([torch.ones(m), torch.zeros(len(f) - m)]).to(d.device)
        return L.domain_adversarial_loss(d, is_src) * len(f) / 2.0


def check_target(target: Dataset, modality: str, task: str) -> None:
    """Refuse a target domain the loop cannot adapt to, with the fix."""
    if len(target) == 0:
        raise AdaptError(f"the target data set {target.name!r} is empty: give unlabelled target items")
    if target.modality != modality:
        raise AdaptError(f"the backbone reads {modality} items but the target {target.name!r} holds "
                         f"{target.modality} items: give target data of the source's kind")
    if task != "classification":
        raise AdaptError("end-to-end domain adaptation (dann/cdan/mmd) adapts classifiers; the source is a "
                         "regression task")


def target_batch(n_target: int, size: int, batch_size: int, seed: int, epoch: int, position: int) -> np.ndarray:
    """Target item indices paired with source batch `position` of `epoch` (cycling a per-epoch permutation)."""
    order = np.random.default_rng([seed, 3, epoch]).permutation(n_target)
    return order[(position * batch_size + np.arange(size)) % n_target]


def adapt_end_to_end(method: str, backbone, source: Dataset, target: Dataset, out: str | Path,  # noqa: ANN001
                     config=None, *, target_labels: np.ndarray | None = None,  # noqa: ANN001
                     backbone_options: dict | None = None, resume: bool = False, progress: bool = True,
                     log: Callable[[str], None] = lambda m: None, stop_after_steps: int | None = None):  # noqa: ANN201
    """Fine-tune `backbone` on labelled `source` with `method`'s domain loss on unlabelled `target` into `out`.

    target_labels (class ids in the source's class order) are used after training, to score the written model
    on the target, and nothing else. Returns the FinetuneResult; run.json gains an "adaptation" record.
    """
    from transferkit.finetune import FinetuneConfig, finetune
    from transferkit.finetune.checkpoint import RunFolder
    from transferkit.finetune.run import load_run

    if method not in END_TO_END:
        raise AdaptError(f"unknown end-to-end method {method!r}: use one of {', '.join(END_TO_END)}")
    config = replace(config or FinetuneConfig(), domain_loss=END_TO_END[method])
    config.validate()
    res = finetune(backbone, source, out, config, target=target, backbone_options=backbone_options, resume=resume,
                   progress=progress, log=log, stop_after_steps=stop_after_steps)
    if target_labels is not None and int(os.environ.get("RANK", "0")) == 0:  # under DDP the main process scores
        folder = RunFolder(out)
        info = folder.read()
        acc = float((load_run(out).predict(target) == np.asarray(target_labels)).mean())
        info["adaptation"] = {**info.get("adaptation", {}), "metrics": {"target_accuracy": acc}}
        folder.write(info)
        res.info = info
    return res


__all__ = ["END_TO_END", "DomainTerm", "adapt_end_to_end", "check_target", "target_batch"]
