"""Save and load fitted heads as safetensors (arrays) + JSON (everything else); never pickle.

A saved head is a folder with ``head.json`` and ``arrays.safetensors``. Loading rebuilds the predictor
from its arrays through a fixed table of predictor kinds, so a file handed in by someone else can
carry data but never code. A loaded head predicts exactly like the head that was saved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from transferkit.errors import HeadError, TransferkitError
from transferkit.heads.base import FittedHead
from transferkit.heads.knn import KNNPredictor
from transferkit.heads.linear import LinearPredictor
from transferkit.heads.logreg import LogisticProbe
from transferkit.heads.rbf import KernelSVMPredictor
from transferkit.io import inside, write_arrays, write_json

FORMAT = "transferkit.head"
VERSION = 1
META_FILE = "head.json"
ARRAYS_FILE = "arrays.safetensors"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".bin", ".ckpt")
PREDICTORS: dict[str, Any] = {
    cls.kind: cls for cls in (LogisticProbe, LinearPredictor, KernelSVMPredictor, KNNPredictor)
}


def head_state(head: FittedHead) -> tuple[dict[str, np.ndarray], dict]:
    """(numeric arrays, JSON document) that rebuild `head`: what `save_head` writes, and what a probe model folder
    keeps (its arrays in model.safetensors, its document in model.json)."""
    kind = getattr(head.predictor, "kind", None)
    if kind not in PREDICTORS:
        raise HeadError(f"cannot save a head with predictor {type(head.predictor).__name__}; fit it with fit_head")
    arrays, meta = head.predictor.state()
    numeric, strings = {}, {}
    for key, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.kind in "biuf":
            numeric[key] = np.ascontiguousarray(arr)
        else:
            strings[key] = [str(v) for v in arr.tolist()]
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "predictor": kind,
        "predictor_meta": meta,
        "string_arrays": strings,
        "head": head.summary(),
    }
    return numeric, doc


def head_from_state(arrays: dict[str, np.ndarray], doc: Any, where: str = "the head") -> FittedHead:
    """Rebuild a working head from `head_state` output (no pickle, no code from the file)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise HeadError(f"{where} is not a {FORMAT} v{VERSION} head; save the head again with save_head")
    kind = doc.get("predictor")
    if kind not in PREDICTORS:
        raise HeadError(f"{where} names unknown predictor {kind!r}; expected one of: {', '.join(PREDICTORS)}")
    arrays = dict(arrays)
    for key, values in doc.get("string_arrays", {}).items():
        arrays[key] = np.asarray(values)
    try:
        predictor = PREDICTORS[kind].from_state(arrays, doc["predictor_meta"])
        predictor.predict(np.zeros((1, int(predictor.n_features_in_))))  # arrays that do not fit together fail here
        info = doc["head"]
        return FittedHead(
            name=info["name"],
            task=info["task"],
            predictor=predictor,
            params=info["params"],
            val_score=float(info["val_score"]),
            metric=info["metric"],
            val_scores=info["val_scores"],
            fit_time_s=float(info["fit_time_s"]),
            requested=info["requested"],
            candidates=info["candidates"],
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, TransferkitError) as exc:
        raise HeadError(f"{where} is incomplete or inconsistent ({exc!r}); save it again with save_head") from None


def save_head(head: FittedHead, path: str | os.PathLike[str]) -> Path:
    """Write ``head`` to folder ``path`` (created if missing) as head.json + arrays.safetensors; returns the folder."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise HeadError(f"cannot save head to {folder}: it is a file; pass a folder path")
    numeric, doc = head_state(head)
    folder.mkdir(parents=True, exist_ok=True)
    write_arrays(folder / ARRAYS_FILE, numeric)
    write_json(folder / META_FILE, doc)
    return folder


def load_head(path: str | os.PathLike[str]) -> FittedHead:
    """Read a folder written by :func:`save_head` and rebuild a working head (no pickle, no code from the file)."""
    folder = Path(path)
    meta_path, arrays_path = folder / META_FILE, folder / ARRAYS_FILE
    if not meta_path.is_file() or not arrays_path.is_file():
        files = folder.glob("*") if folder.is_dir() else []
        pickles = sorted(p.name for p in files if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise HeadError(f"{folder} holds {pickles[0]}, a pickle: transferkit never loads pickled heads (unpickling "
                            f"can execute code); fit the head again and save it with save_head")
        raise HeadError(f"{folder} is not a saved head (needs {META_FILE} and {ARRAYS_FILE}); write one with save_head")
    for file in (meta_path, arrays_path):
        if inside(folder, file.name) is None:
            raise HeadError(f"{file} points outside the head folder {folder}: refusing to read it; save the head again")
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
        arrays: dict[str, np.ndarray] = load_file(str(arrays_path))
    except (OSError, ValueError, SafetensorError) as exc:
        raise HeadError(f"cannot read saved head {folder}: {exc}; save it again with save_head") from None
    return head_from_state(arrays, doc, str(meta_path))
