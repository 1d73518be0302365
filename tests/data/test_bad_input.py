"""`on_bad_input`: fail with the item's name (default), or skip it and list what was skipped."""

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from transferkit.backbones.preprocess import to_pil
from transferkit.data import load_image_folder, load_table
from transferkit.errors import DataError


def _png_bytes(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _folder(root: Path) -> dict[str, Path]:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.png").write_bytes(_png_bytes(i))
    bad = {
        "zero": root / "a" / "zero.png",
        "truncated": root / "a" / "truncated.png",
        "text": root / "b" / "notes.txt",
        "garbage": root / "b" / "garbage.jpg",
    }
    bad["zero"].write_bytes(b"")
    bad["truncated"].write_bytes(_png_bytes(9)[:60])
    bad["text"].write_text("not an image")
    bad["garbage"].write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    return bad


def test_skip_leaves_out_every_bad_file_and_lists_it(tmp_path):
    bad = _folder(tmp_path)
    ds = load_image_folder(tmp_path, on_bad_input="skip")
    assert len(ds) == 6 and sorted(np.bincount(ds.labels)) == [3, 3]
    assert {Path(s["item"]) for s in ds.meta["skipped"]} == set(bad.values())
    assert all(s["reason"] for s in ds.meta["skipped"])
    for item in ds.items:  # everything kept decodes
        to_pil(item)


def test_fail_names_the_first_bad_file(tmp_path):
    _folder(tmp_path)
    with pytest.raises(DataError) as info:
        load_image_folder(tmp_path)
    assert "zero.png" in str(info.value) or "garbage.jpg" in str(info.value) or "notes.txt" in str(info.value)


def test_truncated_image_fails_at_extraction_naming_the_file(tmp_path):
    bad = tmp_path / "t.png"
    bad.write_bytes(_png_bytes(1)[:60])
    with pytest.raises(DataError, match="t.png"):
        to_pil(bad)


def test_table_rows_without_text_or_label_are_skipped_and_listed(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("text,label\ngood one,pos\n,neg\nbad one,\nfine,neg\n")
    with pytest.raises(DataError, match="row 2"):
        load_table(csv, label_column="label")
    ds = load_table(csv, label_column="label", on_bad_input="skip")
    assert list(ds.items) == ["good one", "fine"] and list(ds.class_names) == ["neg", "pos"]
    assert [s["item"].rsplit(" ", 1)[-1] for s in ds.meta["skipped"]] == ["2", "3"]


@settings(max_examples=25)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5))
def test_random_bytes_never_crash_the_loader(tmp_path_factory, blobs):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "c").mkdir()
    (root / "c" / "ok.png").write_bytes(_png_bytes())
    for i, blob in enumerate(blobs):
        (root / "c" / f"f{i}.png").write_bytes(blob)
    ds = load_image_folder(root, on_bad_input="skip")
    assert len(ds) + len(ds.meta["skipped"]) == len(blobs) + 1
    for item in ds.items:
        to_pil(item)
    # fail mode reads headers only: a file whose header is not an image is a DataError naming it; with no such
    # file the folder loads (a later-truncated one fails at extraction, naming the file)
    def header_ok(path):
        try:
            with Image.open(path):
                return True
        except Exception:  # noqa: BLE001 — whatever PIL raises, the header is not an image
            return False

    bad_headers = {p.name for p in (root / "c").iterdir() if not header_ok(p)}
    assert bad_headers <= {Path(s["item"]).name for s in ds.meta["skipped"]}
    if bad_headers:
        with pytest.raises(DataError) as err:
            load_image_folder(root)
        assert Path(str(err.value).split(":")[0]).name in bad_headers, (str(err.value), bad_headers)
    else:
        assert len(load_image_folder(root)) == len(blobs) + 1
