"""Extraction into the feature store: cache hits, resumption, ordering, errors."""

import json

import numpy as np
import pytest

from transferkit import runtime
from transferkit.data import Dataset
from transferkit.errors import DataError, FeatureStoreError, TransferkitError
from transferkit.features import FeatureSet, FeatureStore, extract_features
from transferkit.runtime import resolve_precision


class CountingEncode:
    """Wraps a backbone's encode to count forward passes (and optionally fail after some)."""

    def __init__(self, backbone, fail_after=None):
        self.backbone, self.inner, self.calls, self.fail_after = backbone, backbone.encode, 0, fail_after

    def __enter__(self):
        def encode(model, batch):
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise RuntimeError("injected failure")
            self.calls += 1
            return self.inner(model, batch)

        self.backbone.encode = encode
        return self

    def __exit__(self, *exc):
        self.backbone.encode = self.inner


def test_second_extract_does_no_model_work(lite0_small, digits_small, tmp_path):
    with CountingEncode(lite0_small) as c:
        fs = extract_features(lite0_small, digits_small, out=tmp_path / "f", batch_size=50, shard_size=100,
                              progress=False)
    assert c.calls == 6 and fs.complete and fs.features().shape == (300, 1280)
    with CountingEncode(lite0_small) as c2:
        again = extract_features(lite0_small, digits_small, out=tmp_path / "f", batch_size=50, shard_size=100,
                                 progress=False)
    assert c2.calls == 0
    np.testing.assert_array_equal(again.features(), fs.features())
    np.testing.assert_array_equal(again.labels(), digits_small.labels)
    assert again.class_names == list(digits_small.class_names)


def test_interrupted_extract_resumes_at_the_missing_shards(lite0_small, digits_small, tmp_path):
    ref = extract_features(lite0_small, digits_small, out=tmp_path / "ref", batch_size=25, shard_size=50,
                           progress=False).features()
    written = []
    with CountingEncode(lite0_small, fail_after=5) as c, pytest.raises(RuntimeError, match="injected"):
        extract_features(lite0_small, digits_small, out=tmp_path / "f", batch_size=25, shard_size=50,
                         progress=False, on_shard=written.append)
    assert written == [0, 1] and c.calls == 5
    partial = FeatureSet.open(tmp_path / "f", require_complete=False)
    assert not partial.complete and partial.done_shards() == [0, 1]
    with pytest.raises(FeatureStoreError, match="incomplete"):
        FeatureSet.open(tmp_path / "f")
    assert not list((tmp_path / "f").glob("*.tmp"))
    with CountingEncode(lite0_small) as c2:
        fs = extract_features(lite0_small, digits_small, out=tmp_path / "f", batch_size=25, shard_size=50,
                              progress=False)
    assert c2.calls == 8  # shards 2..5, two batches each: only what was missing
    np.testing.assert_allclose(fs.features(), ref, atol=1e-5)


def test_text_features_keep_item_order_despite_length_bucketing(minilm, tmp_path):
    texts = ["short", "a much longer sentence with many many words in it to pad", "mid length text",
             "x", "another fairly long piece of text here"] * 3
    ds = Dataset(texts, None, (), "text", "t")
    fs = extract_features(minilm, ds, out=tmp_path / "t", batch_size=4, shard_size=6, precision="fp32",
                          progress=False)
    np.testing.assert_allclose(fs.features(), minilm.embed(texts, precision="fp32"), atol=1e-5)
    assert fs.labels() is None and fs.task == "unlabelled"


def test_default_store_is_keyed_by_content(lite0_small, digits_small, tmp_path):
    store = FeatureStore(tmp_path / "store")
    a = extract_features(lite0_small, digits_small, store=store, progress=False)
    b = extract_features(lite0_small, digits_small.subset(range(100)), store=store, progress=False)
    assert a.path.parent == b.path.parent == store.root and a.key != b.key
    assert {e.key for e in store.entries()} == {a.key, b.key}
    assert store.get(a.key) is not None


def test_out_folder_with_other_features_needs_overwrite(lite0_small, digits_small, tmp_path):
    extract_features(lite0_small, digits_small.subset(range(40)), out=tmp_path / "f", progress=False)
    other = digits_small.subset(range(40, 80))
    with pytest.raises(FeatureStoreError, match="--overwrite"):
        extract_features(lite0_small, other, out=tmp_path / "f", progress=False)
    fs = extract_features(lite0_small, other, out=tmp_path / "f", progress=False, overwrite=True)
    assert fs.n_items == 40 and json.loads((tmp_path / "f" / "meta.json").read_text())["complete"]


def test_modality_mismatch_and_bad_precision(minilm, digits_small, tmp_path):
    with pytest.raises(DataError, match="text"):
        extract_features(minilm, digits_small, out=tmp_path / "x", progress=False)
    with pytest.raises(TransferkitError, match="precision"):
        resolve_precision("fp8", minilm)
    assert resolve_precision("auto", minilm) == runtime.precision_decision("cpu")[0]  # one policy (test_runtime.py)


def test_image_files_are_read_by_workers(lite0_small, tmp_path):
    from PIL import Image

    from transferkit.data import load_image_folder

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "img" / cls / f"{i}.png")
    ds = load_image_folder(tmp_path / "img")
    fs = extract_features(lite0_small, ds, out=tmp_path / "f", batch_size=4, num_workers=1, precision="fp32",
                          progress=False)
    np.testing.assert_allclose(fs.features(), lite0_small.embed(list(ds.items), precision="fp32"), atol=1e-4)


def test_jit_optimised_cnn_gives_the_eager_features(lite0_small, digits_small, tmp_path):
    from transferkit.features.inference import choose_optimization

    assert choose_optimization("auto", lite0_small, 5000) == "jit"
    assert choose_optimization("auto", lite0_small, 10) == "none"
    sub = digits_small.subset(range(64))
    for precision, floor in (("fp32", 0.9999), ("bf16", 0.99)):  # bf16 rounds differently in the fused graph
        eager = extract_features(lite0_small, sub, out=tmp_path / f"e{precision}", optimize="none",
                                 precision=precision, progress=False).features()
        jit = extract_features(lite0_small, sub, out=tmp_path / f"j{precision}", optimize="jit", precision=precision,
                               progress=False).features()
        cos = (eager * jit).sum(1) / (np.linalg.norm(eager, axis=1) * np.linalg.norm(jit, axis=1))
        assert cos.min() > floor, (precision, cos.min())


@pytest.mark.slow
def test_compiled_cnn_pads_the_last_batch_and_matches_eager(tmp_path):
    from torch import nn

    from transferkit.backbones import load_backbone
    from transferkit.features.inference import InferenceRunner

    torch_net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3))
    b = load_backbone(torch_net, image_size=32)
    imgs = list(np.random.default_rng(0).integers(0, 255, (13, 32, 32, 3), dtype=np.uint8))
    runner = InferenceRunner(b, "fp32", "compile")
    full, short = runner(b.collate(imgs[:8])), runner(b.collate(imgs[8:]))
    assert runner.optimize == "compile" and short.shape == (5, 16)
    np.testing.assert_allclose(np.concatenate([full, short]), b.embed(imgs, precision="fp32"), atol=1e-4)
