"""The feature store: features in safetensors shards keyed by (backbone + weights, preprocessing, data).

A *feature set* is one folder: `meta.json` (key, backbone identity, data description, shard layout,
`complete` flag), `labels.safetensors`, and `shard-NNNNN.safetensors` files each written atomically.
A *store* is a root folder of feature sets named by their key (the default cache).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from transferkit.errors import FeatureStoreError
from transferkit.io import inside, read_arrays, read_json, write_arrays, write_json
from transferkit.runtime import cache_dir

if TYPE_CHECKING:
    from transferkit.data.dataset import Dataset

FORMAT = 1
#: how features can be stored: numpy dtype, safetensors' name for it, bytes per value. float16 halves disk and, read
#: with `features(dtype=np.float16)`, memory; values beyond ±65504 do not fit and are refused when written
STORE_DTYPES = {"float32": (np.float32, "F32", 4), "float16": (np.float16, "F16", 2)}


def check_store_dtype(store_dtype: str) -> str:
    """`store_dtype` if it is one the store writes, else a FeatureStoreError naming them."""
    if store_dtype not in STORE_DTYPES:
        raise FeatureStoreError(f"store dtype {store_dtype!r} is not one of {', '.join(STORE_DTYPES)}")
    return store_dtype


def default_cache_dir() -> Path:
    """`$TRANSFERKIT_CACHE`, else `$XDG_CACHE_HOME/transferkit`, else `~/.cache/transferkit` (`runtime.cache_dir`)."""
    return cache_dir()


def feature_key(backbone_identity: dict, data_fingerprint: str, precision: str, store_dtype: str = "float32") -> str:
    """The cache key: a hash of what the features depend on, and nothing else.

    bf16 keys carry a marker ("weights") that the earlier versions' keys lack: on the CPU bf16 features now come from
    a bf16 copy of the model (`inference.native_bf16`), which rounds differently from the autocast path those
    versions used, so their cached features are computed again rather than mixed with new ones. (On CUDA, bf16
    features still come from autocast; the key does not tell devices apart, and never did.) Features stored in
    float16 are keyed apart from float32 ones (float32 keys are those of earlier versions)."""
    payload = {"backbone": backbone_identity, "data": data_fingerprint, "precision": precision}
    if precision == "bf16":
        payload["bf16"] = "weights"
    if check_store_dtype(store_dtype) != "float32":
        payload["store_dtype"] = store_dtype
    blob = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def shard_name(i: int) -> str:
    """File name of shard `i`."""
    return f"shard-{i:05d}.safetensors"


@dataclass
class FeatureSet:
    """A folder of cached features (see module docstring); read shard by shard or all at once."""

    path: Path
    meta: dict

    @classmethod
    def open(cls, path: str | Path, *, require_complete: bool = True) -> FeatureSet:
        """Open the feature set at `path`; raises FeatureStoreError when missing or (by default) incomplete."""
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.exists():
            raise FeatureStoreError(f"{path} holds no features (no meta.json): run `transferkit extract --out {path}`")
        try:
            meta = read_json(meta_file)
        except (OSError, ValueError) as e:
            raise FeatureStoreError(f"{meta_file} is unreadable ({e}): delete {path} and extract again") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise FeatureStoreError(f"{path} was written by another transferkit version: extract again")
        _check_meta(meta, meta_file)
        fs = cls(path, meta)
        if require_complete and not fs.complete:
            done = len(fs.done_shards())
            raise FeatureStoreError(
                f"{path} is incomplete ({done}/{meta['n_shards']} shards): rerun the same extract to finish it"
            )
        return fs

    @property
    def key(self) -> str:
        """The cache key the set was written under."""
        return self.meta["key"]

    @property
    def complete(self) -> bool:
        """Whether every shard is written."""
        return bool(self.meta.get("complete")) and len(self.done_shards()) == self.meta["n_shards"]

    @property
    def n_items(self) -> int:
        """How many items (rows) the set covers."""
        return int(self.meta["n_items"])

    @property
    def feature_dim(self) -> int:
        """Feature width D."""
        return int(self.meta["feature_dim"])

    @property
    def class_names(self) -> list[str]:
        """Names of the class ids (empty for regression/unlabelled)."""
        return list(self.meta["data"].get("class_names", []))

    @property
    def store_dtype(self) -> str:
        """How the features are stored on disk: "float32" (the default) or "float16"."""
        return str(self.meta.get("store_dtype", "float32"))

    @property
    def task(self) -> str:
        """classification, regression or unlabelled."""
        return self.meta["data"]["task"]

    def done_shards(self) -> list[int]:
        """Indices of shards present on disk."""
        return [i for i in range(self.meta["n_shards"]) if (self.path / shard_name(i)).exists()]

    def shard_intact(self, i: int) -> bool:
        """Whether shard `i` is a whole safetensors file of the expected shape (header and size only, no data read).

        Our writes are atomic, so a torn shard can only come from elsewhere (a copy, a full disk, a crash
        without fsync); resuming recomputes such a shard instead of trusting it.
        """
        file = self.path / shard_name(i)
        start, stop = self.shard_bounds(i)
        _, code, width = STORE_DTYPES[self.store_dtype]
        nbytes = (stop - start) * self.feature_dim * width
        try:
            with open(file, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                if not 0 < n < 1 << 20:
                    return False
                info = json.loads(f.read(n))["features"]
            return (info["dtype"] == code and info["shape"] == [stop - start, self.feature_dim]
                    and info["data_offsets"] == [0, nbytes] and file.stat().st_size == 8 + n + nbytes)
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def remove_temp_files(self) -> list[Path]:
        """Delete temp files that killed writers left behind; call only while holding the folder's lock."""
        stale = sorted(self.path.glob(".*.tmp"))
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def shard_bounds(self, i: int) -> tuple[int, int]:
        """Item range [start, stop) of shard `i`."""
        size = self.meta["shard_size"]
        return i * size, min((i + 1) * size, self.n_items)

    def iter_shards(self, dtype: type = np.float32) -> Iterator[np.ndarray]:
        """Each shard's (n_i, D) features in order, as `dtype`: memory bounded by one shard."""
        for i in range(self.meta["n_shards"]):
            yield self.read_shard(i, dtype)

    def file(self, name: str) -> Path:
        """The file `name` of this set; FeatureStoreError when it resolves outside the folder (e.g. a symlink)."""
        target = inside(self.path, name)
        if target is None:
            raise FeatureStoreError(f"{self.path / name} points outside the feature folder {self.path}: refusing "
                                    "to read it; delete the folder and extract again")
        return target

    def read_shard(self, i: int, dtype: type = np.float32) -> np.ndarray:
        """Features of shard `i`, as `dtype` (float32 by default, whatever they are stored in)."""
        file = self.file(shard_name(i))
        try:
            arr = read_arrays(file)["features"]
        except (OSError, KeyError, ValueError) as e:
            raise FeatureStoreError(f"shard {file} is unreadable ({e}): delete it and rerun extract") from e
        start, stop = self.shard_bounds(i)
        if arr.shape != (stop - start, self.feature_dim):
            raise FeatureStoreError(f"shard {file} has shape {arr.shape}, expected {(stop - start, self.feature_dim)}")
        return arr.astype(dtype, copy=False)

    def features(self, dtype: type = np.float32) -> np.ndarray:
        """All features as one (N, D) array of `dtype`: float32 by default; a float16 store read with
        `dtype=np.float16` takes half the memory."""
        out = np.empty((self.n_items, self.feature_dim), dtype=dtype)
        for i, arr in enumerate(self.iter_shards(dtype)):
            start, stop = self.shard_bounds(i)
            out[start:stop] = arr
        return out

    def labels(self) -> np.ndarray | None:
        """Labels (class ids or regression targets), or None when unlabelled."""
        if not (self.path / "labels.safetensors").exists():
            return None
        file = self.file("labels.safetensors")
        try:
            labels = read_arrays(file)["labels"]
        except (OSError, KeyError, ValueError) as e:
            raise FeatureStoreError(f"labels {file} are unreadable ({e}): delete {self.path} and extract again") from e
        if labels.shape != (self.n_items,):
            raise FeatureStoreError(f"labels {file} have shape {labels.shape}, expected ({self.n_items},): delete "
                                    f"{self.path} and extract again")
        return labels

    def write_shard(self, i: int, features: np.ndarray) -> None:
        """Atomically write shard `i`, in the set's store dtype."""
        stored = features.astype(STORE_DTYPES[self.store_dtype][0], copy=False)
        if stored.dtype != features.dtype and not np.isfinite(stored).all() and np.isfinite(features).all():
            raise FeatureStoreError(f"features of shard {i} exceed {self.store_dtype}'s range (largest "
                                    f"{float(np.abs(features).max()):.4g}): extract with --store-dtype float32")
        write_arrays(self.path / shard_name(i), {"features": stored})

    def mark_complete(self, **extra: object) -> None:
        """Record that every shard is written (and any timing facts)."""
        self.meta.update(extra)
        self.meta["complete"] = True
        write_json(self.path / "meta.json", self.meta)

    @classmethod
    def create(cls, path: Path, meta: dict, labels: np.ndarray | None, *, overwrite: bool = False) -> FeatureSet:
        """Start (or continue) a feature set at `path` for `meta['key']`.

        An existing set with the same key is reused as is (its finished shards count); one with another
        key is an error unless `overwrite`, which deletes it first.
        """
        path = Path(path)
        meta = {"format": FORMAT, "complete": False, **meta}
        meta_file = path / "meta.json"
        if meta_file.exists():
            try:
                old = read_json(meta_file)
            except (OSError, ValueError):
                old = {}
            if old.get("key") == meta["key"] and old.get("format") == FORMAT:
                _check_meta(old, meta_file)
                return cls(path, old)
            if not overwrite:
                raise FeatureStoreError(
                    f"{path} already holds other features ({old.get('backbone', {}).get('spec', '?')} on data "
                    f"{old.get('data', {}).get('name', '?')}): choose another --out or pass --overwrite"
                )
            shutil.rmtree(path)
        elif path.exists() and any(path.iterdir()) and not overwrite:
            raise FeatureStoreError(f"{path} exists and is not a feature folder: choose an empty or new --out")
        path.mkdir(parents=True, exist_ok=True)
        if labels is not None:
            write_arrays(path / "labels.safetensors", {"labels": np.asarray(labels)})
        write_json(meta_file, meta)
        return cls(path, meta)


def _check_meta(meta: dict, meta_file: Path) -> None:
    """Refuse a meta.json whose layout fields are missing, mistyped or inconsistent (hand-edited or crafted)."""
    def bad(why: str) -> FeatureStoreError:
        return FeatureStoreError(f"{meta_file} is not a valid feature-set description ({why}): delete "
                                 f"{meta_file.parent} and extract again")

    for field, low in (("n_items", 0), ("feature_dim", 1), ("shard_size", 1), ("n_shards", 0)):
        v = meta.get(field)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise bad(f"{field}={v!r}")
    if meta["n_shards"] != -(-meta["n_items"] // meta["shard_size"]):
        raise bad(f"n_shards={meta['n_shards']} does not cover n_items={meta['n_items']} in shards of "
                  f"{meta['shard_size']}")
    if not isinstance(meta.get("key"), str) or not isinstance(meta.get("data"), dict):
        raise bad("no key or data description")
    if meta["data"].get("task") not in ("classification", "regression", "unlabelled"):
        raise bad(f"task={meta['data'].get('task')!r}")
    if meta.get("store_dtype", "float32") not in STORE_DTYPES:
        raise bad(f"store_dtype={meta.get('store_dtype')!r}")
    if "shards" in meta or "files" in meta:  # shard files are named by index, never by the file
        raise bad("it names its own files; shard files are always shard-NNNNN.safetensors in the folder")


class FeatureStore:
    """A cache root holding one feature set per key."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir() / "features"

    def path_for(self, key: str) -> Path:
        """Folder of the feature set with `key`."""
        return self.root / key

    def get(self, key: str) -> FeatureSet | None:
        """The complete feature set for `key`, or None."""
        try:
            return FeatureSet.open(self.path_for(key))
        except FeatureStoreError:
            return None

    def entries(self) -> list[FeatureSet]:
        """Every feature set in the store (complete or not)."""
        if not self.root.exists():
            return []
        out = []
        for p in sorted(self.root.iterdir()):
            try:
                out.append(FeatureSet.open(p, require_complete=False))
            except FeatureStoreError:
                continue
        return out


def finished_features(folder: str | Path, identity: dict, data: Dataset, precision: str,
                      store_dtype: str = "float32") -> FeatureSet | None:
    """The complete feature set at `folder` when it holds exactly the features `extract_features` would write
    there (same backbone identity, data and resolved precision), else None. With an identity known without
    building the backbone (`backbones.stamps.known_identity`), a finished extraction needs no model at all."""
    key = feature_key(identity, data.fingerprint, precision, store_dtype)
    try:
        fs = FeatureSet.open(folder)
    except FeatureStoreError:
        return None
    return fs if fs.key == key else None
