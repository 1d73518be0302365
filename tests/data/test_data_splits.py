"""Splits: disjoint, covering, stratified within one item per class, deterministic per seed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferkit.data import Split, from_arrays, stratified_split
from transferkit.errors import DataError

FRACTIONS = st.sampled_from([0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.45])


@st.composite
def class_labels(draw: st.DrawFn) -> np.ndarray:
    counts = draw(st.lists(st.integers(3, 40), min_size=2, max_size=6))
    labels = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    perm = draw(st.permutations(range(len(labels))))
    return labels[np.asarray(perm)]


def _check_partition(split: Split, n: int) -> None:
    allidx = np.concatenate([split.train, split.val, split.test])
    assert len(allidx) == n and len(np.unique(allidx)) == n  # disjoint and covering
    assert set(allidx.tolist()) == set(range(n))
    for part in (split.train, split.val, split.test):
        assert part.dtype == np.int64


@settings(max_examples=60, deadline=None)
@given(labels=class_labels(), val=FRACTIONS, test=FRACTIONS, seed=st.integers(0, 2**31))
def test_stratified_split_properties(labels: np.ndarray, val: float, test: float, seed: int) -> None:
    if val + test >= 1:
        return
    split = stratified_split(labels, val=val, test=test, seed=seed)
    _check_partition(split, len(labels))
    for k in np.unique(labels):
        n_k = int((labels == k).sum())
        parts = ((split.train, 1 - val - test), (split.val, val), (split.test, test))
        # A class too small to give each part its share gets one item per part asked for instead.
        roomy = all(n_k * f >= 0.5 for _, f in parts if f > 0) and n_k * (1 - val - test) >= 1.5
        for part, frac in parts:
            got = int((labels[part] == k).sum())
            if roomy:
                assert abs(got - n_k * frac) <= 1 + 1e-9, (k, n_k, frac, got)  # float fractions
            if frac > 0:
                assert got >= 1  # every class in every part asked for
            else:
                assert got == 0
    again = stratified_split(labels, val=val, test=test, seed=seed)
    for a, b in zip((split.train, split.val, split.test), (again.train, again.val, again.test)):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 300), val=FRACTIONS, test=FRACTIONS, seed=st.integers(0, 2**31))
def test_random_split_for_float_labels(n: int, val: float, test: float, seed: int) -> None:
    if val + test >= 1:
        return
    labels = np.random.default_rng(0).normal(size=n)
    split = stratified_split(labels, val=val, test=test, seed=seed)
    _check_partition(split, n)
    assert abs(len(split.test) - n * test) <= 1 and abs(len(split.val) - n * val) <= 1
    assert len(split.train) >= 1
    assert np.array_equal(stratified_split(labels, val=val, test=test, seed=seed).test, split.test)


def test_seed_changes_the_split_and_strings_work() -> None:
    labels = np.array(["cat", "dog"] * 50)
    a = stratified_split(labels, seed=0)
    b = stratified_split(labels, seed=1)
    assert not np.array_equal(a.test, b.test)
    assert a.sizes() == {"train": 68, "val": 16, "test": 16}  # 50 per class: round(7.5) = 8 each
    assert (labels[a.test] == "cat").sum() == (labels[a.test] == "dog").sum()


def test_split_of_a_dataset_and_apply() -> None:
    ds = from_arrays([f"t{i}" for i in range(40)], ["a", "b"] * 20)
    split = stratified_split(ds, val=0.25, test=0.25)
    train, val, test = split.apply(ds)
    assert (len(train), len(val), len(test)) == (20, 10, 10)
    assert train.class_names == ("a", "b") and train.name.endswith("-train")
    _, val0, test0 = stratified_split(ds, val=0, test=0.5).apply(ds)
    assert val0 is None and len(test0) == 20


def test_split_errors_name_the_class_and_the_fix() -> None:
    with pytest.raises(DataError, match=r"class 'rare' has 2 item\(s\).*at least 3 per class.*val=0 or test=0"):
        stratified_split(["common"] * 10 + ["rare"] * 2)
    # two parts need only two per class
    split = stratified_split(["common"] * 10 + ["rare"] * 2, val=0)
    assert len(split.val) == 0 and len(split.test) == 3  # round(1.5) = 2 common + 1 rare
    ds = from_arrays(["a", "b", "c", "d"], [0, 0, 0, 1], class_names=["neg", "pos"])
    with pytest.raises(DataError, match="class 'pos' has 1 item"):
        stratified_split(ds)
    with pytest.raises(DataError, match="one class"):
        stratified_split([1] * 10)
    with pytest.raises(DataError, match="nothing to train"):
        stratified_split([0, 1] * 10, val=0.5, test=0.5)
    with pytest.raises(DataError, match=r"val=-0\.1"):
        stratified_split([0, 1] * 10, val=-0.1)
    with pytest.raises(DataError, match="no labels"):
        stratified_split(from_arrays(["a", "b"]))
    with pytest.raises(DataError, match="2 items cannot fill 3 parts"):
        stratified_split([0.5, 1.5])
