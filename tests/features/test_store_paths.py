"""Feature folders and saved heads only ever read files inside themselves; crafted descriptions are refused.

The formats name no files (shards are `shard-NNNNN.safetensors` by index), so what a crafted folder can
do is claim other files in meta.json, symlink its files elsewhere, or lie about its layout.
"""

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.data import Dataset
from transferkit.errors import FeatureStoreError, HeadError
from transferkit.features import FeatureSet, extract_features


@pytest.fixture
def feature_folder(tmp_path):
    from transferkit.backbones import load_backbone

    torch.manual_seed(0)
    bb = load_backbone(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), image_size=16)
    imgs = np.random.default_rng(0).integers(0, 255, (30, 16, 16, 3), dtype=np.uint8)
    data = Dataset(imgs, np.arange(30) % 3, ("a", "b", "c"), "image", "rand")
    extract_features(bb, data, out=tmp_path / "f", shard_size=10, progress=False)
    return tmp_path / "f"


def _edit_meta(folder, **changes):
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(changes)
    (folder / "meta.json").write_text(json.dumps(meta))


def _refused(folder, pattern):
    with pytest.raises(FeatureStoreError, match=pattern) as info:
        fs = FeatureSet.open(folder)
        fs.features(), fs.labels()
    assert "\n" not in str(info.value)


def test_untouched_folder_reads(feature_folder):
    fs = FeatureSet.open(feature_folder)
    assert fs.features().shape == (30, 4) and fs.labels().shape == (30,)


@pytest.mark.parametrize("field", ["shards", "files"])
def test_meta_naming_files_outside_is_refused(feature_folder, field):
    _edit_meta(feature_folder, **{field: ["../../etc/passwd", "shard-00001.safetensors"]})
    _refused(feature_folder, "names its own files")


@pytest.mark.parametrize(("changes", "pattern"), [
    ({"shard_size": -10}, r"shard_size=-10"),
    ({"n_shards": 7}, r"n_shards=7 does not cover n_items=30"),
    ({"n_items": "30"}, r"n_items='30'"),
    ({"feature_dim": 0}, r"feature_dim=0"),
    ({"data": {"task": "../../x"}}, r"task='../../x'"),
])
def test_inconsistent_layout_is_refused(feature_folder, changes, pattern):
    _edit_meta(feature_folder, **changes)
    _refused(feature_folder, pattern)


@pytest.mark.parametrize("name", ["shard-00001.safetensors", "labels.safetensors"])
def test_symlink_out_of_the_folder_is_refused(feature_folder, tmp_path, name):
    outside = tmp_path / "elsewhere.safetensors"
    os.replace(feature_folder / name, outside)  # a real, readable file, but not the folder's own
    (feature_folder / name).symlink_to(outside)
    _refused(feature_folder, "points outside the feature folder")


def test_symlink_within_the_folder_is_fine(feature_folder):
    sub = feature_folder / "sub"
    sub.mkdir()
    os.replace(feature_folder / "shard-00002.safetensors", sub / "s2.safetensors")
    (feature_folder / "shard-00002.safetensors").symlink_to(sub / "s2.safetensors")
    assert FeatureSet.open(feature_folder).features().shape == (30, 4)


def test_resume_refuses_a_crafted_meta_with_the_same_key(feature_folder):
    """Resuming trusts the folder's own meta.json when the key matches: it is checked first."""
    from transferkit.features.store import FeatureSet as FS

    meta = json.loads((feature_folder / "meta.json").read_text())
    _edit_meta(feature_folder, shards=["../../../etc/passwd"])
    with pytest.raises(FeatureStoreError, match="names its own files"):
        FS.create(feature_folder, {k: v for k, v in meta.items() if k not in ("format", "complete")}, None)


def test_head_files_symlinked_outside_are_refused(tmp_path):
    from transferkit.heads import fit_head, load_head, save_head

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), np.arange(40) % 2
    folder = save_head(fit_head("ridge", X[:30], y[:30], X[30:], y[30:]), tmp_path / "head")
    os.replace(folder / "head.json", tmp_path / "head.json")
    (folder / "head.json").symlink_to(tmp_path / "head.json")
    with pytest.raises(HeadError, match="points outside the head folder"):
        load_head(folder)
