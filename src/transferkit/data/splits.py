"""Train/validation/test splits: stratified for classes, plain random for real-valued targets; seeded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transferkit.data.dataset import Dataset
from transferkit.errors import DataError


@dataclass(frozen=True)
class Split:
    """Integer index arrays (sorted, disjoint, covering every item) for the three parts."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        """How many items each part holds."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def apply(self, data: Dataset) -> tuple[Dataset, Dataset | None, Dataset | None]:
        """The three parts of `data` as Datasets; None for a part that was not asked for (val=0 or test=0)."""
        train = data.subset(self.train, f"{data.name}-train")
        val = data.subset(self.val, f"{data.name}-val") if len(self.val) else None
        test = data.subset(self.test, f"{data.name}-test") if len(self.test) else None
        return train, val, test


def _round(x: float) -> int:
    return int(np.floor(x + 0.5))


def _check_fractions(val: float, test: float) -> None:
    for name, f in (("val", val), ("test", test)):
        if not 0 <= f < 1:
            raise DataError(f"{name}={f} is not a fraction in [0, 1): give e.g. {name}=0.15")
    if val + test >= 1:
        raise DataError(f"val={val} and test={test} leave nothing to train on: make val + test < 1")


def _is_classes(labels: np.ndarray) -> bool:
    return labels.dtype.kind in "iubUSO"


def stratified_split(
    labels: Sequence[Any] | np.ndarray | Dataset,
    *,
    val: float = 0.15,
    test: float = 0.15,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> Split:
    """Split item indices into train/val/test with the given fractions, deterministic for a seed.

    Class labels (ints, strings, bools) are split per class, so each part holds every class in proportion
    (within one item) and at least one item of it; float labels are split at random. A Dataset may be passed
    in place of its labels. `class_names` only names the classes in error messages.
    """
    if isinstance(labels, Dataset):
        data = labels
        if data.labels is None:
            raise DataError(f"data set {data.name!r} has no labels: a labelled split needs labels")
        class_names = class_names or data.class_names
        labels = data.labels
        stratify = data.task == "classification"
    else:
        labels = np.asarray(labels)
        stratify = _is_classes(labels)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"labels have shape {labels.shape}: give one label per item (a 1-D array)")
    _check_fractions(val, test)
    rng = np.random.default_rng(seed)
    n = len(labels)
    need = 1 + (val > 0) + (test > 0)
    parts = ["train"] + (["val"] if val > 0 else []) + (["test"] if test > 0 else [])
    fix = "add items, or ask for fewer parts (val=0 or test=0)"
    if not stratify:
        if n < need:
            raise DataError(f"{n} items cannot fill {need} parts ({'/'.join(parts)}): {fix}")
        perm = rng.permutation(n)
        n_val, n_test = _part_sizes(n, val, test)
        return Split(*(np.sort(a).astype(np.int64) for a in _cut(perm, n_val, n_test)))

    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)

    def cname(k: int) -> str:
        c = classes[k]
        if class_names is not None and isinstance(c, int | np.integer) and 0 <= int(c) < len(class_names):
            return repr(str(class_names[int(c)]))
        return repr(c.item() if isinstance(c, np.generic) else c)

    if len(classes) < 2:
        raise DataError(f"all {n} items have one class ({cname(0)}): classification needs at least two classes")
    small = [k for k in range(len(classes)) if counts[k] < need]
    if small:
        k = small[0]
        raise DataError(
            f"class {cname(k)} has {counts[k]} item(s) but a {'/'.join(parts)} split needs at least {need} per class: "
            f"{fix}"
        )
    train, val_idx, test_idx = [], [], []
    for k in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(inverse == k))
        a, b, c = _cut(idx, *_part_sizes(len(idx), val, test))
        train.append(a)
        val_idx.append(b)
        test_idx.append(c)
    return Split(*(np.sort(np.concatenate(p)).astype(np.int64) for p in (train, val_idx, test_idx)))


def _part_sizes(m: int, val: float, test: float) -> tuple[int, int]:
    """(n_val, n_test) for m items: rounded fractions, at least one each when asked for, at least one to train."""
    n_val = max(_round(m * val), 1) if val > 0 else 0
    n_test = max(_round(m * test), 1) if test > 0 else 0
    while m - n_val - n_test < 1:
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def _cut(idx: np.ndarray, n_val: int, n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) from a shuffled index array: test first, then val, the rest trains."""
    return idx[n_test + n_val :], idx[n_test : n_test + n_val], idx[:n_test]


def stratified_sample(labels: np.ndarray, n: int, *, seed: int = 0, classes: bool = True) -> np.ndarray:
    """Sorted indices of `n` items, each class in proportion (largest remainder, at least one each); seeded."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    if n >= len(labels):
        return np.arange(len(labels))
    if not classes:
        return np.sort(rng.choice(len(labels), n, replace=False))
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if n < len(values):
        raise DataError(f"sample={n} is smaller than the {len(values)} classes: sample at least {len(values)} items")
    quota = counts * (n / len(labels))
    take = np.maximum(np.floor(quota).astype(int), 1)
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    i = 0
    while take.sum() < n:  # hand out the remaining items by largest remainder
        k = order[i % len(order)]
        if take[k] < counts[k]:
            take[k] += 1
        i += 1
    while take.sum() > n:  # the at-least-one rule overshot: trim the largest classes
        take[np.argmax(take)] -= 1
    picked = [rng.choice(np.flatnonzero(inverse == k), take[k], replace=False) for k in range(len(values))]
    return np.sort(np.concatenate(picked))
