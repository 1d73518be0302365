"""The fine-tuning loop's one extension point: extra loss terms.

A `LossTerm` adds a loss to the loop's supervised one without the loop knowing what it is: domain adaptation
(`transferkit.adapt.end_to_end`), consistency or distillation are each one subclass in their own file.
A term can bring

- its own parameters (a discriminator, a projection): they train with the head's learning rate, are wrapped for
  data-parallel training like the model, and are saved in the resume state under the term's `name`;
- extra items per global batch (unlabelled target items, or the partners of contrastive pairs): `extra_items`
  names them by index into `self.items`, knowing which source items the batch holds; the loop cuts them across
  processes and micro-batches exactly as it cuts the source batch and runs them through the network behind the
  source items (the term sees both items' indices again in its `TermBatch`);
- a record for run.json (`record()`): a resumed run must bring a term whose `mismatch` with it is None.

`loss(batch, progress)` returns the term on the loop's scale: a sum over the micro-batch's source items (the
loop divides everything by the global batch size). A term that is not a sum over items (MMD compares whole
batches) calls `batch.gather` on its rows: under data parallelism it returns every process's rows of the same
micro-batch in rank order, with gradients flowing back to each process's own rows, so the term is computed on
the whole micro-batch as in one process; it then returns its share, the whole-batch value / `batch.processes`.
Outside data parallelism (and on a tiny last batch that does not reach every process) it returns its input and
`processes` is 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from transferkit.data.dataset import Dataset
from transferkit.finetune.config import FinetuneError

#: names of the model's own tensors: a term's name must not clash with them in the resume files
RESERVED = ("backbone", "head", "feature_mean", "feature_scale")


@dataclass
class TermBatch:
    """What a term sees of one micro-batch: outputs and features (standardised, as the head reads them) of the
    source items, and of this term's extra items (empty when it brings none); `source_index` and `index` are the
    items' indices into the training data and into the term's `items`."""

    source_outputs: torch.Tensor
    source_features: torch.Tensor
    outputs: torch.Tensor
    features: torch.Tensor
    source_index: np.ndarray | None = None
    index: np.ndarray | None = None
    gather: Callable[[torch.Tensor], torch.Tensor] = lambda rows: rows
    processes: int = 1


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """`rows` of every data-parallel process, concatenated in rank order (processes may hold different numbers
    of rows), differentiable: the gradient of the result reaches each process's own rows. Every process of the
    group must call it; outside a process group it returns `rows`."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    from torch.distributed.nn.functional import all_gather

    world = dist.get_world_size()
    n = torch.tensor([rows.shape[0]], dtype=torch.long, device=rows.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(x) for x in sizes]
    pad = max(sizes) - rows.shape[0]
    padded = torch.cat([rows, rows.new_zeros((pad, *rows.shape[1:]))]) if pad else rows
    return torch.cat([part[:k] for part, k in zip(all_gather(padded), sizes)])


class LossTerm(nn.Module):
    """An extra loss for `finetune(..., terms=[...])`; subclass it and implement `loss` (and `extra_items`)."""

    #: key in run.json["terms"] and prefix of the term's tensors in the resume state
    name: str = "term"
    #: items the term draws extra batches from (None: it brings no items)
    items: Dataset | None = None

    def extra_items(self, epoch: int, position: int, source: np.ndarray) -> np.ndarray | None:
        """As many indices into `items` as global batch `position` of `epoch` has source items (`source`: their
        indices into the training data), one per source item and in its order, or None for none; a pure function
        of its arguments (and the term's seed), so a resumed run draws the same ones."""
        return None

    def loss(self, batch: TermBatch, progress: float) -> torch.Tensor:
        """The term for one micro-batch, summed over its source items; `progress` is the share of steps done."""
        raise NotImplementedError

    def record(self) -> dict:
        """JSON-able facts about the term (kind, weights, its data's fingerprint) for run.json."""
        return {}

    def mismatch(self, prior: dict) -> str | None:
        """Why a run folder's run.json (`prior`) was not started with this term, or None when it was (resume
        refuses a mismatch, naming it)."""
        old, new = (prior.get("terms") or {}).get(self.name), self.record()
        if old is None:
            return f"the run started without the {self.name} loss term"
        changed = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
        return f"the {self.name} loss term's {', '.join(changed)} changed" if changed else None

    def forward(self, batch: TermBatch | None, progress: float = 0.0) -> torch.Tensor:
        """`loss`; with `batch=None`, a zero that touches every parameter (a process with no items of a tiny last
        batch must still join the data-parallel gradient all-reduce)."""
        if batch is None:
            zero = torch.zeros(())
            for p in self.parameters():
                zero = zero.to(p.device) + p.sum() * 0.0
            return zero
        return self.loss(batch, progress)


def check_terms(terms: list[LossTerm]) -> None:
    """Refuse terms whose names are missing, repeated or clash with the model's own tensors."""
    for t in terms:
        if not isinstance(t, LossTerm):
            raise FinetuneError(f"terms must be LossTerm instances, got {type(t).__name__}")
    names = [t.name for t in terms]
    for t in terms:
        if not t.name or t.name in RESERVED or "." in t.name:
            raise FinetuneError(f"a loss term is named {t.name!r}: give it a name without dots that is not one of "
                                f"{', '.join(RESERVED)}")
    if len(set(names)) != len(names):
        raise FinetuneError(f"loss terms {names} repeat a name: give each term its own name")
