"""Two processes extracting into the same feature folder at once end with one correct, complete set."""

import multiprocessing as mp

import numpy as np

from transferkit.features import FeatureSet


def _tiny_backbone():
    import torch
    from torch import nn

    from transferkit.backbones import load_backbone

    torch.manual_seed(0)
    return load_backbone(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3)), image_size=24)


def _data():
    from transferkit.data import Dataset

    imgs = np.random.default_rng(0).integers(0, 255, (120, 24, 24, 3), dtype=np.uint8)
    return Dataset(imgs, np.arange(120) % 3, ("a", "b", "c"), "image", "rand")


def _writer(out, counts):
    from transferkit.features import extract_features

    bb = _tiny_backbone()
    inner, calls = bb.encode, []
    bb.encode = lambda m, b: calls.append(1) or inner(m, b)
    extract_features(bb, _data(), out=out, batch_size=10, shard_size=20, precision="fp32",
                     optimize="none", progress=False)  # eager: every batch goes through the counted `encode`
    counts.put(len(calls))


def test_two_writers_share_one_store(tmp_path):
    ctx = mp.get_context("spawn")
    counts = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "f"), counts)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    calls = sorted(counts.get(timeout=5) for _ in procs)
    assert calls == [0, 12]  # one writer computed all 12 batches; the other found the set complete
    fs = FeatureSet.open(tmp_path / "f")
    np.testing.assert_allclose(fs.features(), _tiny_backbone().embed(list(_data().items), precision="fp32"),
                               atol=1e-5)
    assert not list((tmp_path / "f").glob(".*.tmp"))
