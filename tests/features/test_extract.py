"""Extraction into the feature store: cache hits, resumption, ordering, errors."""

import json
import time

import numpy as np
import pytest
import torch

from transferkit import runtime
from transferkit.data import Dataset
from transferkit.errors import DataError, FeatureStoreError, TransferkitError
from transferkit.features import FeatureSet, FeatureStore, embed_items, extract_features
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
                              optimize="none", progress=False)
    assert c.calls == 6 and fs.complete and fs.features().shape == (300, 1280)
    with CountingEncode(lite0_small) as c2:
        again = extract_features(lite0_small, digits_small, out=tmp_path / "f", batch_size=50, shard_size=100,
                                 optimize="none", progress=False)
    assert c2.calls == 0
    np.testing.assert_array_equal(again.features(), fs.features())
    np.testing.assert_array_equal(again.labels(), digits_small.labels)
    assert again.class_names == list(digits_small.class_names)


def test_interrupted_extract_resumes_at_the_missing_shards(lite0_small, digits_small, tmp_path):
    ref = extract_features(lite0_small, digits_small, out=tmp_path / "ref", batch_size=25, shard_size=50,
                           optimize="none", progress=False).features()
    written = []
    with CountingEncode(lite0_small, fail_after=5) as c, pytest.raises(RuntimeError, match="injected"):
        extract_features(lite0_small, digits_small, out=tmp_path / "f", batch_size=25, shard_size=50,
                         optimize="none", progress=False, on_shard=written.append)
    assert written == [0, 1] and c.calls == 5
    partial = FeatureSet.open(tmp_path / "f", require_complete=False)
    assert not partial.complete and partial.done_shards() == [0, 1]
    with pytest.raises(FeatureStoreError, match="incomplete"):
        FeatureSet.open(tmp_path / "f")
    assert not list((tmp_path / "f").glob("*.tmp"))
    with CountingEncode(lite0_small) as c2:
        fs = extract_features(lite0_small, digits_small, out=tmp_path / "f", batch_size=25, shard_size=50,
                              optimize="none", progress=False)
    assert c2.calls == 8  # shards 2..5, two batches each: only what was missing
    np.testing.assert_allclose(fs.features(), ref, atol=1e-5)


def test_text_features_keep_item_order_despite_length_bucketing(minilm, tmp_path):
    texts = ["short", "a much longer sentence with many many words in it to pad", "mid length text",
             "x", "another fairly long piece of text here"] * 3
    ds = Dataset(texts, None, (), "text", "t")
    fs = extract_features(minilm, ds, out=tmp_path / "t", batch_size=4, shard_size=6, precision="fp32",
                          optimize="none", progress=False)
    np.testing.assert_allclose(fs.features(), minilm.embed(texts, precision="fp32"), atol=1e-5)
    assert fs.labels() is None and fs.task == "unlabelled"


def test_default_store_is_keyed_by_content(lite0_small, digits_small, tmp_path):
    store = FeatureStore(tmp_path / "store")
    a = extract_features(lite0_small, digits_small, store=store, optimize="none", progress=False)
    b = extract_features(lite0_small, digits_small.subset(range(100)), store=store, optimize="none", progress=False)
    assert a.path.parent == b.path.parent == store.root and a.key != b.key
    assert {e.key for e in store.entries()} == {a.key, b.key}
    assert store.get(a.key) is not None


def test_out_folder_with_other_features_needs_overwrite(lite0_small, digits_small, tmp_path):
    extract_features(lite0_small, digits_small.subset(range(40)), out=tmp_path / "f", optimize="none", progress=False)
    other = digits_small.subset(range(40, 80))
    with pytest.raises(FeatureStoreError, match="--overwrite"):
        extract_features(lite0_small, other, out=tmp_path / "f", optimize="none", progress=False)
    fs = extract_features(lite0_small, other, out=tmp_path / "f", optimize="none", progress=False, overwrite=True)
    assert fs.n_items == 40 and json.loads((tmp_path / "f" / "meta.json").read_text())["complete"]


def test_modality_mismatch_and_bad_precision(minilm, digits_small, tmp_path):
    with pytest.raises(DataError, match="text"):
        extract_features(minilm, digits_small, out=tmp_path / "x", optimize="none", progress=False)
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
                          optimize="none", progress=False)
    np.testing.assert_allclose(fs.features(), lite0_small.embed(list(ds.items), precision="fp32"), atol=1e-4)


def test_a_graph_is_captured_only_where_it_measured_faster(lite0_small, minilm, monkeypatch):
    from transferkit.features import inference
    from transferkit.features.inference import choose_optimization

    measured = []
    monkeypatch.setattr(inference, "graph_speedup", lambda bb, precision: measured.append(precision) or 1.3)
    assert choose_optimization("auto", lite0_small, "bf16") == "jit" and measured == ["bf16"]
    assert choose_optimization("auto", minilm, "bf16") == "none"  # transformers stay eager
    assert choose_optimization("auto", lite0_small, "int8") == "none"  # int8 runs its quantised copy eagerly
    monkeypatch.setattr(inference, "graph_speedup", lambda bb, precision: 0.86)  # Lite0 in fp32 here
    assert choose_optimization("auto", lite0_small, "fp32") == "none"
    assert choose_optimization("jit", lite0_small, "fp32") == "jit"  # asked for explicitly


def test_the_graph_measurement_runs_once_per_machine_and_architecture(lite0_small, monkeypatch, tmp_path):
    from transferkit.features import inference

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    timed = []
    monkeypatch.setattr(inference, "_time_graph", lambda bb, precision: timed.append(precision) or 1.25)
    assert inference.graph_speedup(lite0_small, "fp32") == 1.25
    assert inference.graph_speedup(lite0_small, "fp32") == 1.25 and timed == ["fp32"]  # from the cache
    assert "lite0" in (tmp_path / "cache" / "runtime.json").read_text()
    assert inference.graph_speedup(lite0_small, "bf16") == 1.25 and timed == ["fp32", "bf16"]


def test_timing_the_graph_gives_a_positive_ratio(lite0_small):
    from transferkit.features.inference import _time_graph

    assert _time_graph(lite0_small, "fp32", batch=2, reps=1) > 0


def test_jit_optimised_cnn_gives_the_eager_features(lite0_small, digits_small, tmp_path):
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


def test_explicit_attention_is_switched_on_for_a_call_only_and_gives_the_same_features(monkeypatch):
    import timm

    from transferkit.backbones import load_backbone
    from transferkit.features import inference
    from transferkit.features.inference import InferenceRunner

    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8)
    bb = load_backbone(net, image_size=32)
    imgs = list(np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))
    seen = []
    for blk in net.blocks:  # record which path each attention layer takes
        blk.attn.register_forward_pre_hook(lambda m, a: seen.append(m.fused_attn))
    monkeypatch.setattr(inference, "explicit_attention_pays", lambda device, precision: False)
    fused = InferenceRunner(bb, "fp32")(bb.collate(imgs))
    assert seen and all(seen)
    seen.clear()
    monkeypatch.setattr(inference, "explicit_attention_pays", lambda device, precision: True)
    explicit = InferenceRunner(bb, "fp32")(bb.collate(imgs))
    assert seen and not any(seen)
    assert all(blk.attn.fused_attn for blk in net.blocks)  # restored after the call
    np.testing.assert_allclose(explicit, fused, atol=1e-4)


def test_explicit_attention_for_a_hugging_face_model(minilm, monkeypatch):
    from transferkit.features import inference
    from transferkit.features.inference import InferenceRunner

    texts = ["a short one", "a somewhat longer sentence about nothing much at all"]
    monkeypatch.setattr(inference, "explicit_attention_pays", lambda device, precision: False)
    fused = InferenceRunner(minilm, "fp32")(minilm.collate(texts))
    monkeypatch.setattr(inference, "explicit_attention_pays", lambda device, precision: True)
    runner = InferenceRunner(minilm, "fp32")
    calls = []
    monkeypatch.setattr(type(minilm.model), "set_attn_implementation",
                        lambda self, impl, _real=type(minilm.model).set_attn_implementation: calls.append(impl) or
                        _real(self, impl))
    explicit = runner(minilm.collate(texts))
    assert calls == ["eager", "sdpa"] and minilm.model.config._attn_implementation == "sdpa"
    np.testing.assert_allclose(explicit, fused, atol=1e-5)


def test_onednn_linear_layers_give_the_default_features_and_are_undone_after_the_call(minilm, monkeypatch):
    from torch import nn

    from transferkit.features import inference
    from transferkit.features.inference import InferenceRunner

    texts = ["one", "two words", "a third, longer text about the weather"]
    monkeypatch.setattr(inference, "onednn_linear_pays", lambda device, precision: False)
    default = InferenceRunner(minilm, "fp32")(minilm.collate(texts))
    monkeypatch.setattr(inference, "onednn_linear_pays", lambda device, precision: True)
    used = []
    real = inference._onednn_linear
    monkeypatch.setattr(inference, "_onednn_linear", lambda packed, x: used.append(1) or real(packed, x))
    onednn = InferenceRunner(minilm, "fp32")(minilm.collate(texts))
    n_linear = sum(type(m) is nn.Linear for m in minilm.model.modules())
    assert len(used) == n_linear  # every linear layer went through oneDNN, once
    assert not any("forward" in m.__dict__ for m in minilm.model.modules())  # their own forward is back
    np.testing.assert_allclose(onednn, default, atol=1e-5)
    weight = minilm.model.encoder.layer[0].intermediate.dense.weight
    with torch.no_grad():  # packed weights follow a change of the weights
        weight.mul_(2.0)
    try:
        changed = InferenceRunner(minilm, "fp32")(minilm.collate(texts))
        monkeypatch.setattr(inference, "onednn_linear_pays", lambda device, precision: False)
        np.testing.assert_allclose(changed, InferenceRunner(minilm, "fp32")(minilm.collate(texts)), atol=1e-5)
        assert not np.allclose(changed, default, atol=1e-3)
    finally:
        with torch.no_grad():
            weight.div_(2.0)


def test_int8_quantises_the_linear_layers_of_a_copy_once(minilm, digits_small, tmp_path):
    from transferkit import datasets
    from transferkit.features.inference import quantised_linear
    from transferkit.runtime import RuntimeConfigError, resolve_precision

    texts = list(datasets.load("sentiment-movies").items[:64])
    fp32 = embed_items(minilm, texts, precision="fp32")
    int8 = embed_items(minilm, texts, precision="int8")
    cos = (fp32 * int8).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(int8, axis=1))
    assert cos.mean() > 0.95 and cos.min() > 0.9 and not np.allclose(fp32, int8, atol=1e-3)  # close, but quantised
    q = quantised_linear(minilm.model)
    assert q is quantised_linear(minilm.model) and q is not minilm.model  # made once, the original untouched
    assert type(minilm.model.encoder.layer[0].intermediate.dense) is torch.nn.Linear
    assert "quantized.dynamic" in type(q.encoder.layer[0].intermediate.dense).__module__
    with pytest.raises(RuntimeConfigError, match="extraction and prediction only"):
        resolve_precision("int8", "cpu")  # training refuses it
    assert resolve_precision("int8", "cpu", inference=True) == "int8"


def test_bf16_on_the_cpu_runs_a_bf16_copy_and_leaves_the_model_in_fp32(minilm, lite0_small):
    """bf16 inference on the CPU runs weights and activations in bf16 (no autocast), in a copy made once while the
    weights are unchanged; the backbone's own model stays fp32 for fine-tuning and for fp32 features."""
    from transferkit.features import inference
    from transferkit.features.inference import InferenceRunner

    texts = ["one", "two words", "a third, longer text about the weather"]
    runner = InferenceRunner(minilm, "bf16")
    assert runner.native and runner._model is not minilm.model
    assert {p.dtype for p in runner._model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in minilm.model.parameters()} == {torch.float32}
    assert InferenceRunner(minilm, "bf16")._model is runner._model  # made once
    ours = runner(minilm.collate(texts))
    with torch.inference_mode(), runner._attention():  # running the copy by hand, with the attention path chosen
        ref = minilm.encode(runner._model, minilm.collate(texts)).float().numpy()
    np.testing.assert_array_equal(ours, ref)
    assert _cosines(ours, InferenceRunner(minilm, "fp32")(minilm.collate(texts))).min() > 0.99
    weight = minilm.model.encoder.layer[0].intermediate.dense.weight
    with torch.no_grad():  # the copy follows a change of the weights
        weight.mul_(2.0)
    try:
        assert InferenceRunner(minilm, "bf16")._model is not runner._model
    finally:
        with torch.no_grad():
            weight.div_(2.0)
    # a CNN's frozen graph is captured from the bf16 copy
    pixels = lite0_small.collate(list(np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)))
    graph = InferenceRunner(lite0_small, "bf16", "jit")
    captured = graph(pixels)
    assert graph.optimize == "jit" and graph._graph is not None
    assert _cosines(captured, InferenceRunner(lite0_small, "fp32", "none")(pixels)).min() > 0.99
    assert inference.native_bf16(torch.device("cpu"), "bf16")
    assert not inference.native_bf16(torch.device("cuda"), "bf16")
    # a layer's output (`layer:NAME` pooling, a hook on the model) is captured from the copy's forward too
    from transferkit.backbones import load_backbone

    layer = load_backbone("effnet:lite0", pooling="layer:_blocks.4", image_size=64)
    assert _cosines(InferenceRunner(layer, "bf16")(pixels), InferenceRunner(layer, "fp32")(pixels)).min() > 0.99
    assert _cosines(InferenceRunner(layer, "int8")(pixels), InferenceRunner(layer, "fp32")(pixels)).min() > 0.99


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_bf16_features_are_keyed_apart_from_the_autocast_ones():
    from transferkit.features.store import feature_key

    assert feature_key({"spec": "x"}, "data", "bf16") != feature_key({"spec": "x"}, "data", "fp32")
    # the key the autocast path gave its bf16 features (before bf16 weights) is not reused
    import hashlib

    old = hashlib.sha256(json.dumps({"backbone": {"spec": "x"}, "data": "data", "precision": "bf16"},
                                    sort_keys=True).encode()).hexdigest()[:24]
    assert feature_key({"spec": "x"}, "data", "bf16") != old
    assert feature_key({"spec": "x"}, "data", "fp32") == hashlib.sha256(json.dumps(
        {"backbone": {"spec": "x"}, "data": "data", "precision": "fp32"}, sort_keys=True).encode()).hexdigest()[:24]


def test_prefetched_batches_come_in_order_one_ahead_and_a_failure_is_raised_where_the_loop_would_raise():
    import threading

    from transferkit.features.extract import prefetched

    threads = []

    def collate(items):
        threads.append(threading.current_thread().name)
        if "bad" in items:
            raise DataError("cannot read image bad")
        return list(items)

    items = ["a", "b", "c", "d", "e"]
    got = prefetched(collate, items, [[0, 1], [2], [3, 4]])
    assert next(got) == ["a", "b"]
    deadline = time.time() + 5
    while len(threads) < 2 and time.time() < deadline:  # the next batch is made without being asked for
        time.sleep(0.01)
    assert len(threads) == 2
    assert list(got) == [["c"], ["d", "e"]]
    assert all(t.startswith("transferkit-collate") for t in threads)
    failing = prefetched(collate, [*items, "bad"], [[0], [5], [1]])
    assert next(failing) == ["a"]
    with pytest.raises(DataError, match="bad"):
        next(failing)
    assert list(prefetched(collate, items, [])) == []


def test_a_float16_store_halves_the_shards_and_reads_back_the_rounded_features(lite0_small, digits_small, tmp_path):
    from transferkit.features.store import STORE_DTYPES, FeatureSet

    kw = dict(batch_size=50, shard_size=100, precision="fp32", optimize="none", progress=False)
    full = extract_features(lite0_small, digits_small, out=tmp_path / "f32", **kw)
    half = extract_features(lite0_small, digits_small, out=tmp_path / "f16", store_dtype="float16", **kw)
    assert half.store_dtype == "float16" and full.store_dtype == "float32" and half.key != full.key
    assert all(half.shard_intact(i) for i in range(3))  # F16 shards of the right size count as finished
    sizes = [(fs.path / "shard-00000.safetensors").stat().st_size for fs in (full, half)]
    assert sizes[1] < 0.51 * sizes[0]
    np.testing.assert_array_equal(half.features(), full.features().astype(np.float16).astype(np.float32))
    assert half.features(np.float16).dtype == np.float16 and half.features().dtype == np.float32
    with CountingEncode(lite0_small) as c:  # a second run with the same store dtype is a cache hit
        again = extract_features(lite0_small, digits_small, out=tmp_path / "f16", store_dtype="float16", **kw)
    assert c.calls == 0 and again.complete
    with pytest.raises(FeatureStoreError, match="other features"):  # float32 features are other features
        extract_features(lite0_small, digits_small, out=tmp_path / "f16", **kw)
    big = FeatureSet.open(tmp_path / "f16")
    with pytest.raises(FeatureStoreError, match="exceed float16's range"):
        big.write_shard(0, np.full((100, 1280), 1e6, np.float32))
    with pytest.raises(FeatureStoreError, match="float32, float16"):
        extract_features(lite0_small, digits_small, out=tmp_path / "x", store_dtype="float64", **kw)
    assert set(STORE_DTYPES) == {"float32", "float16"}


def test_attention_takes_the_explicit_path_where_the_fused_bf16_kernel_fails(monkeypatch, tmp_path):
    import torch.nn.functional as F  # noqa: N812

    from transferkit.features import inference

    def broken(*args, **kwargs):
        raise RuntimeError("pack_vnni2 is only supported when avx512 is supported")

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))  # not measured on this machine yet
    monkeypatch.setattr(F, "scaled_dot_product_attention", broken)
    assert inference.attention_speedup() == 1e9
    assert inference.explicit_attention_pays(torch.device("cpu"), "bf16")


@pytest.fixture(scope="module")
def effnet_b0_small():
    """timm's efficientnet_b0 (random weights, seeded) at 64 px: its SiLU and squeeze-excite products round
    differently in bf16 when oneDNN Graph fuses them, so the fused and unfused graphs give different bytes."""
    from transferkit.backbones import load_backbone

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_backbone("timm:efficientnet_b0", pretrained=False, image_size=64)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN is not in this torch build")
def test_a_fused_graph_gives_a_batch_the_same_features_whatever_ran_before(effnet_b0_small):
    from transferkit.features.inference import InferenceRunner, _Encoder, _frozen_graph

    eager = InferenceRunner(effnet_b0_small, "bf16", "none")
    pixels = eager.prepare({"pixel_values": torch.randn(20, 3, 64, 64, generator=torch.Generator().manual_seed(0))})
    pixels = pixels["pixel_values"]
    encoder = _Encoder(effnet_b0_small, eager._model).eval()

    shapes = []

    def run(order: list[int]) -> dict[int, np.ndarray]:
        graph = _frozen_graph(encoder, pixels, fuse=True)  # a new graph: nothing profiled or fused yet
        with torch.inference_mode():
            out = {n: graph(pixels[:n]).float().numpy() for n in order}
        shapes.append(len(graph._ready))
        return out

    first, other = run([16, 5, 3, 16, 20]), run([3, 20, 5, 16])
    for n in (16, 5, 3, 20):  # the first call of a shape (TorchScript's profiling run) is not what is returned
        np.testing.assert_array_equal(first[n], other[n], err_msg=f"batch of {n}")
    up, down = run(list(range(1, 21))), run(list(range(20, 0, -1)))  # twenty batch sizes, in two orders
    for n in range(1, 21):
        np.testing.assert_array_equal(up[n], down[n], err_msg=f"batch of {n}")
    assert shapes[-2:] == [6, 6]  # padded to 1, 2, 4, 8, 16 and 32 rows: six profiling runs, not twenty
    np.testing.assert_array_equal(first[5], first[16][:5])  # 5 rows run padded to 8, and rows do not interact
    np.testing.assert_array_equal(first[3], first[16][:3])
    reference = eager({"pixel_values": pixels})
    cos = (first[20] * reference).sum(1) / np.linalg.norm(first[20], axis=1) / np.linalg.norm(reference, axis=1)
    assert cos.min() > 0.99  # the same features as eager, to bf16's rounding


def test_the_fusion_decision_is_measured_once_per_machine_and_architecture(lite0_small, monkeypatch, tmp_path):
    from transferkit.features import inference

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "cache"))
    timed = []
    monkeypatch.setattr(inference, "fusion_speedup", lambda bb, precision: timed.append(precision) or 1.25)
    assert inference.onednn_fusion_pays(lite0_small, "bf16") is inference._llga_available()
    assert inference.onednn_fusion_pays(lite0_small, "bf16") is inference._llga_available()
    assert timed == (["bf16"] if inference._llga_available() else [])  # the second answer came from runtime.json
    assert not inference.onednn_fusion_pays(lite0_small, "int8")
    monkeypatch.setattr(inference, "fusion_speedup", lambda bb, precision: 1.02)  # within noise: the plain graph
    assert not inference.onednn_fusion_pays(lite0_small, "fp32")


def test_the_runner_builds_the_graph_the_fusion_decision_names(lite0_small, monkeypatch):
    from transferkit.features import inference

    x = {"pixel_values": torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))}
    out = {}
    for fuse in (True, False):
        monkeypatch.setattr(inference, "onednn_fusion_pays", lambda bb, precision, fuse=fuse: fuse)
        runner = inference.InferenceRunner(lite0_small, "fp32", "jit")
        out[fuse] = runner(x)
        assert isinstance(runner._graph, inference._FusedGraph) is fuse
    np.testing.assert_allclose(out[True], out[False], atol=1e-4)
    assert inference.fusion_speedup(lite0_small, "fp32", batch=2, reps=1) > 0
