"""Feature extraction into a sharded, resumable, content-keyed store."""

from transferkit.features.extract import embed_items, extract_features
from transferkit.features.store import FeatureSet, FeatureStore, default_cache_dir, feature_key

__all__ = ["FeatureSet", "FeatureStore", "default_cache_dir", "embed_items", "extract_features", "feature_key"]
