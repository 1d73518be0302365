"""Turn user data (an image folder, a table of text, in-memory arrays, a bundled name) into a `Dataset`.

Every problem a user can cause raises `DataError` with one line that names the file, column or row and the fix.
"""

from __future__ import annotations

import gzip
import inspect
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from transferkit.data.dataset import ContentHash, Dataset, Modality
from transferkit.errors import DataError

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)
TABLE_EXTENSIONS: tuple[str, ...] = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")
OnBadInput = Literal["fail", "skip"]
Task = Literal["auto", "classification", "regression"]

#: `label_column="auto"`: the column named DEFAULT_LABEL_COLUMN when the table has one, else no labels
AUTO = "auto"
DEFAULT_LABEL_COLUMN = "label"
# Cells in a text table that mean "no value" in a label column.
_MISSING_STRINGS = frozenset({"", "nan", "na", "n/a", "null"})


# ----------------------------------------------------------------------------------------------- image folders


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _bad_input(where: Path | str, reason: str, on_bad_input: OnBadInput, skipped: list[dict] | None = None,
               item_id: Any = None) -> None:
    """The one place that decides what a bad item does: fail with its name, or record it in `skipped` (with the
    id a prediction table gives it: the file's path, or the table's row number)."""
    if on_bad_input == "skip" and skipped is not None:
        skipped.append({"item": str(where), "reason": reason, "id": str(where) if item_id is None else item_id})
        return
    raise DataError(f"{where}: {reason}")


def check_on_bad_input(on_bad_input: str) -> None:
    """Refuse an `on_bad_input` (--on-bad-input) other than fail or skip."""
    if on_bad_input not in ("fail", "skip"):
        raise DataError(f"on_bad_input={on_bad_input!r} (--on-bad-input) is not supported: use fail or skip")


def _image_problem(data: bytes, decode: bool) -> str | None:
    """None when `data` (a file's bytes) is an image, else why not: its header is parsed, and with `decode` its pixels
    too (so extraction never meets a bad one)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load() if decode else img.size  # noqa: B018
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f"cannot be read as an image ({e.__class__.__name__}): replace or remove the file"
    return None


class FileList(Sequence[Path]):
    """Paths under one root, held as one UTF-8 buffer of relative paths and their offsets: about 8 bytes and the
    relative path's length per file, against some 200 bytes for a Path object (an image folder of many millions)."""

    def __init__(self, root: Path, relative: Sequence[str]) -> None:
        self.root = root
        encoded = [r.encode("utf-8", "surrogateescape") for r in relative]
        self._offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=self._offsets[1:])
        self._buffer = b"".join(encoded)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for {n} files")
        i = int(i) % n
        return self.root / self._buffer[self._offsets[i]: self._offsets[i + 1]].decode("utf-8", "surrogateescape")

    def take(self, indices: Sequence[int] | np.ndarray) -> list[Path]:
        """The paths at `indices`, in that order."""
        return [self[int(i)] for i in np.asarray(indices, dtype=np.int64)]


#: `load_image_folder` keeps the paths of a folder with more files than this in a `FileList`
FILE_LIST_ABOVE = 100_000


def _image_files(folder: Path, root: Path, extensions: tuple[str, ...], on_bad_input: OnBadInput,
                 skipped: list[dict], content: ContentHash) -> list[Path]:
    """Every non-hidden file under `folder` (recursively), sorted by relative path, read once: checked to be an
    image (its header; its pixels too when skipping bad ones) and hashed into `content`, so the data set's
    fingerprint needs no second read of the files."""
    files = sorted(
        (p for p in folder.rglob("*") if p.is_file() and not _is_hidden(p, root)),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    kept = []
    for path in files:
        if path.suffix.lower() not in extensions:
            _bad_input(path, f"not an image file (extension {path.suffix or '(none)'!r} is not one of "
                       f"{', '.join(extensions)}): remove it from the folder or pass extensions=", on_bad_input,
                       skipped)
            continue
        try:
            data = path.read_bytes()
        except OSError as e:
            why: str | None = f"cannot be read ({e.__class__.__name__}): check its permissions"
        else:
            why = _image_problem(data, decode=on_bad_input == "skip")
        if why is not None:
            _bad_input(path, why, on_bad_input, skipped)
            continue
        content.add_file(data)
        kept.append(path)
    return kept


def load_image_folder(
    path: str | Path,
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    on_bad_input: OnBadInput = "fail",
    name: str | None = None,
) -> Dataset:
    """Images in one subfolder per class (class names sorted), or a flat folder of images (unlabelled).

    Items are the image file paths, sorted for determinism; hidden files and folders are ignored.
    With class folders, other (non-image) files directly in `path` such as a README are ignored.
    on_bad_input="skip" leaves out unreadable or non-image files and lists them in `meta["skipped"]`.
    """
    root = Path(path).expanduser()
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    check_on_bad_input(on_bad_input)
    skipped: list[dict] = []
    if not root.exists():
        raise DataError(f"image folder {root} does not exist: check the path")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not an image folder: give a folder with one subfolder per class")
    entries = sorted((p for p in root.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    class_dirs = [p for p in entries if p.is_dir()]
    top_files = [p for p in entries if p.is_file()]
    ds_name = name or root.resolve().name or "images"
    meta: dict[str, Any] = {"source": "image_folder", "root": str(root), "skipped": skipped}

    content = ContentHash()
    if not class_dirs:
        if not top_files:
            raise DataError(f"image folder {root} is empty: put images in it, one subfolder per class")
        files = _image_files(root, root, exts, on_bad_input, skipped, content)
        if not files:
            raise DataError(f"image folder {root} holds no images: put images in it, one subfolder per class")
        return Dataset(_compact(root, [f.relative_to(root).as_posix() for f in files]), None, (), "image", ds_name,
                       fingerprint=content.finish(None), meta=meta)

    stray = [p for p in top_files if p.suffix.lower() in exts]
    if stray:
        raise DataError(
            f"{stray[0]} lies next to the class folders of {root}, so it has no class: "
            "move it into a class subfolder (or into a separate unlabelled folder)"
        )
    relative: list[str] = []  # kept as text, not Path objects, while the folder is listed
    labels: list[int] = []
    class_names = tuple(d.name for d in class_dirs)
    for cid, d in enumerate(class_dirs):
        files = _image_files(d, root, exts, on_bad_input, skipped, content)
        if not files:
            raise DataError(f"class folder {d} holds no images: add images to it or remove the folder")
        relative.extend(f.relative_to(root).as_posix() for f in files)
        labels.extend([cid] * len(files))
    y = np.asarray(labels, dtype=np.int64)
    return Dataset(_compact(root, relative), y, class_names, "image", ds_name,
                   fingerprint=content.finish(y, class_names), meta=meta)


def _compact(root: Path, relative: list[str]) -> Sequence[Path]:
    """The files (paths relative to `root`) as Path objects, or, above FILE_LIST_ABOVE of them, a `FileList`."""
    if len(relative) <= FILE_LIST_ABOVE:
        return [root / r for r in relative]
    return FileList(root, relative)


# ------------------------------------------------------------------------------------------------------ labels


def _is_null(v: Any) -> bool:
    """None, NaN, pandas NA/NaT: a cell with no value."""
    if v is None:
        return True
    if isinstance(v, float | np.floating):
        return bool(np.isnan(v))
    return type(v).__name__ in ("NAType", "NaTType")


def _is_missing(v: Any) -> bool:
    """A label cell with no value, including text cells such as '', 'NaN', 'NA', 'null'."""
    if isinstance(v, str):
        return v.strip().lower() in _MISSING_STRINGS
    return _is_null(v)


def _parse_number(s: str) -> int | float | None:
    s = s.strip()
    try:
        return int(s)
    except ValueError:
        pass
    try:
        f = float(s)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


def _numbers_from_strings(values: list[Any]) -> list[Any]:
    """CSV cells are strings: turn a column that is all numbers into ints (or floats); leave text alone."""
    parsed = [_parse_number(v) if isinstance(v, str) else v for v in values]
    if any(p is None for p in parsed):
        return values
    if all(isinstance(p, int) for p in parsed):
        return parsed
    return [float(p) for p in parsed]


def _class_name(v: Any) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, np.generic):
        return str(v.item())
    return str(v)


class LabelCodes:
    """Label cells gathered in order, chunk by chunk, as codes into their distinct values: memory grows with the
    number of distinct labels, not of rows. `encode` then gives what `encode_labels` gives for all the cells at
    once (it is how `encode_labels` works), so a table read in chunks gets the labels it gets read whole."""

    def __init__(self) -> None:
        self._index: dict[tuple[type, Any], int] = {}
        self.values: list[Any] = []  # distinct cells, in order of first appearance
        self.first: list[int] = []  # the position of each distinct cell's first appearance
        self._codes: list[np.ndarray] = []
        self.n = 0

    def add(self, cells: Sequence[Any]) -> None:
        """The next cells, in order."""
        codes = np.empty(len(cells), np.int64)
        for j, v in enumerate(cells):
            v = v.item() if isinstance(v, np.generic) else v
            # 1, 1.0 and True stay apart here, as their types matter below; so do 0.0 and -0.0 (regression targets)
            key = (float, v.hex()) if isinstance(v, float) else (type(v), v)
            code = self._index.get(key)
            if code is None:
                code = self._index[key] = len(self.values)
                self.values.append(v)
                self.first.append(self.n + j)
            codes[j] = code
        self._codes.append(codes)
        self.n += len(cells)

    def encode(self, *, task: Task = "auto", from_text: bool = False,
               where: Callable[[int], str] = lambda i: f"label {i}") -> tuple[np.ndarray, tuple[str, ...]]:
        """(class ids, sorted class names) or (float targets, ()): see `encode_labels`. from_text: the cells are a
        CSV's strings, numbers when every one of them is."""
        if task not in ("auto", "classification", "regression"):
            raise DataError(f"task={task!r} is not known: use 'auto', 'classification' or 'regression'")
        codes = np.concatenate(self._codes) if self._codes else np.empty(0, np.int64)
        vals = _numbers_from_strings(self.values) if from_text else list(self.values)
        for v, row in zip(vals, self.first):
            if _is_missing(v):
                raise DataError(f"{where(row)} has no label ({v!r}): fill it in or drop that row")
        kinds = {type(v) for v in vals}
        is_bool = kinds <= {bool}
        is_int = not is_bool and kinds <= {int, bool}
        is_num = not is_bool and kinds <= {int, float, bool}
        if task == "regression":
            if not is_num:
                bad = next(k for k, v in enumerate(vals) if not isinstance(v, int | float) or isinstance(v, bool))
                raise DataError(
                    f"{where(self.first[bad])} is {vals[bad]!r}, not a number, but task='regression': "
                    "fix the value or use task='classification'"
                )
            return np.asarray(vals, dtype=np.float64)[codes], ()
        if task == "auto" and is_num and not is_int and len(set(vals)) > min(20, self.n / 2):
            return np.asarray(vals, dtype=np.float64)[codes], ()
        if is_num:
            keys = sorted(set(vals))
        elif is_bool:
            keys = [False, True]
        else:
            if not kinds <= {str}:  # mixed types: compare as text
                vals = [_class_name(v) for v in vals]
            keys = sorted(set(vals))
        names = tuple(_class_name(k) for k in keys)
        if len(set(names)) != len(names):  # e.g. 1 and 1.0 -> "1" twice cannot happen for numbers; guard anyway
            names = tuple(str(k) for k in keys)
        index = {k: i for i, k in enumerate(keys)}
        return np.asarray([index[v] for v in vals], dtype=np.int64)[codes], names


def encode_labels(
    values: Sequence[Any], *, task: Task = "auto", where: Callable[[int], str] = lambda i: f"label {i}"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Raw labels -> (class ids with sorted class names) or (float targets with no class names).

    Strings, ints and bools are classes; floats are regression targets when `task="regression"`, or when
    `task="auto"` and they have many distinct values (more than min(20, half the rows)).
    `where(i)` names item i in error messages.
    """
    codes = LabelCodes()
    codes.add(values)
    return codes.encode(task=task, where=where)


# ------------------------------------------------------------------------------------------------------ tables


def is_table(path: str | Path) -> bool:
    """Whether `path` names a table file by its extension (.csv, .tsv, .parquet, .jsonl, … also .gz-compressed)."""
    suffixes = [s.lower() for s in Path(str(path)).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in TABLE_EXTENSIONS


def _table_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".csv", ".tsv"):
        return ext[1:]
    if ext in (".parquet", ".pq"):
        return "parquet"
    if ext in (".jsonl", ".ndjson", ".json"):
        return "json"
    raise DataError(
        f"{path}: cannot tell the table format from {ext or 'no extension'!r}: use one of {', '.join(TABLE_EXTENSIONS)}"
    )


def _not_utf8(path: Path, e: UnicodeDecodeError) -> DataError:
    return DataError(
        f"{path} is not UTF-8 text (byte {e.object[e.start : e.start + 1]!r} at offset {e.start}): re-save it as UTF-8"
    )


def _read_rows(path: Path, fmt: str) -> tuple[list[str], Callable[[str], list[Any]]]:
    """(column names, column getter) for a table file; CSV/TSV cells come back as strings."""
    import pandas as pd

    if fmt in ("csv", "tsv"):
        try:
            df = pd.read_csv(
                path,
                sep="," if fmt == "csv" else "\t",
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skip_blank_lines=False,  # a whitespace-only row is a row (empty text), never silently dropped
                encoding="utf-8",
            )
        except UnicodeDecodeError as e:
            raise _not_utf8(path, e) from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{path} is empty: give a header row and at least one data row") from None
        except (pd.errors.ParserError, ValueError) as e:
            msg = str(e).strip().splitlines()[-1] if str(e).strip() else e.__class__.__name__
            raise DataError(f"{path} is not a valid {fmt.upper()} file ({msg}): fix the file") from None
        cols = [str(c) for c in df.columns]
        if cols and cols[0].startswith("\ufeff"):
            cols[0] = cols[0][1:]
        df.columns = cols
        return cols, lambda c: df[c].tolist()
    if fmt == "parquet":
        import pyarrow as pa

        try:
            df = pd.read_parquet(path)
        except (OSError, ValueError, pa.ArrowException) as e:
            raise DataError(f"{path} is not a readable Parquet file ({e.__class__.__name__}): fix the file") from None
        cols = [str(c) for c in df.columns]
        df.columns = cols
        return cols, lambda c: df[c].astype(object).tolist()
    # JSON lines (or a JSON array of records)
    try:
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if path.suffix.lower() == ".gz" else raw).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e) from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path} cannot be read ({e}): fix the file") from None
    records: list[Any]
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}): fix the file") from None
    else:
        records = []
        for lineno, line in enumerate(text.split("\n"), 1):  # JSON lines end at "\n"; splitlines() would also cut
            # at U+2028, U+0085 and other characters a JSON string may hold raw
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {lineno} is not valid JSON ({e.msg}): fix that line") from None
    for i, r in enumerate(records, 1):
        if not isinstance(r, dict):
            raise DataError(f"{path} row {i} is a {type(r).__name__}, not an object: write one JSON object per row")
    cols = list(dict.fromkeys(k for r in records for k in r))
    return cols, lambda c: [r.get(c) for r in records]


def as_text(v: Any) -> str:
    """A table's text cell as a string (numbers in a text column become their text)."""
    return v if isinstance(v, str) else str(v)


def check_columns(p: Path, cols: Sequence[str], text_column: str, label_column: str | None) -> None:
    """Refuse a text or label column the table does not have, listing the ones it has."""
    for role, col in (("text_column", text_column), ("label_column", label_column)):
        if col is not None and col not in cols:
            shown = ", ".join(repr(c) for c in cols[:20]) + (", …" if len(cols) > 20 else "")
            raise DataError(f"{p} has no column {col!r} ({role}); its columns are: {shown or '(none)'}")


def kept_rows(p: Path, fmt: str, text_column: str, label_column: str | None, texts: Sequence[Any],
              labels: Sequence[Any] | None, offset: int, on_bad_input: OnBadInput, skipped: list[dict]) -> list[int]:
    """Positions (in `texts`) of the rows to keep: a row with empty text, or (in a CSV/TSV) no label, is bad input.
    `offset`: how many data rows come before these ones, so messages number rows from 1 in the whole file."""
    keep: list[int] = []
    for j, v in enumerate(texts):
        row = offset + j + 1
        if _is_null(v) or not as_text(v).strip():
            _bad_input(f"{p} row {row}", f"column {text_column!r} is empty: fill in the text or drop the row",
                       on_bad_input, skipped, row)
        elif labels is not None and fmt in ("csv", "tsv") and _is_missing(labels[j]):
            _bad_input(f"{p} row {row}",
                       f"column {label_column!r} has no label ({labels[j]!r}): fill it in or drop the row",
                       on_bad_input, skipped, row)
        else:
            keep.append(j)
    return keep


def load_table(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str | None = None,
    task: Task = "auto",
    name: str | None = None,
    on_bad_input: OnBadInput = "fail",
    stream: bool | str = "auto",
) -> Dataset:
    """Text items (and labels) from a .csv, .tsv, .parquet or .jsonl/.json file.

    Labels that are strings or ints become class ids with sorted class names; floats become regression
    targets (see `encode_labels`). label_column=None reads no labels; "auto" reads the `label` column when the
    table has one. Rows are numbered from 1, header not counted, in error messages.
    on_bad_input="skip" leaves out rows with empty text or no label and lists them in `meta["skipped"]`.
    stream: read the file in chunks so that its text is never held whole in memory (`transferkit.data.stream`;
    the same data set either way); "auto" streams files over `stream.STREAM_ABOVE_BYTES` (64 MiB).
    """
    check_on_bad_input(on_bad_input)
    p = Path(path).expanduser()
    fmt = _table_format(p)
    if not p.exists():
        raise DataError(f"table file {p} does not exist: check the path")
    if not p.is_file():
        raise DataError(f"{p} is not a file: give a .csv, .tsv, .parquet or .jsonl file")
    from transferkit.data import stream as streamed

    if streamed.streams(p, fmt, stream):
        return streamed.load_table_streamed(p, fmt, text_column=text_column, label_column=label_column, task=task,
                                            name=name, on_bad_input=on_bad_input)
    cols, column = _read_rows(p, fmt)
    if label_column == AUTO:
        label_column = DEFAULT_LABEL_COLUMN if DEFAULT_LABEL_COLUMN in cols else None
    check_columns(p, cols, text_column, label_column)
    raw_text = column(text_column)
    if not raw_text:
        raise DataError(f"{p} has no data rows: add rows below the header")
    skipped: list[dict] = []
    raw_labels = column(label_column) if label_column is not None else None
    keep = kept_rows(p, fmt, text_column, label_column, raw_text, raw_labels, 0, on_bad_input, skipped)
    if not keep:
        raise DataError(f"{p}: every row was skipped as bad input (first: {skipped[0]['reason']}): fix the file")
    texts = [as_text(raw_text[i]) for i in keep]
    labels = None
    class_names: tuple[str, ...] = ()
    if raw_labels is not None:
        codes = LabelCodes()
        codes.add([raw_labels[i] for i in keep])
        labels, class_names = codes.encode(task=task, from_text=fmt in ("csv", "tsv"),
                                           where=lambda i: f"{p} row {keep[i] + 1}: column {label_column!r}")
    meta = {"source": "table", "path": str(p), "format": fmt, "text_column": text_column, "label_column": label_column,
            "skipped": skipped, "ids": [i + 1 for i in keep]}  # rows numbered from 1, header not counted
    return Dataset(texts, labels, class_names, "text", name or p.name.split(".")[0] or "table", meta=meta)


# ------------------------------------------------------------------------------------------------------ arrays


def _check_image_array(a: np.ndarray, what: str) -> np.ndarray:
    """Return `a` as uint8 or float in [0, 1]; explain what to do otherwise."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 255):
            raise DataError(
                f"{what} holds integers outside 0..255: scale them to 0..255 (uint8) or to floats in [0, 1]"
            )
        return a.astype(np.uint8)
    if a.dtype.kind == "f":
        if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
            raise DataError(f"{what} holds floats outside [0, 1] (or NaN): scale them to [0, 1] or cast to uint8")
        return a
    if a.dtype.kind == "b":
        return a.astype(np.uint8) * 255
    raise DataError(f"{what} has dtype {a.dtype}, not numbers: give uint8 images or floats in [0, 1]")


def _check_image_shape(shape: tuple[int, ...], what: str) -> None:
    if len(shape) == 2:
        return
    if len(shape) == 3 and shape[-1] in (1, 3, 4):
        return
    if len(shape) == 3 and shape[0] in (1, 3, 4):
        raise DataError(f"{what} has shape {shape}, channels first: give H×W×C (e.g. np.moveaxis(x, 0, -1))")
    raise DataError(f"{what} has shape {shape}: an image must be H×W or H×W×C with C in 1, 3, 4")


def items_from(X: Any) -> tuple[Sequence[Any], Modality]:
    """Validate in-memory items (strings, images as arrays/PIL/paths, a one-column DataFrame or Series of text, an
    (N, H, W[, C]) array) and tell their modality."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(X, pd.DataFrame):
        if X.shape[1] != 1:
            raise DataError(
                f"X is a DataFrame with {X.shape[1]} columns: pass the text column (X['text']) or use load_table"
            )
        X = X.iloc[:, 0]
    if pd is not None and isinstance(X, pd.Series | pd.Index):
        X = X.tolist()
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "US":
            if X.ndim != 1:
                raise DataError(f"X is a {X.ndim}-D array of strings: give a 1-D list of strings")
            return [str(s) for s in X], "text"
        if X.dtype.kind == "O":
            X = list(X)
        elif X.dtype.kind in "iufb":
            if X.ndim == 2:
                raise DataError(
                    f"X has shape {X.shape}: for images give (N, H, W) or (N, H, W, C); "
                    "flat feature vectors are not raw items"
                )
            if X.ndim not in (3, 4):
                raise DataError(f"X has shape {X.shape}: for images give (N, H, W) or (N, H, W, C)")
            _check_image_shape(X.shape[1:], "each image in X")
            return _check_image_array(X, "X"), "image"
        else:
            raise DataError(f"X has dtype {X.dtype}: give strings (text) or numbers (images)")
    if isinstance(X, str | bytes):
        raise DataError("X is a single string: give a list of strings, one per item")
    try:
        items = list(X)
    except TypeError:
        raise DataError(f"X is a {type(X).__name__}: give a list or array of strings or images") from None
    if not items:
        raise DataError("X is empty: give at least one item")
    first = items[0]
    if isinstance(first, str):
        for i, v in enumerate(items):
            if not isinstance(v, str):
                raise DataError(f"X[{i}] is a {type(v).__name__} among strings: give all items as strings")
        return items, "text"
    out: list[Any] = []
    for i, v in enumerate(items):
        if isinstance(v, np.ndarray):
            _check_image_shape(v.shape, f"X[{i}]")
            out.append(_check_image_array(v, f"X[{i}]"))
        elif isinstance(v, Path):
            if not v.is_file():
                raise DataError(f"X[{i}] = {v} is not an existing file: check the path")
            out.append(v)
        elif hasattr(v, "mode") and hasattr(v, "size") and hasattr(v, "tobytes"):  # PIL image
            out.append(v)
        else:
            raise DataError(f"X[{i}] is a {type(v).__name__}: give strings, numpy images, PIL images or file paths")
    return out, "image"


def from_arrays(
    X: Any,
    y: Any = None,
    *,
    class_names: Sequence[str] | None = None,
    modality: Modality | None = None,
    task: Task = "auto",
    name: str = "arrays",
) -> Dataset:
    """A Dataset from in-memory data: a list/array of strings (text) or images ((N,H,W[,C]) array, arrays, PIL).

    `y` may be class names, ints or floats (see `encode_labels`); with `class_names`, `y` holds either ids into
    `class_names` or the names themselves.
    """
    items, found = items_from(X)
    if modality is not None and modality != found:
        raise DataError(f"modality={modality!r} but X holds {found} items: drop modality= or pass {modality} items")
    labels = None
    names: tuple[str, ...] = ()
    if y is not None:
        y_list = y.tolist() if hasattr(y, "tolist") else list(y)
        if len(y_list) != len(items):
            raise DataError(f"X has {len(items)} items but y has {len(y_list)} labels: give one label per item")
        if class_names is not None:
            names = tuple(str(c) for c in class_names)
            index = {c: i for i, c in enumerate(names)}
            ids = []
            for i, v in enumerate(y_list):
                if isinstance(v, str):
                    if v not in index:
                        raise DataError(f"y[{i}] = {v!r} is not one of class_names {list(names)}: fix y or class_names")
                    ids.append(index[v])
                elif isinstance(v, int | np.integer) and not isinstance(v, bool) and 0 <= v < len(names):
                    ids.append(int(v))
                else:
                    raise DataError(
                        f"y[{i}] = {v!r} is neither a class name nor an id below {len(names)}: fix y or class_names"
                    )
            labels = np.asarray(ids, dtype=np.int64)
        else:
            labels, names = encode_labels(y_list, task=task, where=lambda i: f"y[{i}]")
    elif class_names is not None:
        raise DataError("class_names given without y: pass the labels too")
    return Dataset(items, labels, names, found, name, meta={"source": "arrays"})


# ------------------------------------------------------------------------------------------------- entry point

BUNDLED_PREFIX = "bundled:"


def has_columns(path: str | Path) -> bool:
    """Whether the data at `path` has named columns (text and label): a table, a Hugging Face datasets folder or
    WebDataset shards (whose members play the columns' part); an image folder has none."""
    from transferkit.data import sources

    p = Path(str(path)).expanduser()
    return is_table(p) or sources.is_hf_folder(p) or sources.is_webdataset(p)


def load_data(spec_or_path: Any, **kw: Any) -> Dataset:
    """One entry point: a folder (images; a Hugging Face `save_to_disk` folder; WebDataset .tar shards), a table
    file (text), `bundled:NAME`, in-memory arrays or a Dataset."""
    if isinstance(spec_or_path, Dataset):
        if kw:
            raise DataError(f"load_data got a Dataset and options {sorted(kw)}: options apply only to files")
        return spec_or_path
    if isinstance(spec_or_path, str) and spec_or_path.startswith(BUNDLED_PREFIX):
        from transferkit.data import datasets

        return datasets.load(spec_or_path[len(BUNDLED_PREFIX) :], **kw)
    if isinstance(spec_or_path, str | Path):
        from transferkit.data import sources

        p = Path(spec_or_path).expanduser()
        if sources.is_hf_folder(p):
            return call_with_options(sources.load_hf_folder, f"Hugging Face datasets folder {p}", p, **kw)
        if sources.is_webdataset(p):
            return call_with_options(sources.load_webdataset, f"WebDataset shards {p}", p, **kw)
        if p.is_dir():
            return call_with_options(load_image_folder, f"image folder {p}", p, **kw)
        if p.is_file():
            return call_with_options(load_table, f"table {p}", p, **kw)
        raise DataError(
            f"{p} does not exist: give an image folder, a table file ({', '.join(TABLE_EXTENSIONS)}) "
            "or bundled:NAME (see transferkit.datasets.available())"
        )
    return call_with_options(from_arrays, "arrays", spec_or_path, **kw)


def call_with_options(fn: Callable[..., Dataset], what: str, *args: Any, **kw: Any) -> Dataset:
    """Call a loader, turning an unknown or missing option into a DataError that lists the valid ones."""
    sig = inspect.signature(fn)
    try:
        sig.bind(*args, **kw)
    except TypeError as e:
        options = [n for n, prm in sig.parameters.items() if prm.kind is inspect.Parameter.KEYWORD_ONLY]
        raise DataError(f"{what}: {e}; its options are: {', '.join(options) or '(none)'}") from None
    return fn(*args, **kw)
