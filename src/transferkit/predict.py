"""Batch prediction with any model folder: raw items in, one CSV row per item out (never a silent gap).

Items the loader already left out (`--on-bad-input skip`) and items that fail while being read for the model get
a row of their own that says why; the others get the prediction and a probability (or, for heads without
probabilities, a decision score) per class. With labels, the predictions are scored.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.dataset import Dataset
from transferkit.data.loaders import check_on_bad_input
from transferkit.errors import DataError
from transferkit.io import atomic_write
from transferkit.model import LoadedModel

#: items sent to the model at once; a chunk with a bad item is retried item by item when skipping
CHUNK = 512


def item_ids(data: Dataset) -> list[Any]:
    """How the CSV names each item: the table's row number, the image's path, or its position."""
    ids = data.meta.get("ids")
    if ids is not None and len(ids) == len(data):
        return list(ids)
    return [str(x) if isinstance(x, (str, Path)) and data.modality == "image" else i
            for i, x in enumerate(data.items)]


def predict_items(model: LoadedModel, items: Sequence[Any], *, batch_size: int = 64, on_bad_input: str = "fail",
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[str | None]]:
    """Outputs for every item (NaN rows where an item could not be read) and, per item, why it could not be
    (None when it was predicted). With on_bad_input="fail" the first bad item raises its DataError."""
    check_on_bad_input(on_bad_input)
    if batch_size < 1:
        raise DataError(f"--batch-size {batch_size}: give at least 1")
    n = len(items)
    width = len(model.class_names) if model.info.is_classifier else 0
    out = np.full((n, width) if width else (n,), np.nan)
    errors: list[str | None] = [None] * n
    for start in range(0, n, CHUNK):
        chunk = list(items[start: start + CHUNK])
        try:
            out[start: start + len(chunk)] = model.outputs(chunk, batch_size)
        except DataError:
            if on_bad_input == "fail":
                raise
            for j, item in enumerate(chunk):  # find the bad ones; the rest are predicted as usual
                try:
                    out[start + j] = model.outputs([item], batch_size)[0]
                except DataError as e:
                    errors[start + j] = str(e)
        if progress is not None:
            progress(len(chunk))
    return out, errors


def write_predictions(model: LoadedModel, data: Dataset, out: str | Path, *, batch_size: int = 64,
                      on_bad_input: str = "fail", progress: bool = False) -> dict:
    """Write a CSV of predictions for `data` (see the module docstring); score them when `data` has labels.

    Returns {"n": items predicted, "skipped": items that got an error row, "out": path, and the scores}."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(data), desc="predict", unit="item", disable=not progress, leave=False)
    try:
        outputs, errors = predict_items(model, list(data.items), batch_size=batch_size, on_bad_input=on_bad_input,
                                        progress=bar.update)
    finally:
        bar.close()
    ids = item_ids(data)
    skipped = list(data.meta.get("skipped") or [])
    classes = model.class_names
    header = ["id", "prediction"]
    if model.info.is_classifier:
        header += [f"{'p' if model.has_proba else 'score'}_{c}" for c in classes]
    if skipped or any(errors):
        header.append("error")
    rows: list[list[Any]] = []
    for i in range(len(data)):
        if errors[i] is not None:
            rows.append([ids[i], "", *[""] * (len(header) - 3), errors[i]])
            continue
        if model.info.is_classifier:
            row = [ids[i], classes[int(np.argmax(outputs[i]))], *[f"{p:.6f}" for p in outputs[i]]]
        else:
            row = [ids[i], f"{outputs[i]:.6g}"]
        rows.append(row + ([""] if len(header) > len(row) else []))
    for s in skipped:  # left out while loading: still one row each, saying why
        rows.append([s.get("id", s["item"]), "", *[""] * (len(header) - 3), s["reason"]])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    atomic_write(out, lambda p: p.write_text(buf.getvalue(), encoding="utf-8"))
    ok = np.asarray([e is None for e in errors])
    summary: dict[str, Any] = {"n": int(ok.sum()), "skipped": len(skipped) + int((~ok).sum()), "out": str(out)}
    if data.labels is not None and ok.any():
        summary.update(score(model, data, outputs, ok))
    return summary


def score(model: LoadedModel, data: Dataset, outputs: np.ndarray, ok: np.ndarray) -> dict:
    """Scores of the predicted items against the data's labels; labels the model never saw are an error."""
    from transferkit.heads.metrics import score_all

    if not model.info.is_classifier:
        if data.class_names:
            raise DataError("the data have class labels but the model predicts values: drop the label column")
        return score_all("regression", np.asarray(data.labels, float)[ok], outputs[ok])
    if not data.class_names:
        raise DataError("the data have real-valued labels but the model predicts classes: drop the label column")
    known = {c: i for i, c in enumerate(model.class_names)}
    names = [data.class_names[int(v)] for v in np.asarray(data.labels)[ok]]
    unseen = sorted({n for n in names if n not in known})
    if unseen:
        raise DataError(f"the data have labels the model never trained on: {unseen[:5]} (its classes: "
                        f"{model.class_names[:10]}); remove those rows or drop the label column")
    return score_all("classification", np.array([known[n] for n in names]), outputs[ok].argmax(1))
