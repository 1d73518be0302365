"""Large-corpus formats read as streams: Hugging Face `datasets` folders and WebDataset tar shards.

Both are read chunk by chunk like a large table (`data.stream`): one pass checks every item (an image's header is
read, not its pixels), encodes the labels and fingerprints the content (text, or an image's encoded bytes), and the
items are read again in order when they are used. An image item is its encoded bytes, decoded by the model's
preprocessing each time it is used, so no decoded pixels are held; image chunks are `IMAGE_CHUNK_ROWS` items.
Neither format needs its own library: a `save_to_disk` folder is Arrow IPC stream files described by JSON
(`state.json`, `dataset_info.json`), read with pyarrow; WebDataset shards are tar files whose members `KEY.EXT` make
up one sample per key, read with the standard library.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data import stream
from transferkit.data.dataset import Dataset
from transferkit.data.loaders import AUTO, IMAGE_EXTENSIONS, LabelCodes, OnBadInput, Task, _bad_input, _is_missing
from transferkit.data.stream import Chunk, row_ids, scan
from transferkit.errors import DataError

# ------------------------------------------------------------------------------------------------- shared


def _image_header(data: bytes) -> str | None:
    """None when `data` opens as an image (header only), else why not."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.size  # noqa: B018
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f"cannot be read as an image ({e.__class__.__name__})"
    return None


#: items per chunk of an image source (encoded images: about 25 MB at 100 KB each)
IMAGE_CHUNK_ROWS = 256


class _Source:
    """What `stream.scan` and `StreamedItems` need of a source: chunks of (item cells, label cells), which cells to
    keep, the item a cell gives and what the fingerprint hashes of it."""

    path: Path
    modality: str
    what: str = "item"  # how messages name one item

    def chunks(self) -> Iterator[Chunk]:  # pragma: no cover - each source has its own
        raise NotImplementedError

    def chunk_rows(self) -> int:
        """Items per chunk: the stream's for text, fewer for images."""
        return min(stream.CHUNK_ROWS, IMAGE_CHUNK_ROWS) if self.modality == "image" else stream.CHUNK_ROWS

    def problem(self, cell: Any) -> str | None:
        """Why this cell is bad input (None when it is fine)."""
        if cell is None:
            return "has no " + ("image" if self.modality == "image" else "text")
        if self.modality == "image":
            return _image_header(cell)
        return None if str(cell).strip() else "has empty text"

    def kept(self, chunk: Chunk, offset: int, on_bad_input: OnBadInput = "skip",
             skipped: list[dict] | None = None) -> list[int]:
        cells, labels = chunk
        keep = []
        for j, cell in enumerate(cells):
            why = self.problem(cell)
            if why is None and labels is not None and _is_missing(labels[j]):
                why = "has no label"
            if why is None:
                keep.append(j)
            else:
                _bad_input(f"{self.path} {self.what} {offset + j + 1}", f"{why}: fix it or drop it", on_bad_input,
                           [] if skipped is None else skipped, offset + j + 1)
        return keep

    def item(self, cell: Any) -> Any:
        return bytes(cell) if self.modality == "image" else str(cell)

    def content(self, cell: Any) -> Any:
        return bytes(cell) if self.modality == "image" else str(cell)


def _dataset(source: _Source, labels: Any, *, task: Task, name: str | None, on_bad_input: OnBadInput,
             meta: dict) -> Dataset:
    """The Dataset of one scan of `source`; `labels`: a LabelCodes-like sink (or None)."""
    found = scan(source, on_bad_input, labels)
    if found.offsets[-1] == 0:
        raise DataError(f"{source.path} holds no {source.what}s: check the path")
    if found.starts[-1] == 0:
        raise DataError(f"{source.path}: every {source.what} was skipped as bad input (first: "
                        f"{found.skipped[0]['reason']}): fix the data")
    ids = row_ids(found.starts[-1], [int(s["id"]) for s in found.skipped])
    y, class_names = (None, ()) if labels is None else labels.encode(
        task=task, where=lambda i: f"{source.path} {source.what} {ids[i]}")
    return Dataset(found.items(source), y, class_names, source.modality, name or source.path.name or "data",
                   fingerprint=found.content.finish(y, class_names),
                   meta={**meta, "path": str(source.path), "skipped": found.skipped, "ids": ids})


# ------------------------------------------------------------------------------------ Hugging Face datasets


def is_hf_folder(path: Path) -> bool:
    """A folder written by `datasets.Dataset.save_to_disk` (or `DatasetDict.save_to_disk`)."""
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


class ClassLabelCodes:
    """Labels of a `ClassLabel` column: the ids as stored, the names as declared (-1, "no label", is bad input)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(str(n) for n in names)
        self._ids: list[np.ndarray] = []

    def add(self, cells: Sequence[Any]) -> None:
        self._ids.append(np.asarray(cells, dtype=np.int64))

    def encode(self, *, where: Any, **_: Any) -> tuple[np.ndarray, tuple[str, ...]]:
        """(ids, names); `task` does not apply: a ClassLabel column is classes."""
        ids = np.concatenate(self._ids) if self._ids else np.empty(0, np.int64)
        bad = np.flatnonzero((ids < 0) | (ids >= len(self.names)))
        if bad.size:
            raise DataError(f"{where(int(bad[0]))} has label id {int(ids[bad[0]])}, not one of the "
                            f"{len(self.names)} declared classes: fix the label or drop that row")
        return ids, self.names


class _HFFolder(_Source):
    what = "row"

    def __init__(self, path: Path, item_column: str, label_column: str | None, modality: str,
                 class_label: bool) -> None:
        self.path, self.item_column, self.label_column, self.modality = path, item_column, label_column, modality
        self.class_label = class_label
        state = json.loads((path / "state.json").read_text())
        self.files = [path / f["filename"] for f in state.get("_data_files", [])]
        for f in self.files:
            if not f.is_file() or f.resolve().parent != path.resolve():
                raise DataError(f"{path}/state.json names {f.name}, which is not a file of the folder: save the "
                                "data set again")

    def chunks(self) -> Iterator[Chunk]:
        import pyarrow as pa

        for file in self.files:
            try:
                # read, not memory-mapped: a mapped file's pages would stay in this process's RSS as it is read
                with pa.OSFile(str(file)) as source, pa.ipc.open_stream(source) as batches:
                    for batch in batches:
                        for lo in range(0, batch.num_rows, self.chunk_rows()):
                            part = batch.slice(lo, self.chunk_rows())
                            cells = part.column(self.item_column).to_pylist()
                            if self.modality == "image":
                                cells = [self._image_bytes(c) for c in cells]
                            labels = (part.column(self.label_column).to_pylist() if self.label_column is not None
                                      else None)
                            if labels is not None and self.class_label:  # -1: the datasets library's "no label"
                                labels = [None if v is None or v < 0 else v for v in labels]
                            yield cells, labels
            except (OSError, pa.ArrowException) as e:
                raise DataError(f"{file} is not a readable Arrow file ({e.__class__.__name__}): save the data set "
                                "again") from None

    def _image_bytes(self, cell: Any) -> bytes | None:
        if not isinstance(cell, dict):
            return None
        if cell.get("bytes") is not None:
            return cell["bytes"]
        if cell.get("path"):  # an image kept as a file path (not embedded): read it, relative to the folder
            file = (self.path / cell["path"]) if not Path(cell["path"]).is_absolute() else Path(cell["path"])
            return file.read_bytes() if file.is_file() else None
        return None


def load_hf_folder(path: str | Path, *, text_column: str = "text", label_column: str | None = AUTO,
                   task: Task = "auto", name: str | None = None, on_bad_input: OnBadInput = "fail") -> Dataset:
    """A data set saved by Hugging Face `datasets` (`Dataset.save_to_disk`), read in chunks: text from
    `text_column`, or images from its Image column (the first, or the one named `image`); labels from
    `label_column` ("auto": `label` when present), a ClassLabel column keeping its declared names."""
    p = Path(path).expanduser()
    if (p / "dataset_dict.json").is_file():
        splits = json.loads((p / "dataset_dict.json").read_text()).get("splits", [])
        raise DataError(f"{p} holds several splits ({', '.join(splits)}): give one of them, e.g. {p / splits[0]}"
                        if splits else f"{p} is a DatasetDict with no splits: save a Dataset")
    try:
        features = json.loads((p / "dataset_info.json").read_text())["features"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{p} has no readable dataset_info.json with features: save the data set again") from None
    images = [c for c, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image"]
    if text_column in images:  # an Image column named as the item column
        item_column, modality = text_column, "image"
    elif text_column in features or not images:
        item_column, modality = text_column, "text"
        if text_column not in features:
            raise DataError(f"{p} has no column {text_column!r} (text_column) and no Image column; its columns "
                            f"are: {', '.join(map(repr, features))}")
    else:
        item_column, modality = ("image" if "image" in images else images[0]), "image"
    if label_column == AUTO:
        label_column = "label" if "label" in features else None
    if label_column is not None and label_column not in features:
        raise DataError(f"{p} has no column {label_column!r} (label_column); its columns are: "
                        f"{', '.join(map(repr, features))}")
    feature = features.get(label_column) if label_column else None
    class_label = isinstance(feature, dict) and feature.get("_type") == "ClassLabel"
    labels = None if label_column is None else ClassLabelCodes(feature["names"]) if class_label else LabelCodes()
    source = _HFFolder(p, item_column, label_column, modality, class_label)
    return _dataset(source, labels, task=task, name=name or p.name, on_bad_input=on_bad_input,
                    meta={"source": "hf_folder", "text_column": item_column, "label_column": label_column})


# ---------------------------------------------------------------------------------------------- WebDataset

#: a member name KEY.EXT: the key is the path up to the first dot of the file name (WebDataset's rule)
_MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")
IMAGE_EXTS = tuple(e[1:] for e in IMAGE_EXTENSIONS)
TEXT_EXTS = ("txt", "text")
LABEL_EXTS = ("cls", "label", "class", "target")


def is_webdataset(path: Path) -> bool:
    """A .tar shard, or a folder of them (and nothing else that is visible)."""
    if path.is_file():
        return path.suffix.lower() == ".tar"
    if not path.is_dir():
        return False
    visible = [q for q in path.iterdir() if not q.name.startswith(".")]
    return bool(visible) and all(q.is_file() and q.suffix.lower() == ".tar" for q in visible)


class _Shards(_Source):
    what = "sample"

    def __init__(self, path: Path, item_ext: str | None, label_ext: str | None) -> None:
        self.path = path
        self.files = [path] if path.is_file() else sorted(path.glob("*.tar"))
        first = next(self._samples(), None)
        if first is None:
            raise DataError(f"{path} holds no samples (tar members named KEY.EXT): check the shards")
        exts = set(first) - {"__key__"}
        image = sorted(e for e in exts if e.lower() in IMAGE_EXTS)
        text = [e for e in exts if e.lower() in TEXT_EXTS]
        self.item_ext = item_ext or (image[0] if image else text[0] if text else None)
        if self.item_ext is None or self.item_ext not in exts:
            raise DataError(f"{path}: the first sample ({first['__key__']}) has no "
                            f"{self.item_ext or 'image or .txt'} member (it has {', '.join(sorted(exts))}): name the "
                            "member with --text-column EXT, or fix the shards")
        self.modality = "image" if self.item_ext.lower() in IMAGE_EXTS else "text"
        if label_ext == AUTO:
            label_ext = next((e for e in LABEL_EXTS if e in exts), None)
        elif label_ext is not None and label_ext not in exts:
            raise DataError(f"{path}: the first sample ({first['__key__']}) has no .{label_ext} member (it has "
                            f"{', '.join(sorted(exts))}): check --label-column")
        self.label_ext = label_ext

    def _samples(self) -> Iterator[dict[str, Any]]:
        for file in self.files:
            try:
                with tarfile.open(file, mode="r|*") as tar:
                    key, sample = None, {}
                    for member in tar:
                        if not member.isfile():
                            continue
                        m = _MEMBER.match(member.name)
                        base = member.name.rsplit("/", 1)[-1]
                        if m is None or base.startswith((".", "__")):
                            continue
                        if m.group(1) != key:
                            if sample:
                                yield sample
                            key, sample = m.group(1), {"__key__": m.group(1)}
                        sample[m.group(2)] = tar.extractfile(member).read()
                    if sample:
                        yield sample
            except (OSError, tarfile.TarError, EOFError) as e:
                raise DataError(f"{file} is not a readable tar shard ({e.__class__.__name__}): fix or remove it") \
                    from None

    def chunks(self) -> Iterator[Chunk]:
        cells: list[Any] = []
        labels: list[Any] = []
        for sample in self._samples():
            raw = sample.get(self.item_ext)
            cells.append(raw if self.modality == "image" or raw is None else raw.decode("utf-8", "replace"))
            if self.label_ext is not None:
                lab = sample.get(self.label_ext)
                labels.append(None if lab is None else lab.decode("utf-8", "replace").strip())
            if len(cells) == self.chunk_rows():
                yield cells, (labels if self.label_ext is not None else None)
                cells, labels = [], []
        if cells:
            yield cells, (labels if self.label_ext is not None else None)


class _TextLabelCodes(LabelCodes):
    """A WebDataset label member is text: numbers when every one is (as in a CSV)."""

    def encode(self, **kw: Any) -> tuple[np.ndarray, tuple[str, ...]]:
        return super().encode(from_text=True, **kw)


def load_webdataset(path: str | Path, *, text_column: str = "text", label_column: str | None = AUTO,
                    task: Task = "auto", name: str | None = None, on_bad_input: OnBadInput = "fail") -> Dataset:
    """WebDataset shards (one .tar, or a folder of them, read in name order), read in chunks: each sample's image
    member (.jpg, .png, …) or text member (.txt; or the extension `text_column` names), and its label member
    (`label_column`, by extension; "auto": .cls, .label, .class or .target when the first sample has one)."""
    p = Path(path).expanduser()
    source = _Shards(p, None if text_column == "text" else text_column, label_column)
    labels = None if source.label_ext is None else _TextLabelCodes()
    return _dataset(source, labels, task=task, name=name or p.name.split(".")[0], on_bad_input=on_bad_input,
                    meta={"source": "webdataset", "text_column": source.item_ext, "label_column": source.label_ext})
