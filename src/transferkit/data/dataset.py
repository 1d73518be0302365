"""The `Dataset` record every stage passes around: items, labels, class names and a content fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from transferkit.errors import DataError

Modality = Literal["image", "text"]


@dataclass(frozen=True)
class Dataset:
    """A labelled (or unlabelled) collection of raw items.

    items: image file paths, numpy images (H×W or H×W×C, uint8 or float in [0, 1]), PIL images, or strings.
    labels: integer class ids (classification) or floats (regression); None when unlabelled.
    class_names: names of the class ids, index = id; empty for regression / unlabelled data.
    fingerprint: hash of the content (items and labels), stable across runs and machines.
    """

    items: Sequence[Any]
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    modality: Modality
    name: str = "data"
    fingerprint: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.items) == 0:
            raise DataError(f"data set {self.name!r} is empty: give it at least one item")
        if self.labels is not None and len(self.labels) != len(self.items):
            raise DataError(
                f"data set {self.name!r} has {len(self.items)} items but {len(self.labels)} labels: "
                "give one label per item"
            )
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.items, self.labels, self.class_names))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def task(self) -> Literal["classification", "regression", "unlabelled"]:
        """What the labels ask for: class ids, real values, or nothing."""
        if self.labels is None:
            return "unlabelled"
        return "classification" if self.class_names else "regression"

    def in_memory(self) -> Dataset:
        """This data set with its items in a list, read once in order, when they are read lazily (a streamed table,
        `datasets` folder or WebDataset shards): for work that reads them in shuffled order many times, such as
        training. The same fingerprint, labels and meta; `self` when the items are already in memory."""
        if not hasattr(self.items, "take") or isinstance(self.items, list):
            return self
        return Dataset(list(self.items), self.labels, self.class_names, self.modality, self.name,
                       fingerprint=self.fingerprint, meta=self.meta)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Dataset:
        """The items at `indices`, as a new Dataset with its own fingerprint (per-item meta arrays follow)."""
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self.items, np.ndarray):
            items = self.items[idx]
        elif hasattr(self.items, "take"):  # a lazy sequence (a streamed table) reads them in one ordered pass
            items = self.items.take(idx)
        else:
            items = [self.items[i] for i in idx]
        labels = None if self.labels is None else np.asarray(self.labels)[idx]
        meta = {}
        for k, v in self.meta.items():
            if k != "skipped" and isinstance(v, (list, range, np.ndarray)) and len(v) == len(self.items):
                v = np.asarray(v)[idx]
            meta[k] = v
        return Dataset(items, labels, self.class_names, self.modality, name or self.name, meta=meta)


def _item_bytes(item: Any) -> bytes:
    """Bytes that identify one item's content: file bytes for paths, raw buffer for arrays, UTF-8 for text, encoded
    bytes as they are."""
    if isinstance(item, str):
        return b"s" + item.encode("utf-8", "surrogatepass")
    if isinstance(item, bytes):  # an encoded image as stored (a streamed source's content, hashed undecoded)
        return b"b" + item
    if isinstance(item, Path):
        return b"f" + item.read_bytes()
    if isinstance(item, np.ndarray):
        arr = np.ascontiguousarray(item)
        return b"a" + str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes()
    if hasattr(item, "tobytes") and hasattr(item, "mode") and hasattr(item, "size"):  # PIL image
        return b"p" + item.mode.encode() + str(item.size).encode() + item.tobytes()
    raise DataError(f"cannot fingerprint an item of type {type(item).__name__}: "
                    "use paths, arrays, PIL images or strings")


class ContentHash:
    """The fingerprint computed incrementally: items in order (in any number of calls), then labels and class
    names once. `fingerprint()` is this in one call; streamed loaders feed it chunk by chunk."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add_items(self, items: Sequence[Any]) -> None:
        """Hash the next items (files by content)."""
        if isinstance(items, np.ndarray) and items.dtype != object:
            arr = np.ascontiguousarray(items)
            self._h.update(str(arr.dtype).encode() + str(arr.shape).encode())
            self._h.update(arr.tobytes())
            return
        for item in items:
            b = _item_bytes(item)
            self._h.update(len(b).to_bytes(8, "little"))
            self._h.update(b)

    def add_file(self, data: bytes) -> None:
        """Hash the next item, a file, from the bytes already read (what `add_items([path])` reads and hashes)."""
        self._h.update((len(data) + 1).to_bytes(8, "little"))
        self._h.update(b"f")
        self._h.update(data)

    def finish(self, labels: np.ndarray | None, class_names: Sequence[str] = ()) -> str:
        """The fingerprint of every item added, with these labels and class names."""
        if labels is not None:
            lab = np.asarray(labels)
            self._h.update(b"labels" + str(lab.dtype).encode())
            self._h.update(np.ascontiguousarray(lab).tobytes())
        self._h.update("\x00".join(class_names).encode("utf-8"))
        return self._h.hexdigest()[:32]


def fingerprint(items: Sequence[Any], labels: np.ndarray | None, class_names: Sequence[str] = ()) -> str:
    """A sha256 over every item's content, the labels and class names, in order (files hashed by content)."""
    h = ContentHash()
    h.add_items(items)
    return h.finish(labels, class_names)
