"""Hugging Face `datasets` folders and WebDataset shards (`transferkit.data.sources`), written by the real libraries
(`datasets`, `webdataset`: test-only dependencies) from real bundled data, read as streams without them."""

import io

import numpy as np
import pytest

from transferkit import datasets as bundled
from transferkit.data import load_data, stratified_sample, stream
from transferkit.data.stream import StreamedItems
from transferkit.errors import DataError

hf = pytest.importorskip("datasets")
wds = pytest.importorskip("webdataset")


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_ROWS", 97)


@pytest.fixture(scope="module")
def sms():
    ds = bundled.load("sms-spam")
    idx = np.arange(600)
    return [ds.items[i] for i in idx], ds.labels[idx], ds.class_names


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    """200 real UCI digits as PNG bytes, ordered by class then position, and as an image folder in that order."""
    from PIL import Image

    ds = bundled.load("digits")
    idx = stratified_sample(ds.labels, 200, seed=0)
    idx = idx[np.lexsort((idx, ds.labels[idx]))]
    root = tmp_path_factory.mktemp("digit_folder")
    pngs = []
    for k, i in enumerate(idx):
        buf = io.BytesIO()
        Image.fromarray(ds.items[i]).save(buf, format="PNG")
        pngs.append(buf.getvalue())
        (root / str(ds.labels[i])).mkdir(exist_ok=True)
        (root / str(ds.labels[i]) / f"{k:04d}.png").write_bytes(pngs[-1])
    return pngs, ds.labels[idx], root


def test_a_hf_text_folder_reads_its_class_names_in_chunks(sms, tmp_path):
    texts, labels, names = sms
    features = hf.Features({"text": hf.Value("string"), "label": hf.ClassLabel(names=list(names))})
    hf.Dataset.from_dict({"text": texts, "label": labels.tolist()}, features=features).save_to_disk(
        tmp_path / "sms", num_shards=3)
    ds = load_data(str(tmp_path / "sms"))
    assert isinstance(ds.items, StreamedItems) and ds.modality == "text" and ds.class_names == names
    assert list(ds.items) == texts and [ds.items[i] for i in range(len(ds))] == texts
    np.testing.assert_array_equal(ds.labels, labels)
    assert load_data(str(tmp_path / "sms")).fingerprint == ds.fingerprint
    assert ds.meta["source"] == "hf_folder" and ds.meta["ids"] == range(1, 601)


def test_a_hf_folder_with_plain_labels_and_bad_rows(sms, tmp_path):
    texts, labels, names = sms
    texts = list(texts)
    texts[10] = "   "
    hf.Dataset.from_dict({"body": texts, "y": [names[i] for i in labels]}).save_to_disk(tmp_path / "d")
    with pytest.raises(DataError, match=r"d row 11: has empty text"):
        load_data(str(tmp_path / "d"), text_column="body", label_column="y")
    ds = load_data(str(tmp_path / "d"), text_column="body", label_column="y", on_bad_input="skip")
    assert len(ds) == 599 and ds.class_names == names and ds.meta["skipped"][0]["id"] == 11
    np.testing.assert_array_equal(ds.labels, np.delete(labels, 10))
    with pytest.raises(DataError, match=r"no column 'text' \(text_column\) and no Image column; its columns are: "
                                        r"'body', 'y'"):
        load_data(str(tmp_path / "d"))


def test_a_hf_dataset_dict_names_its_splits_and_a_missing_class_label_is_bad_input(sms, tmp_path):
    texts, labels, names = sms
    features = hf.Features({"text": hf.Value("string"), "label": hf.ClassLabel(names=list(names))})
    data = hf.Dataset.from_dict({"text": texts[:20], "label": [*labels[:19].tolist(), -1]}, features=features)
    hf.DatasetDict({"train": data, "test": data}).save_to_disk(tmp_path / "dd")
    with pytest.raises(DataError, match=r"holds several splits \(train, test\): give one of them, e\.g\. .*dd/train"):
        load_data(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"train row 20: has no label"):  # -1 is the datasets library's "no label"
        load_data(str(tmp_path / "dd" / "train"))
    kept = load_data(str(tmp_path / "dd" / "train"), on_bad_input="skip")
    assert len(kept) == 19 and kept.meta["skipped"][0]["id"] == 20 and kept.class_names == names


def _extract(data, backbone, out):
    from transferkit.features import extract_features

    return extract_features(backbone, data, out=out, batch_size=32, shard_size=64, precision="fp32",
                            optimize="none", progress=False).features()


def test_a_hf_image_folder_gives_the_image_folders_features(digit_pngs, lite0_small, tmp_path):
    pngs, labels, folder = digit_pngs
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=[str(c) for c in range(10)])})
    hf.Dataset.from_dict({"image": [{"bytes": b, "path": None} for b in pngs], "label": labels.tolist()},
                         features=features).save_to_disk(tmp_path / "digits", num_shards=2)
    ds = load_data(str(tmp_path / "digits"))
    assert ds.modality == "image" and ds.class_names == tuple(str(c) for c in range(10))
    assert ds.items[3] == pngs[3]  # an item is its encoded image, decoded when used: no pixels are held
    np.testing.assert_array_equal(ds.labels, labels)
    reference = load_data(str(folder))
    np.testing.assert_array_equal(ds.labels, reference.labels)
    np.testing.assert_array_equal(_extract(ds, lite0_small, tmp_path / "a"),
                                  _extract(reference, lite0_small, tmp_path / "b"))
    assert ds.items.passes == 1  # extraction read the arrow files once, in order


def _write_shards(folder, samples, maxcount=70):
    folder.mkdir()
    with wds.ShardWriter(str(folder / "part-%04d.tar"), maxcount=maxcount, verbose=0) as sink:
        for sample in samples:
            sink.write(sample)


def test_webdataset_image_shards_give_the_image_folders_features(digit_pngs, lite0_small, tmp_path):
    pngs, labels, folder = digit_pngs
    _write_shards(tmp_path / "shards", ({"__key__": f"s{k:05d}", "png": b, "cls": str(int(y)).encode()}
                                        for k, (b, y) in enumerate(zip(pngs, labels))))
    assert len(list((tmp_path / "shards").glob("*.tar"))) == 3
    ds = load_data(str(tmp_path / "shards"))
    assert ds.modality == "image" and len(ds) == 200
    assert ds.meta["label_column"] == "cls" and ds.meta["text_column"] == "png"
    assert ds.class_names == tuple(str(c) for c in range(10))
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_array_equal(_extract(ds, lite0_small, tmp_path / "a"),
                                  _extract(load_data(str(folder)), lite0_small, tmp_path / "b"))
    one = load_data(str(tmp_path / "shards" / "part-0001.tar"))  # one shard alone
    assert len(one) == 70 and [one.class_names[i] for i in one.labels] == [str(y) for y in labels[70:140]]


def test_webdataset_text_shards_and_bad_samples(sms, tmp_path):
    texts, labels, names = sms
    samples = [{"__key__": f"m{k:05d}", "txt": t.encode(), "label": names[y].encode()}
               for k, (t, y) in enumerate(zip(texts, labels))]
    samples[5] = {"__key__": "m00005", "txt": b"", "label": b"ham"}
    _write_shards(tmp_path / "sms", samples, maxcount=250)
    with pytest.raises(DataError, match=r"sms sample 6: has empty text"):
        load_data(str(tmp_path / "sms"))
    ds = load_data(str(tmp_path / "sms"), on_bad_input="skip")
    assert ds.modality == "text" and ds.class_names == names and len(ds) == 599
    assert list(ds.items) == texts[:5] + texts[6:]
    np.testing.assert_array_equal(ds.labels, np.delete(labels, 5))
    broken = [{"__key__": "a", "png": b"not a png", "cls": b"1"}, {"__key__": "b", "png": b"", "cls": b"2"}]
    _write_shards(tmp_path / "broken", broken)
    with pytest.raises(DataError, match=r"broken sample 1: cannot be read as an image"):
        load_data(str(tmp_path / "broken"))


def test_the_cli_extracts_a_hf_folder(sms, tmp_path):
    from typer.testing import CliRunner

    from transferkit.cli import app

    texts, labels, names = sms
    features = hf.Features({"text": hf.Value("string"), "label": hf.ClassLabel(names=list(names))})
    hf.Dataset.from_dict({"text": texts[:120], "label": labels[:120].tolist()}, features=features).save_to_disk(
        tmp_path / "sms")
    r = CliRunner().invoke(app, ["extract", "--data", str(tmp_path / "sms"), "--out", str(tmp_path / "f"),
                                 "--precision", "fp32"])
    assert r.exit_code == 0, r.output
    assert "120 labelled items × 384 features" in r.output
