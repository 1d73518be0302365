"""What a crashed writer leaves (temp files, a torn shard, the lock file) never poisons or blocks the resume.

The fast, in-process sibling of tests/e2e/test_kill_resume.py (which uses real signals on the CLI).
"""

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.data import Dataset
from transferkit.features import FeatureSet, extract_features


def _backbone():
    from transferkit.backbones import load_backbone

    torch.manual_seed(0)
    return load_backbone(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), image_size=16)


def _data():
    imgs = np.random.default_rng(0).integers(0, 255, (60, 16, 16, 3), dtype=np.uint8)
    return Dataset(imgs, np.arange(60) % 3, ("a", "b", "c"), "image", "rand")


def test_resume_ignores_temp_files_recomputes_torn_shards_and_matches_a_clean_run(tmp_path):
    bb, data = _backbone(), _data()
    ref = extract_features(bb, data, out=tmp_path / "ref", batch_size=5, shard_size=10, progress=False)

    def stop_after_three(i):
        if i == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_features(bb, data, out=tmp_path / "f", batch_size=5, shard_size=10, progress=False,
                         on_shard=stop_after_three)
    out = tmp_path / "f"
    fs = FeatureSet.open(out, require_complete=False)
    assert fs.done_shards() == [0, 1, 2] and not fs.complete
    assert (tmp_path / "f.lock").exists()
    (out / ".shard-00003.safetensors.dead.tmp").write_bytes(b"half")
    torn = out / "shard-00001.safetensors"
    torn.write_bytes(torn.read_bytes()[:-7])
    assert not fs.shard_intact(1) and fs.shard_intact(0)

    computed = []
    done = extract_features(bb, data, out=out, batch_size=5, shard_size=10, progress=False, on_shard=computed.append)
    assert sorted(computed) == [1, 3, 4, 5]
    assert not list(out.glob(".*.tmp"))
    np.testing.assert_array_equal(done.features(), ref.features())
    for i in range(6):  # byte for byte
        name = f"shard-{i:05d}.safetensors"
        assert (out / name).read_bytes() == (ref.path / name).read_bytes(), name
