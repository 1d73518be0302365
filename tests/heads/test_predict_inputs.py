"""A saved head applied to other data: unseen labels, features of another width, crafted arrays — clear errors."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from transferkit.errors import DataError, FeatureStoreError, HeadError, TransferkitError
from transferkit.features import FeatureSet
from transferkit.heads import fit_head, load_head, save_head
from transferkit.heads.probe import probe_features

rng = np.random.default_rng(0)
X = rng.normal(size=(90, 6))
y = np.arange(90) % 3


def _one_line(e):
    assert isinstance(e, TransferkitError) and "\n" not in str(e)
    return str(e)


@pytest.fixture(params=["logreg", "svm", "knn", "ridge", "rbf-svm"])
def saved(request, tmp_path):
    return save_head(fit_head(request.param, X[:60], y[:60], X[60:], y[60:]), tmp_path / "head")


def test_loaded_head_refuses_features_of_another_width(saved):
    head = load_head(saved)
    with pytest.raises(DataError, match=r"X has 5 features but the head was fitted on 6") as info:
        head.predict(X[:, :5])
    assert "same backbone and pooling" in _one_line(info.value)


def test_loaded_head_refuses_labels_it_never_saw(saved):
    head = load_head(saved)
    assert head.evaluate(X[60:], y[60:])["accuracy"] >= 0.0
    with pytest.raises(DataError, match=r"y holds 1 label\(s\) the head never saw in training \(7\); it knows 0, 1, 2"):
        head.evaluate(X[60:], np.where(y[60:] == 2, 7, y[60:]))
    with pytest.raises(DataError, match=r"never saw.*'cat'") as info:  # names where ids were expected
        head.evaluate(X[:3], np.array(["cat", "dog", "cat"]))
    _one_line(info.value)


def test_saved_head_with_arrays_that_do_not_fit_is_refused_on_load(saved):
    original = load_file(str(saved / "arrays.safetensors"))
    wide = [k for k, a in original.items() if a.dtype.kind == "f" and a.shape[-1] == X.shape[1]]
    assert wide  # every head keeps some per-feature array (scaler, weights or training points)
    for key in wide:
        arrays = dict(original, **{key: np.ascontiguousarray(original[key][..., :-1])})  # one column short
        save_file(arrays, str(saved / "arrays.safetensors"))
        with pytest.raises(HeadError, match="incomplete or inconsistent") as info:
            load_head(saved).predict(X[:2])
        _one_line(info.value)


def test_probe_names_a_shard_whose_width_does_not_match_the_cache(tmp_path):
    from transferkit.io import write_arrays

    folder = tmp_path / "f"
    folder.mkdir()
    meta = {"format": 1, "complete": True, "key": "k", "n_items": 20, "feature_dim": 4, "shard_size": 10,
            "n_shards": 2, "precision": "fp32", "backbone": {"spec": "x"},
            "data": {"name": "d", "task": "classification", "class_names": ["a", "b"]}}
    (folder / "meta.json").write_text(json.dumps(meta))
    write_arrays(folder / "labels.safetensors", {"labels": np.arange(20) % 2})
    write_arrays(folder / "shard-00000.safetensors", {"features": np.zeros((10, 4), np.float32)})
    write_arrays(folder / "shard-00001.safetensors", {"features": np.zeros((10, 3), np.float32)})
    with pytest.raises(FeatureStoreError, match=r"shard-00001.safetensors has shape \(10, 3\), expected \(10, 4\)"):
        probe_features(folder)
    assert FeatureSet.open(folder).read_shard(0).shape == (10, 4)
