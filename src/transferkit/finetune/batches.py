"""Which items go into which batch: a pure function of (seed, epoch), cut the same way however many processes run.

One global batch of `batch_size` items is cut into equal slices per process (so 1 process and
`accelerate launch --num_processes N` see the same global batch) and each slice into `grad_accum`
micro-batches. The data order of epoch e is a permutation drawn from (seed, e), so a resumed run skips
exactly the batches already done. Extra items a loss term brings are cut the same way and collated behind
the source items of their micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from transferkit.data.dataset import Dataset
from transferkit.errors import DataError


@dataclass
class Targets:
    """Training targets: class ids (classification) or standardised values (regression)."""

    task: str
    y: np.ndarray
    class_names: tuple[str, ...]
    mean: float = 0.0
    std: float = 1.0

    @property
    def n_outputs(self) -> int:
        return len(self.class_names) if self.task == "classification" else 1

    def tensor(self, idx: Sequence[int]) -> torch.Tensor:
        v = self.y[np.asarray(idx, dtype=np.int64)]
        if self.task == "classification":
            return torch.as_tensor(v, dtype=torch.long)
        return torch.as_tensor((v - self.mean) / self.std, dtype=torch.float32)


def make_targets(data: Dataset) -> Targets:
    """Check the labels and encode them for training."""
    if data.labels is None:
        raise DataError(f"data set {data.name!r} has no labels: fine-tuning needs a label per item")
    if data.task == "classification":
        y = np.asarray(data.labels, dtype=np.int64)
        present = np.unique(y)
        if len(present) < 2:
            raise DataError(f"data set {data.name!r} has only one class ({data.class_names[present[0]]!r}): "
                            "a classifier needs at least two")
        return Targets("classification", y, tuple(data.class_names))
    y = np.asarray(data.labels, dtype=np.float64)
    if not np.isfinite(y).all():
        raise DataError(f"data set {data.name!r} has NaN or infinite targets: clean them before fine-tuning")
    return Targets("regression", y, (), float(y.mean()), float(y.std() or 1.0))


class Batches(torch.utils.data.Dataset):
    """Index micro-batches → (collated inputs, targets, number of source items); a DataLoader over it collates in
    worker processes. `extras` pairs each micro-batch with extra items of other data sets (a loss term's), which
    are collated behind the source items."""

    def __init__(self, data: Dataset, batches: list[list[int]], collate: Callable, targets: Targets | None,
                 extras: Sequence[tuple[Dataset, list[list[int]]]] = (), augment: Callable | None = None,
                 epoch: int = 0) -> None:
        self.data, self.batches, self.collate, self.targets, self.extras = data, batches, collate, targets, extras
        self.augment, self.epoch = augment, epoch  # augment(item, epoch, index) for the source items

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[dict, torch.Tensor | None, int]:
        idx = self.batches[i]
        items = [self.data.items[j] if self.augment is None else self.augment(self.data.items[j], self.epoch, j)
                 for j in idx]
        for other, other_batches in self.extras:
            items += [other.items[j] for j in other_batches[i]]
        return self.collate(items), (self.targets.tensor(idx) if self.targets else None), len(idx)


def loader(batches: Batches, num_workers: int) -> Iterator[tuple[dict, torch.Tensor | None, int]]:
    """Iterate over `batches` in order, collating in `num_workers` spawned processes (0: in this process)."""
    if num_workers <= 0 or len(batches) < 2:
        return (batches[i] for i in range(len(batches)))
    dl = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False, num_workers=num_workers,
                                     generator=torch.Generator().manual_seed(0), persistent_workers=False,
                                     multiprocessing_context="spawn")
    return iter(dl)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of training items in `epoch` (a pure function of seed and epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def global_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    order = epoch_order(n, seed, epoch)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def local_micro_batches(batch: np.ndarray, rank: int, world: int, grad_accum: int) -> list[list[int]]:
    """This process's micro-batches of one global batch: equal contiguous slices, then `grad_accum` parts."""
    mine = np.array_split(batch, world)[rank]
    return [m.tolist() for m in np.array_split(mine, grad_accum) if len(m)]
