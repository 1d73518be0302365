"""Tables read in chunks (`transferkit.data.stream`): the same data set as the whole-file reader, read in one ordered
pass by extraction, never held whole."""

import gzip
import pickle

import numpy as np
import pandas as pd
import pytest

from transferkit import datasets
from transferkit.data import load_data, load_table, stream
from transferkit.data.stream import StreamedItems
from transferkit.errors import DataError

CHUNK = 97  # many chunks, none aligned with shards or batches


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_ROWS", CHUNK)


@pytest.fixture(scope="module")
def sms_frame():
    """1,000 real SMS messages (ham/spam) with a few bad rows: empty texts and, in CSV, missing labels."""
    ds = datasets.load("sms-spam")
    df = pd.DataFrame({"text": list(ds.items[:1000]), "label": [ds.class_names[y] for y in ds.labels[:1000]],
                       "score": np.round(np.random.default_rng(0).normal(size=1000), 3), "id": np.arange(1000)})
    df.loc[[5, 300, 301, 999], "text"] = ["", "   ", "", " "]
    return df


def _write(df: pd.DataFrame, path):
    name = path.name
    if name.endswith((".csv", ".csv.gz")):
        df.to_csv(path, index=False)
    elif name.endswith(".tsv"):
        df.to_csv(path, index=False, sep="\t")
    elif name.endswith(".parquet"):
        df.to_parquet(path, row_group_size=250)
    else:
        text = df.to_json(orient="records", lines=True)
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    return path


def _same(a, b):
    assert isinstance(b.items, StreamedItems) and not isinstance(a.items, StreamedItems)
    assert len(a) == len(b)
    assert list(a.items) == list(b.items) == [b.items[i] for i in range(len(b))]
    assert (a.labels is None) == (b.labels is None)
    if a.labels is not None:
        assert a.labels.dtype == b.labels.dtype
        np.testing.assert_array_equal(a.labels, b.labels)
    assert a.class_names == b.class_names
    assert a.meta["skipped"] == b.meta["skipped"]
    assert list(a.meta["ids"]) == list(b.meta["ids"])
    assert a.fingerprint == b.fingerprint


@pytest.mark.parametrize("name", ["t.csv", "t.tsv", "t.csv.gz", "t.parquet", "t.jsonl", "t.jsonl.gz"])
@pytest.mark.parametrize("label_column", ["auto", "label", "score", "id", None])
def test_streamed_table_is_the_whole_file_table(sms_frame, tmp_path, name, label_column):
    path = _write(sms_frame, tmp_path / name)
    kw = {"label_column": label_column, "on_bad_input": "skip"}
    whole, streamed = load_table(path, stream=False, **kw), load_table(path, stream=True, **kw)
    _same(whole, streamed)
    assert len(streamed) == 996 and len(streamed.meta["skipped"]) == 4
    if label_column in ("auto", "label"):
        assert streamed.class_names == ("ham", "spam")
    if label_column == "score":
        assert streamed.task == "regression"


def test_numbers_in_a_csv_label_column_merge_as_the_whole_file_reader_merges_them(tmp_path):
    df = pd.DataFrame({"text": [f"t{i}" for i in range(400)], "label": ["1", "1.0", "2", "02"] * 100})
    path = _write(df, tmp_path / "n.csv")
    whole, streamed = load_table(path, label_column="label", stream=False), load_table(path, label_column="label",
                                                                                       stream=True)
    _same(whole, streamed)
    assert streamed.class_names == ("1", "2")


def test_a_streamed_table_with_no_bad_rows_keeps_no_row_list(sms_frame, tmp_path):
    path = _write(sms_frame[sms_frame.text.str.strip() != ""], tmp_path / "ok.parquet")
    ds = load_table(path, stream=True)
    assert ds.meta["ids"] == range(1, 997)  # O(1) memory, however many rows
    sub = ds.subset([3, 1])
    assert list(sub.meta["ids"]) == [4, 2] and sub.items == [ds.items[3], ds.items[1]]


@pytest.mark.parametrize("name", ["t.csv", "t.parquet", "t.jsonl"])
def test_errors_name_the_same_row_as_the_whole_file_reader(sms_frame, tmp_path, name):
    path = _write(sms_frame, tmp_path / name)
    for kw in ({"on_bad_input": "fail"}, {"text_column": "body"}, {"label_column": "lbl"}):
        with pytest.raises(DataError) as whole:
            load_table(path, stream=False, **kw)
        with pytest.raises(DataError) as streamed:
            load_table(path, stream=True, **kw)
        assert str(streamed.value) == str(whole.value)
    assert "row 6" in str(whole.value) or "lbl" in str(whole.value)


def test_bad_files_fail_in_one_line_when_streamed(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b"\n')
    with pytest.raises(DataError, match=r"line 2 is not valid JSON"):
        load_table(tmp_path / "bad.jsonl", stream=True)
    (tmp_path / "nolabel.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"row 2: column 'label' has no label"):
        load_table(tmp_path / "nolabel.jsonl", label_column="auto", stream=True)
    (tmp_path / "latin.csv").write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_table(tmp_path / "latin.csv", stream=True)
    (tmp_path / "array.json").write_text('[{"text": "a"}]')
    with pytest.raises(DataError, match="JSON lines"):
        load_table(tmp_path / "array.json", stream=True)
    assert not isinstance(load_table(tmp_path / "array.json", stream="auto").items, StreamedItems)
    with pytest.raises(DataError, match="stream='always'"):
        load_table(tmp_path / "array.json", stream="always")


def test_auto_streams_files_over_the_threshold(sms_frame, tmp_path, monkeypatch):
    path = _write(sms_frame, tmp_path / "t.csv")
    assert not isinstance(load_data(str(path), on_bad_input="skip").items, StreamedItems)
    monkeypatch.setattr(stream, "STREAM_ABOVE_BYTES", path.stat().st_size - 1)
    assert isinstance(load_data(str(path), on_bad_input="skip").items, StreamedItems)


def test_reading_in_order_reads_the_file_once_and_holds_two_chunks(sms_frame, tmp_path):
    items = load_table(_write(sms_frame, tmp_path / "t.csv"), stream=True, on_bad_input="skip").items
    held = 0
    for i in range(len(items)):
        items[i]
        held = max(held, len(items._cache))
    assert items.passes == 1 and held == 2
    items[0]  # going back starts the file again
    assert items.passes == 2
    picked = items.take([900, 3, 500, 3])  # scattered indices, read in order: on from chunk 0, no new pass
    assert items.passes == 2 and picked == [items[900], items[3], items[500], items[3]]
    assert items[-1] == items[len(items) - 1] and items[10:13] == [items[10], items[11], items[12]]
    with pytest.raises(IndexError):
        items[len(items)]
    again = pickle.loads(pickle.dumps(items))  # DataLoader workers receive a copy
    assert list(again) == list(items)


def test_extracting_a_streamed_table_equals_the_whole_file_and_reads_it_once(sms_frame, tmp_path, tiny_bert):
    from transferkit.backbones import load_backbone
    from transferkit.features import extract_features

    path = _write(sms_frame, tmp_path / "t.parquet")
    whole, streamed = (load_table(path, stream=s, on_bad_input="skip") for s in (False, True))
    bb = load_backbone(f"hf:{tiny_bert}")
    a = extract_features(bb, whole, out=tmp_path / "a", batch_size=16, shard_size=128, precision="fp32",
                         progress=False)
    b = extract_features(bb, streamed, out=tmp_path / "b", batch_size=16, shard_size=128, precision="fp32",
                         progress=False)
    assert streamed.items.passes == 1  # shard after shard, each chunk read once
    assert a.key == b.key and a.meta["n_shards"] == 8
    for i in range(a.meta["n_shards"]):
        assert (tmp_path / "a" / f"shard-{i:05d}.safetensors").read_bytes() == \
            (tmp_path / "b" / f"shard-{i:05d}.safetensors").read_bytes()


def test_awkward_files_read_as_the_whole_file_reader_reads_them(tmp_path):
    (tmp_path / "ragged.csv").write_text("text,label\na,1\nb,2,extra\n")
    messages = []
    for s in (False, True):
        with pytest.raises(DataError) as e:
            load_table(tmp_path / "ragged.csv", label_column="label", stream=s)
        messages.append(str(e.value))
    assert messages[0] == messages[1] and "not a valid CSV" in messages[0]
    # ints with a null (in a row skipped for its empty text): pandas reads the column as floats, and so do we
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, ints = ["", *[f"t{i}" for i in range(59)]], [None, *range(59)]
    pq.write_table(pa.table({"text": texts, "label": pa.array(ints, pa.int64())}), tmp_path / "n.parquet")
    df = pd.DataFrame({"text": texts, "label": pd.array(ints, dtype="Int64")}, index=pd.Index(range(60), name="idx"))
    df.to_parquet(tmp_path / "i.parquet")  # pandas' nullable ints, and its index stored as a column
    for name, task in (("n.parquet", "regression"), ("i.parquet", "classification")):
        whole, streamed = (load_table(tmp_path / name, label_column="label", on_bad_input="skip", stream=s)
                           for s in (False, True))
        _same(whole, streamed)
        assert whole.task == task
        with pytest.raises(DataError) as a:
            load_table(tmp_path / name, label_column="nope", stream=False)
        with pytest.raises(DataError) as b:
            load_table(tmp_path / name, label_column="nope", stream=True)
        assert str(a.value) == str(b.value)  # the stored index is no column in either
    # a raw U+2028 or U+0085 inside a JSON string is text, not the end of a line
    lines = ['{"text": "one\u2028two", "label": "a"}', '{"text": "x\u0085y", "label": "b"}', '[1]']
    (tmp_path / "odd.jsonl").write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    whole, streamed = (load_table(tmp_path / "odd.jsonl", label_column="auto", stream=s) for s in (False, True))
    _same(whole, streamed)
    assert list(streamed.items) == ["one\u2028two", "x\u0085y"]
    (tmp_path / "list.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="row 3 is a list"):
        load_table(tmp_path / "list.jsonl", stream=True)
    with pytest.raises(DataError, match="row 3 is a list"):
        load_table(tmp_path / "list.jsonl", stream=False)


def test_a_forked_worker_reads_with_its_own_reader_and_a_changed_file_is_refused(sms_frame, tmp_path):
    import multiprocessing

    path = _write(sms_frame, tmp_path / "t.csv")
    items = load_table(path, stream=True, on_bad_input="skip").items
    first = items[0]  # the parent's reader is open, part way through the file
    with multiprocessing.get_context("fork").Pool(2) as pool:
        got = pool.map(items.__getitem__, [900, 0, 450, 3])
    assert got == [items[900], first, items[450], items[3]]
    _write(sms_frame.iloc[::2], path)  # rewritten under it: its chunks no longer hold their rows
    items._cache.clear()
    items._chunks = None
    with pytest.raises(DataError, match="changed since it was loaded"):
        items[5]
