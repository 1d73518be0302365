"""Loaders: image folders, tables, in-memory arrays, the load_data entry point, and fingerprints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from transferkit.data import Dataset, from_arrays, load_data, load_image_folder, load_table
from transferkit.errors import DataError


def _png(path: Path, value: int = 0, size: tuple[int, int] = (4, 4), fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def _folder(root: Path) -> Path:
    """dog/ cat/ bird/ created out of order, PNG and JPEG, a nested folder, hidden files and a README."""
    _png(root / "dog" / "b.png", 10)
    _png(root / "dog" / "a.jpg", 20, fmt="JPEG")
    _png(root / "dog" / "sub" / "c.png", 30)
    _png(root / "cat" / "x.png", 40)
    _png(root / "bird" / "y.jpeg", 50, fmt="JPEG")
    (root / "cat" / ".DS_Store").write_bytes(b"\0junk")
    _png(root / ".hidden" / "z.png", 60)
    _png(root / "cat" / ".cache" / "w.png", 70)
    (root / "README.md").write_text("about this data\n")
    return root


# ------------------------------------------------------------------------------------------------ image folders


def test_image_folder_classes_sorted_items_sorted_hidden_ignored(tmp_path: Path) -> None:
    ds = load_image_folder(_folder(tmp_path / "pets"))
    assert ds.modality == "image" and ds.name == "pets"
    assert ds.class_names == ("bird", "cat", "dog")
    rel = [p.relative_to(tmp_path / "pets").as_posix() for p in ds.items]
    assert rel == ["bird/y.jpeg", "cat/x.png", "dog/a.jpg", "dog/b.png", "dog/sub/c.png"]
    assert ds.labels.tolist() == [0, 1, 2, 2, 2]
    assert all(isinstance(p, Path) for p in ds.items)
    assert ds.task == "classification"


def test_an_image_folder_is_read_once_and_keeps_the_fingerprint_of_its_files(tmp_path: Path, monkeypatch) -> None:
    from transferkit.data import loaders
    from transferkit.data.dataset import fingerprint

    root = _folder(tmp_path / "pets")
    reads: list[Path] = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: (reads.append(self), read_bytes(self))[1])
    ds = load_image_folder(root)
    assert sorted(reads) == sorted(ds.items)  # each image read once: checked and hashed from the same bytes
    reads.clear()
    assert ds.fingerprint == fingerprint(list(ds.items), ds.labels, ds.class_names)  # what reading them again gives
    monkeypatch.setattr(loaders, "FILE_LIST_ABOVE", 3)  # many files: the paths in one buffer
    many = load_image_folder(root)
    assert isinstance(many.items, loaders.FileList) and not isinstance(ds.items, loaders.FileList)
    assert list(many.items) == list(ds.items) and many.items[-1] == ds.items[-1] and many.items[1:3] == ds.items[1:3]
    assert many.fingerprint == ds.fingerprint and many.subset([4, 0]).items == [ds.items[4], ds.items[0]]
    with pytest.raises(IndexError):
        many.items[5]
    unlabelled = load_image_folder(root / "cat")
    assert unlabelled.fingerprint == fingerprint(list(unlabelled.items), None)


def test_image_folder_without_class_folders_is_unlabelled(tmp_path: Path) -> None:
    _png(tmp_path / "b.png")
    _png(tmp_path / "a.png")
    ds = load_image_folder(tmp_path)
    assert ds.labels is None and ds.class_names == () and ds.task == "unlabelled"
    assert [p.name for p in ds.items] == ["a.png", "b.png"]


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda r: (r / "dog").mkdir(parents=True) or (r / "dog" / "notes.txt").write_text("x"), "notes.txt"),
        (lambda r: _png(r / "dog" / "a.png") and (r / "dog" / "broken.png").write_text("not a png"), "broken.png"),
        (lambda r: _png(r / "dog" / "a.png") and (r / "cat").mkdir(), "cat"),
        (lambda r: _png(r / "dog" / "a.png") and _png(r / "loose.png"), "loose.png"),
        (lambda r: r.mkdir(parents=True), "empty"),
        (lambda r: r.mkdir(parents=True) or (r / "list.csv").write_text("a"), "list.csv"),
    ],
    ids=["non-image", "corrupt-image", "empty-class", "image-next-to-classes", "empty-folder", "only-non-image"],
)
def test_image_folder_errors_name_the_file(tmp_path: Path, setup, needle: str) -> None:
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=needle.replace(".", r"\.")):
        load_image_folder(root)


def test_image_folder_missing_or_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    f = _png(tmp_path / "one.png")
    with pytest.raises(DataError, match="is a file"):
        load_image_folder(f)
    with pytest.raises(DataError, match="on_bad_input"):
        load_image_folder(tmp_path, on_bad_input="ignore")  # type: ignore[arg-type]


def test_image_folder_extensions_option(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "x.png")
    _png(tmp_path / "b" / "y.png")
    with pytest.raises(DataError, match="x.png"):
        load_image_folder(tmp_path, extensions=["jpg"])


# ------------------------------------------------------------------------------------------------ fingerprints


def test_fingerprint_same_content_same_value_changes_with_pixel_and_label(tmp_path: Path) -> None:
    a = load_image_folder(_folder(tmp_path / "a"))
    b = load_image_folder(_folder(tmp_path / "b"))
    assert a.fingerprint == b.fingerprint
    # one pixel
    img = np.asarray(Image.open(tmp_path / "b" / "cat" / "x.png")).copy()
    img[0, 0, 0] ^= 1
    Image.fromarray(img).save(tmp_path / "b" / "cat" / "x.png")
    assert load_image_folder(tmp_path / "b").fingerprint != a.fingerprint
    # one label: the same file moved to another class
    c = _folder(tmp_path / "c")
    (c / "dog" / "sub" / "c.png").rename(c / "cat" / "zz.png")
    assert load_image_folder(c).fingerprint != a.fingerprint


def test_fingerprint_of_arrays_and_tables() -> None:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(6, 5, 5), dtype=np.uint8)
    y = [0, 1, 0, 1, 1, 0]
    base = from_arrays(X, y).fingerprint
    assert from_arrays(X.copy(), list(y)).fingerprint == base
    X2 = X.copy()
    X2[3, 2, 2] ^= 1
    assert from_arrays(X2, y).fingerprint != base
    assert from_arrays(X, [0, 1, 0, 1, 1, 1]).fingerprint != base
    assert from_arrays(X).fingerprint != base  # labels are part of the content


def test_fingerprint_same_table_in_two_formats(tmp_path: Path) -> None:
    df = pd.DataFrame({"text": ["good", "bad", "meh"], "label": ["pos", "neg", "neg"]})
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    a = load_table(tmp_path / "t.csv", text_column="text", label_column="label")
    b = load_table(tmp_path / "t.tsv", text_column="text", label_column="label")
    assert a.fingerprint == b.fingerprint
    df.loc[2, "label"] = "pos"
    df.to_csv(tmp_path / "u.csv", index=False)
    assert load_table(tmp_path / "u.csv", text_column="text", label_column="label").fingerprint != a.fingerprint


# ------------------------------------------------------------------------------------------------ tables

DF = pd.DataFrame(
    {
        "review": ["great film", "NA", "awful", "fine, I guess", "loved it"],
        "label": ["pos", "neg", "neg", "pos", "pos"],
        "stars": [10, 2, 1, 7, 9],
        "score": [0.91, 0.12, 0.05, 0.6, 0.88],
    }
)


def _write(df: pd.DataFrame, path: Path) -> Path:
    fmt = path.suffix
    if fmt == ".csv":
        df.to_csv(path, index=False)
    elif fmt == ".tsv":
        df.to_csv(path, index=False, sep="\t")
    elif fmt == ".parquet":
        df.to_parquet(path, index=False)
    elif fmt == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif fmt == ".json":
        df.to_json(path, orient="records")
    return path


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".parquet", ".jsonl", ".json"])
def test_table_formats_give_the_same_dataset(tmp_path: Path, ext: str) -> None:
    ds = load_table(_write(DF, tmp_path / f"reviews{ext}"), text_column="review", label_column="label")
    assert ds.modality == "text" and ds.name == "reviews"
    assert ds.items == ["great film", "NA", "awful", "fine, I guess", "loved it"]  # "NA" stays text
    assert ds.class_names == ("neg", "pos")
    assert ds.labels.tolist() == [1, 0, 0, 1, 1]
    ints = load_table(tmp_path / f"reviews{ext}", text_column="review", label_column="stars")
    assert ints.class_names == ("1", "2", "7", "9", "10")  # sorted as numbers
    assert ints.labels.tolist() == [4, 1, 0, 2, 3]
    reg = load_table(tmp_path / f"reviews{ext}", text_column="review", label_column="score")
    assert reg.task == "regression" and reg.labels.dtype == np.float64
    np.testing.assert_allclose(reg.labels, DF["score"])


def test_table_task_option(tmp_path: Path) -> None:
    p = _write(DF, tmp_path / "t.csv")
    reg = load_table(p, text_column="review", label_column="stars", task="regression")
    assert reg.task == "regression" and reg.labels.tolist() == [10.0, 2.0, 1.0, 7.0, 9.0]
    cls = load_table(p, text_column="review", label_column="score", task="classification")
    assert cls.task == "classification" and len(cls.class_names) == 5
    with pytest.raises(DataError, match=r"row 1: column 'label'.*task='classification'"):
        load_table(p, text_column="review", label_column="label", task="regression")
    few = pd.DataFrame({"text": list("abcdefghij"), "y": [0.0, 1.0] * 5})
    auto = load_table(_write(few, tmp_path / "few.parquet"), label_column="y")
    assert auto.class_names == ("0", "1")  # floats with few distinct values are classes under task="auto"


def test_table_unlabelled_and_default_text_column(tmp_path: Path) -> None:
    p = _write(pd.DataFrame({"text": ["a", "b"]}), tmp_path / "t.jsonl")
    ds = load_table(p)
    assert ds.labels is None and ds.items == ["a", "b"]


def test_table_missing_column_lists_columns(tmp_path: Path) -> None:
    p = _write(DF, tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"no column 'text'.*'review', 'label', 'stars', 'score'"):
        load_table(p, text_column="text")
    with pytest.raises(DataError, match=r"no column 'y' \(label_column\)"):
        load_table(p, text_column="review", label_column="y")


@pytest.mark.parametrize("ext", [".csv", ".parquet", ".jsonl"])
def test_table_empty_text_and_missing_label_name_the_row(tmp_path: Path, ext: str) -> None:
    df = pd.DataFrame({"text": ["a", "b", None, "d"], "label": ["x", "y", "x", "y"]})
    p = _write(df, tmp_path / f"t{ext}")
    with pytest.raises(DataError, match=r"row 3: column 'text' is empty"):
        load_table(p, label_column="label")
    df = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [1.0, 2.0, 3.0, float("nan")]})
    p = _write(df, tmp_path / f"u{ext}")
    with pytest.raises(DataError, match=rf"u{ext} row 4: column 'label' has no label"):
        load_table(p, label_column="label")


def test_table_whitespace_text_is_empty(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("text,label\nok,a\n   ,b\n")
    with pytest.raises(DataError, match="row 2"):
        load_table(tmp_path / "t.csv", label_column="label")


def test_table_bad_files(tmp_path: Path) -> None:
    (tmp_path / "latin.csv").write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv is not UTF-8"):
        load_table(tmp_path / "latin.csv")
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl line 2 is not valid JSON"):
        load_table(tmp_path / "bad.jsonl")
    (tmp_path / "header.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="no data rows"):
        load_table(tmp_path / "header.csv")
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(DataError, match=r"blank\.csv is empty"):
        load_table(tmp_path / "blank.csv")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"t\.xlsx.*\.csv"):
        load_table(tmp_path / "t.xlsx")
    with pytest.raises(DataError, match="does not exist"):
        load_table(tmp_path / "missing.csv")
    (tmp_path / "p.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"p\.parquet is not a readable Parquet"):
        load_table(tmp_path / "p.parquet")
    (tmp_path / "list.jsonl").write_text(json.dumps({"text": "a"}) + "\n" + json.dumps(["a", "b"]) + "\n")
    with pytest.raises(DataError, match="row 2 is a list"):
        load_table(tmp_path / "list.jsonl")


# ------------------------------------------------------------------------------------------------ arrays


def test_from_arrays_text_and_labels() -> None:
    ds = from_arrays(["a", "b", "c"], ["dog", "cat", "dog"])
    assert ds.modality == "text" and ds.class_names == ("cat", "dog") and ds.labels.tolist() == [1, 0, 1]
    ds = from_arrays(pd.Series(["a", "b"]), np.array([1, 0]), class_names=["neg", "pos"])
    assert ds.items == ["a", "b"] and ds.labels.tolist() == [1, 0] and ds.class_names == ("neg", "pos")
    ds = from_arrays(np.array(["a", "b"]), ["pos", "neg"], class_names=["neg", "pos"])
    assert ds.labels.tolist() == [1, 0]
    reg = from_arrays(["a", "b", "c"], [0.5, 1.25, 3.0])
    assert reg.task == "regression"
    assert from_arrays(["x"]).task == "unlabelled"


def test_from_arrays_images() -> None:
    X = np.zeros((4, 8, 8), dtype=np.uint8)
    ds = from_arrays(X, [0, 1, 0, 1])
    assert ds.modality == "image" and len(ds) == 4 and ds.items[0].shape == (8, 8)
    ds = from_arrays(np.zeros((2, 8, 8, 3), dtype=np.float32), modality="image")
    assert ds.modality == "image"
    mixed = [np.zeros((5, 6), np.uint8), np.ones((7, 7, 3), np.float64), Image.new("RGB", (3, 3))]
    ds = from_arrays(mixed, ["a", "b", "a"])
    assert ds.modality == "image" and len(ds) == 3 and ds.class_names == ("a", "b")
    ints = from_arrays(np.full((2, 4, 4), 200, dtype=np.int64))
    assert ints.items.dtype == np.uint8


@pytest.mark.parametrize(
    ("X", "kw", "needle"),
    [
        (np.full((2, 4, 4), 2.0), {}, "outside"),
        (np.zeros((2, 3, 8, 8), np.uint8), {}, "channels first"),
        (np.zeros((2, 64)), {}, "flat"),
        (["a", 1], {}, r"X\[1\] is a int"),
        (["a", "b"], {"y": [0]}, "one label per item"),
        (["a", "b"], {"modality": "image"}, "modality='image'"),
        (["a", "b"], {"y": ["x", "z"], "class_names": ["x", "y"]}, r"y\[1\] = 'z'"),
        (["a", "b"], {"y": [1.0, float("nan")]}, r"y\[1\] has no label"),
        ("abc", {}, "single string"),
        ([object()], {}, r"X\[0\] is a object"),
    ],
)
def test_from_arrays_errors(X, kw, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        from_arrays(X, **kw)


# ------------------------------------------------------------------------------------------------ load_data


def test_load_data_dispatch(tmp_path: Path) -> None:
    ds = load_data(_folder(tmp_path / "imgs"))
    assert ds.class_names == ("bird", "cat", "dog")
    ds2 = load_data(str(_write(DF, tmp_path / "t.csv")), text_column="review", label_column="label")
    assert ds2.modality == "text" and len(ds2) == 5
    assert load_data(ds2) is ds2
    assert load_data(["a", "b"], y=[0, 1]).class_names == ("0", "1")
    digits = load_data("bundled:digits")
    assert isinstance(digits, Dataset) and len(digits) == 1797


def test_load_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere.*bundled:NAME"):
        load_data(tmp_path / "nowhere")
    _png(tmp_path / "a" / "x.png")
    _png(tmp_path / "b" / "y.png")
    with pytest.raises(DataError, match=r"image folder .*text_column.*options are: extensions"):
        load_data(tmp_path, text_column="text")
    with pytest.raises(DataError, match="no bundled data set 'nope'"):
        load_data("bundled:nope")
