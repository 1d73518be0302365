"""Tables read in chunks: a text column that is never held whole in memory.

`load_table(..., stream=True)` (and, by default, any table over `STREAM_ABOVE_BYTES`) reads the file once, chunk by
chunk (CSV/TSV in blocks of rows, Parquet record batches, JSON lines), to check every row, encode the labels and
fingerprint the content, keeping only the labels and the number of rows per chunk. The items are then a
`StreamedItems`: a sequence that reads the chunk an index falls in again when it is asked for, so a pass in order
(extraction, shard by shard) reads the file once more and holds at most two chunks. The data set it gives is the one
the whole-file reader gives: the same items, labels, class names and fingerprint.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.dataset import ContentHash, Dataset
from transferkit.data.loaders import (
    AUTO,
    DEFAULT_LABEL_COLUMN,
    LabelCodes,
    OnBadInput,
    Task,
    _not_utf8,
    as_text,
    check_columns,
    kept_rows,
)
from transferkit.errors import DataError

#: rows per chunk read from a CSV/TSV or JSON-lines file, and the largest Parquet record batch
CHUNK_ROWS = 8192
#: `stream="auto"` streams a table file larger than this (bytes)
STREAM_ABOVE_BYTES = 64 << 20
STREAMED_FORMATS = ("csv", "tsv", "parquet", "json")

Chunk = tuple[list[Any], list[Any] | None]  # (text cells, label cells or None)


def streams(path: Path, fmt: str, stream: bool | str) -> bool:
    """Whether `load_table` reads `path` in chunks: stream=True/False as asked; "auto" above STREAM_ABOVE_BYTES.
    A JSON file holding one array (not JSON lines) is always read whole."""
    if stream not in (True, False, AUTO):
        raise DataError(f"stream={stream!r} is not known: use True, False or 'auto'")
    if fmt not in STREAMED_FORMATS or (fmt == "json" and _json_array(path)):
        if stream is True:
            raise DataError(f"{path} is one JSON array, which cannot be read in chunks: write it as JSON lines "
                            "(one object per line, .jsonl) or pass stream=False")
        return False
    return stream is True or (stream == AUTO and path.stat().st_size > STREAM_ABOVE_BYTES)


def _open_text(path: Path):  # noqa: ANN202 — a text file object
    # lines end at "\n" alone (JSON lines), as the whole-file reader splits them
    return (gzip.open(path, "rt", encoding="utf-8-sig", newline="\n") if path.suffix.lower() == ".gz"
            else open(path, encoding="utf-8-sig", newline="\n"))


def _json_array(path: Path) -> bool:
    try:
        with _open_text(path) as f:
            while (c := f.read(1)) and c.isspace():
                pass
        return c == "["
    except (OSError, EOFError, UnicodeDecodeError):
        return False  # the reader names the problem


class _Reader:
    """Reads a table file's text (and label) column in chunks, from the start, as often as asked."""

    def __init__(self, path: Path, fmt: str, text_column: str, label_column: str | None) -> None:
        self.path, self.fmt, self.text_column, self.label_column = path, fmt, text_column, label_column
        self.columns: list[str] = self._header() if fmt != "json" else []

    def _header(self) -> list[str]:
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                schema = pq.ParquetFile(self.path).schema_arrow
                index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
                return [str(c) for c in schema.names if c not in index]  # pandas' stored index is not a column
            except (OSError, ValueError, pa.ArrowException) as e:
                raise DataError(f"{self.path} is not a readable Parquet file ({e.__class__.__name__}): fix the "
                                "file") from None
        import pandas as pd

        try:
            cols = [str(c) for c in pd.read_csv(self.path, nrows=0, **self._csv_options()).columns]
        except UnicodeDecodeError as e:
            raise _not_utf8(self.path, e) from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{self.path} is empty: give a header row and at least one data row") from None
        if cols and cols[0].startswith("\ufeff"):
            cols[0] = cols[0][1:]
        return cols

    def _csv_options(self) -> dict:
        # the whole-file reader's options (loaders._read_rows), so every cell reads the same
        return {"sep": "," if self.fmt == "csv" else "\t", "dtype": str, "keep_default_na": False,
                "na_filter": False, "skip_blank_lines": False, "encoding": "utf-8"}

    def kept(self, chunk: Chunk, offset: int, on_bad_input: OnBadInput = "skip",
             skipped: list[dict] | None = None) -> list[int]:
        """Positions of the chunk's rows that `load_table` keeps (`loaders.kept_rows`); `offset`: rows before it."""
        texts, labels = chunk
        return kept_rows(self.path, self.fmt, self.text_column, self.label_column, texts, labels, offset,
                         on_bad_input, [] if skipped is None else skipped)

    item = content = staticmethod(as_text)  # a text cell is the item, and what the fingerprint hashes

    def chunks(self) -> Iterator[Chunk]:
        """(text cells, label cells) of each chunk in file order."""
        if self.fmt == "parquet":
            yield from self._parquet()
        elif self.fmt == "json":
            yield from self._json_lines()
        else:
            yield from self._csv()

    def _csv(self) -> Iterator[Chunk]:
        import pandas as pd

        text_at = self.columns.index(self.text_column)
        label_at = self.columns.index(self.label_column) if self.label_column is not None else None
        try:  # every column is parsed (not usecols), so a ragged row fails here as it does read whole
            reader = pd.read_csv(self.path, chunksize=CHUNK_ROWS, **self._csv_options())
            with reader:
                for df in reader:
                    yield (df.iloc[:, text_at].tolist(), df.iloc[:, label_at].tolist() if label_at is not None
                           else None)
        except UnicodeDecodeError as e:
            raise _not_utf8(self.path, e) from None
        except (pd.errors.ParserError, ValueError) as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else e.__class__.__name__
            raise DataError(f"{self.path} is not a valid {self.fmt.upper()} file ({msg}): fix the file") from None

    def _parquet(self) -> Iterator[Chunk]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = list(dict.fromkeys([self.text_column] + ([self.label_column] if self.label_column else [])))
        try:
            # without pre-buffering, and with a bounded read buffer: pre-buffered column chunks stayed allocated,
            # about 85 bytes a row over a 1,000,000-row file (pyarrow's own allocation, measured)
            file = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20)
            as_float = self._nullable_ints(file, names)

            def cells(batch: Any, name: str) -> list[Any]:
                if name not in as_float:
                    return batch.column(name).to_pylist()
                # pandas reads a column of ints with nulls as floats, nulls as NaN: so does the whole-file reader
                return [float("nan") if v is None else v for v in batch.column(name).cast(pa.float64()).to_pylist()]

            for batch in file.iter_batches(batch_size=CHUNK_ROWS, columns=names):
                yield (cells(batch, self.text_column),
                       cells(batch, self.label_column) if self.label_column is not None else None)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DataError(f"{self.path} is not a readable Parquet file ({e.__class__.__name__}): fix the "
                            "file") from None

    @staticmethod
    def _nullable_ints(file: Any, names: list[str]) -> set[str]:
        """The integer columns among `names` that pandas reads as floats: those holding a null anywhere in the file
        (from the row groups' statistics, or, where a file has none, by reading that one column), unless pandas wrote
        them as its nullable integers."""
        import pyarrow as pa

        out = set()
        schema = file.schema_arrow
        kept_ints = {c.get("name") for c in (schema.pandas_metadata or {}).get("columns", [])
                     if str(c.get("numpy_type", "")).startswith(("Int", "UInt"))}  # pandas' nullable Int64 & co.
        for name in names:
            if not pa.types.is_integer(schema.field(name).type) or name in kept_ints:
                continue
            j = file.schema_arrow.get_field_index(name)
            nulls = 0
            for g in range(file.metadata.num_row_groups):
                stats = file.metadata.row_group(g).column(j).statistics
                if stats is None or not stats.has_null_count:
                    nulls = file.read(columns=[name]).column(name).null_count
                    break
                nulls += stats.null_count
            if nulls:
                out.add(name)
        return out

    def _json_lines(self) -> Iterator[Chunk]:
        texts: list[Any] = []
        labels: list[Any] = []
        seen = set(self.columns)
        try:
            with _open_text(self.path) as f:
                records = 0
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{self.path} line {lineno} is not valid JSON ({e.msg}): fix that "
                                        "line") from None
                    records += 1
                    if not isinstance(r, dict):
                        raise DataError(f"{self.path} row {records} is a {type(r).__name__}, not an object: write "
                                        "one JSON object per row")
                    for k in r:  # the columns seen (for messages and label_column="auto"), in order of appearance
                        if k not in seen:
                            seen.add(k)
                            self.columns.append(k)
                    texts.append(r.get(self.text_column))
                    labels.append(r.get(self.label_column) if self.label_column is not None else None)
                    if len(texts) == CHUNK_ROWS:
                        yield texts, (labels if self.label_column is not None else None)
                        texts, labels = [], []
        except UnicodeDecodeError as e:
            raise _not_utf8(self.path, e) from None
        except (OSError, EOFError) as e:
            raise DataError(f"{self.path} cannot be read ({e}): fix the file") from None
        if texts:
            yield texts, (labels if self.label_column is not None else None)


class StreamedItems(Sequence[Any]):
    """A streamed source's kept items, read chunk by chunk when asked for (see the module docstring): the text of a
    table's rows, or the images of a Hugging Face datasets folder or WebDataset shards (`data.sources`).

    Reading in order costs one pass over the source and holds two chunks; an index before the chunks held starts the
    source again, so use `take` (one ordered pass) for scattered indices. Safe to read from several threads."""

    def __init__(self, reader: Any, starts: np.ndarray, offsets: np.ndarray) -> None:
        self._reader = reader  # chunks(), kept(chunk, offset) and item(cell): see `scan`
        self._starts = starts  # kept index of each chunk's first item; the last entry is the number of items
        self._offsets = offsets  # rows of the source before each chunk
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, list[Any]] = OrderedDict()  # kept cells (an image's encoded bytes, not pixels)
        self._chunks: Iterator[Chunk] | None = None
        self._next = 0  # the chunk the open reader yields next
        self.passes = 0  # times the source was opened for reading (tests, diagnostics)
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return self.take(range(len(self))[i])
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for {n} items")
        i = int(i) % n
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._reader.item(self._chunk(k)[i - int(self._starts[k])])

    def _cells(self, k: int, chunk: Chunk) -> list[Any]:
        """The kept cells of chunk `k`; a source that no longer has the rows it had when scanned is refused."""
        cells, _ = chunk
        kept = [cells[j] for j in self._reader.kept(chunk, int(self._offsets[k]))]
        if k + 1 >= len(self._starts) or len(kept) != self._starts[k + 1] - self._starts[k]:
            raise DataError(f"{self._reader.path} changed since it was loaded (chunk {k} no longer holds the rows "
                            "it held): load it again")
        return kept

    def _chunk(self, k: int) -> list[Any]:
        if self._pid != os.getpid():  # a forked process (a DataLoader worker): its own reader, not the parent's
            self.__setstate__(self.__getstate__())
        with self._lock:
            if k in self._cache:
                return self._cache[k]
            if self._chunks is None or self._next > k:
                self._chunks, self._next = self._reader.chunks(), 0
                self.passes += 1
            for chunk in self._chunks:
                self._next += 1
                if self._next - 1 >= k - 1:  # the chunk before k too: a shard may straddle the two
                    self._cache[self._next - 1] = self._cells(self._next - 1, chunk)
                    while len(self._cache) > 2:
                        self._cache.popitem(last=False)
                if self._next > k:
                    break
            if k not in self._cache:
                raise DataError(f"{self._reader.path} changed while it was being read (chunk {k} is gone): load it "
                                "again")
            return self._cache[k]

    def take(self, indices: Sequence[int] | np.ndarray) -> list[Any]:
        """The items at `indices`, in that order, read in one ordered pass."""
        idx = np.asarray(indices, dtype=np.int64)
        out: list[Any] = [None] * len(idx)
        for j in np.argsort(idx, kind="stable"):
            out[j] = self[int(idx[j])]
        return out

    def __iter__(self) -> Iterator[Any]:
        for k, chunk in enumerate(self._reader.chunks()):
            yield from (self._reader.item(c) for c in self._cells(k, chunk))

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_cache", "_chunks", "_pid")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock, self._cache, self._chunks, self._next = threading.Lock(), OrderedDict(), None, 0
        self._pid = os.getpid()


@dataclass
class Scan:
    """What one pass over a streamed source found: the content hash of the kept items, where each chunk starts among
    them and in the source, and the bad items skipped."""

    content: ContentHash
    starts: list[int]
    offsets: list[int]
    skipped: list[dict]

    def items(self, reader: Any) -> StreamedItems:
        """The kept items, read again from `reader` when asked for."""
        return StreamedItems(reader, np.asarray(self.starts, np.int64), np.asarray(self.offsets, np.int64))


def scan(reader: Any, on_bad_input: OnBadInput, labels: Any = None) -> Scan:
    """One pass over `reader`'s chunks: the kept items hashed (`reader.content(cell)`), their label cells handed to
    `labels.add` (a `loaders.LabelCodes` or the like), bad items failing or skipped as `on_bad_input` says."""
    found = Scan(ContentHash(), [0], [0], [])
    for chunk in reader.chunks():
        cells, label_cells = chunk
        kept = reader.kept(chunk, found.offsets[-1], on_bad_input, found.skipped)
        found.content.add_items([reader.content(cells[j]) for j in kept])
        if labels is not None and label_cells is not None:
            labels.add([label_cells[j] for j in kept])
        found.starts.append(found.starts[-1] + len(kept))
        found.offsets.append(found.offsets[-1] + len(cells))
    return found


def row_ids(n: int, skipped_rows: list[int]) -> Sequence[int]:
    """Row number (from 1) of each kept row: a range when none was skipped, else an int64 array."""
    if not skipped_rows:
        return range(1, n + 1)
    kept = np.ones(n + len(skipped_rows), bool)
    kept[np.asarray(skipped_rows, dtype=np.int64) - 1] = False
    return np.flatnonzero(kept) + 1


def load_table_streamed(p: Path, fmt: str, *, text_column: str, label_column: str | None, task: Task,
                        name: str | None, on_bad_input: OnBadInput) -> Dataset:
    """`load_table` for a file read in chunks (see the module docstring); the same checks, messages and result."""
    reader = _Reader(p, fmt, text_column,
                     DEFAULT_LABEL_COLUMN if label_column == AUTO else label_column)
    if fmt != "json":  # columns are known from the header; JSON lines name theirs row by row (checked below)
        if label_column == AUTO:
            label_column = reader.label_column = DEFAULT_LABEL_COLUMN if DEFAULT_LABEL_COLUMN in reader.columns \
                else None
        check_columns(p, reader.columns, text_column, label_column)
    codes = LabelCodes()
    try:
        found = scan(reader, on_bad_input, codes)
    except DataError:
        if fmt == "json":  # a column no row has is the error to name, as the whole-file reader does
            for _ in reader.chunks():
                pass
            check_columns(p, reader.columns, text_column, None if label_column == AUTO else label_column)
        raise
    if fmt == "json":
        if label_column == AUTO:
            label_column = DEFAULT_LABEL_COLUMN if DEFAULT_LABEL_COLUMN in reader.columns else None
        check_columns(p, reader.columns, text_column, label_column)
    if found.offsets[-1] == 0:
        raise DataError(f"{p} has no data rows: add rows below the header")
    if found.starts[-1] == 0:
        raise DataError(f"{p}: every row was skipped as bad input (first: {found.skipped[0]['reason']}): fix the "
                        "file")
    ids = row_ids(found.starts[-1], [int(s["id"]) for s in found.skipped])
    labels, class_names = None, ()
    if label_column is not None:
        labels, class_names = codes.encode(task=task, from_text=fmt in ("csv", "tsv"),
                                           where=lambda i: f"{p} row {ids[i]}: column {label_column!r}")
    reader.label_column = label_column
    meta = {"source": "table", "path": str(p), "format": fmt, "text_column": text_column, "label_column": label_column,
            "skipped": found.skipped, "ids": ids}
    return Dataset(found.items(reader), labels, class_names, "text", name or p.name.split(".")[0] or "table",
                   fingerprint=found.content.finish(labels, class_names), meta=meta)
