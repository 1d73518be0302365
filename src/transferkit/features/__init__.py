"""Feature extraction into a sharded, resumable, content-keyed store.

`extract_features` and `embed_items` (which need torch) are imported on first use (PEP 562); the store does not
need torch, so reading finished features does not import it."""

from __future__ import annotations

from typing import Any

from transferkit.features.store import FeatureSet, FeatureStore, default_cache_dir, feature_key

__all__ = ["FeatureSet", "FeatureStore", "default_cache_dir", "embed_items", "extract_features", "feature_key"]


def __getattr__(name: str) -> Any:
    if name not in ("embed_items", "extract_features"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from transferkit.features import extract

    value = getattr(extract, name)
    globals()[name] = value
    return value
