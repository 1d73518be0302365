"""A model's own test split, read again from the data it was trained on (when model.json says where they are and
they have not changed): what `export` checks an export on and measures int8 quantisation against."""

from __future__ import annotations

from typing import Any

from transferkit.errors import TransferkitError
from transferkit.model.info import ModelInfo


def own_test_split(info: ModelInfo) -> tuple[Any, str]:
    """(the test items of the model's training data as a Dataset, a description), or (None, why not)."""
    from transferkit.data import load_data, stratified_sample
    from transferkit.data.loaders import AUTO, has_columns

    d = info.data or {}
    src, split = d.get("source"), d.get("split") or {}
    if not src:
        return None, "nothing: model.json does not say where its training data are (give --data)"
    if split.get("test_fraction") in (None, 0) or split.get("seed") is None:
        return None, "nothing: the model was trained without a test split (give --data)"
    kw: dict = {}
    if not str(src).startswith("bundled:") and has_columns(src):
        kw = {"text_column": d.get("text_column") or "text", "label_column": d.get("label_column") or AUTO}
    try:
        ds = load_data(src, **kw)
    except TransferkitError as e:
        return None, f"nothing: its training data {src} cannot be read now ({e}); give --data"
    if d.get("sample") and d["sample"] < len(ds):
        ds = ds.subset(stratified_sample(ds.labels, d["sample"], seed=split["seed"]))
    if ds.fingerprint != d.get("fingerprint"):
        return None, f"nothing: {src} has changed since the model was trained (give --data)"
    test = own_test_part(info, ds)
    return test, f"its own test split ({len(test)} items of {src})"


def own_test_part(info: ModelInfo, ds: Any) -> Any:
    """The test part of `ds` (the model's training data) by the split model.json records; None without one."""
    from transferkit.data import stratified_split

    split = (info.data or {}).get("split") or {}
    if not split.get("test_fraction") or split.get("seed") is None or ds.labels is None:
        return None
    parts = stratified_split(ds.labels, val=split.get("val_fraction") or 0.0, test=split["test_fraction"],
                             seed=split["seed"], class_names=ds.class_names or None)
    return ds.subset(parts.test, name=f"{ds.name}-test")
