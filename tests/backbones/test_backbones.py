"""Backbones: offline pretrained weights, poolings, blocks, specs and their errors."""

import numpy as np
import pytest
import torch
from torch import nn

from transferkit.backbones import Backbone, load_backbone, offline_backbones, sources
from transferkit.errors import TransferkitError, UnknownBackboneError, WeightsNotFoundError


def test_effnet_lite_classifies_the_scikit_image_cat():
    skimage_data = pytest.importorskip("skimage.data")
    cat = skimage_data.chelsea()
    for variant in ("lite0", "lite2"):
        b = load_backbone(f"effnet:{variant}")
        with torch.inference_mode():
            x = b.collate([cat])["pixel_values"]
            logits = b.source_head(b.forward({"pixel_values": x}))
        assert b.source_classes[int(logits.argmax())] == "Egyptian cat"
        assert b.feature_dim == 1280 and b.pretrained


def test_effnet_random_init_differs_and_needs_no_weights():
    a = load_backbone("effnet:lite1", pretrained=False, image_size=64)
    assert not a.pretrained and a.feature_dim == 1280
    with pytest.raises(WeightsNotFoundError, match="effnet:lite1"):
        load_backbone("effnet:lite1")


def test_minilm_matches_sentence_transformers_encode(minilm):
    from sentence_transformers import SentenceTransformer

    texts = ["a wonderful, moving film", "the service was terrible", "numbers: 1 2 3"]
    ref = SentenceTransformer(minilm.info["folder"], device="cpu").encode(texts)
    np.testing.assert_allclose(minilm.embed(texts, precision="fp32"), ref, atol=1e-5)
    assert minilm.feature_dim == 384 and minilm.pooling == "mean+normalize"


def test_text_poolings_and_named_layer():
    cls = load_backbone("st:all-MiniLM-L6-v2", pooling="cls")
    layer = load_backbone("st:all-MiniLM-L6-v2", pooling="layer:encoder.layer.2")
    texts = ["good", "bad movie"]
    a, b = cls.embed(texts), layer.embed(texts)
    assert a.shape == b.shape == (2, 384)
    assert not np.allclose(a, b)
    assert cls.identity() != layer.identity()


def test_blocks_are_ordered_and_cover_the_backbone(minilm, lite0_small):
    names = [b.name for b in minilm.blocks]
    assert names[0] == "embeddings" and names[1:7] == [f"encoder.layer.{i}" for i in range(6)]
    owned = [n for b in lite0_small.blocks for n in b.param_names]
    assert len(owned) == len(set(owned))
    head = {n for n, _ in lite0_small.model.named_parameters() if n.startswith("_fc")}
    assert set(owned) | head == {n for n, _ in lite0_small.model.named_parameters()}
    assert [b.name for b in lite0_small.blocks][:2] == ["stem", "blocks.0"]
    assert len(lite0_small.block_parameters(-1)) > 0


@pytest.mark.parametrize("spec,dim", [("timm:resnet18", 512), ("timm:vit_tiny_patch16_224", 192),
                                      ("tv:mobilenet_v3_small", 1024)])
def test_timm_and_torchvision_random_init(spec, dim):
    b = load_backbone(spec, pretrained=False, image_size=64 if "vit" not in spec else None)
    img = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    assert b.embed([img, img]).shape == (2, dim)
    assert b.blocks and b.source_head is not None


def test_any_module_is_a_backbone():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3))
    b = load_backbone(net, image_size=32)
    assert isinstance(b, Backbone) and b.feature_dim == 16
    assert b.embed([np.zeros((10, 10), np.uint8)]).shape == (1, 16)


def test_weights_digest_tracks_the_weights(lite0_small):
    other = load_backbone("effnet:lite0", image_size=64, pretrained=False)
    assert lite0_small.weights_digest() != other.weights_digest()
    assert lite0_small.weights_digest() == load_backbone("effnet:lite0", image_size=64).weights_digest()


@pytest.mark.parametrize("spec,err,words", [
    ("resnet50", UnknownBackboneError, "SOURCE:NAME"),
    ("nope:resnet50", UnknownBackboneError, "unknown backbone source"),
    ("timm:not_a_model_xyz", UnknownBackboneError, "timm:not_a_model_xyz"),
    ("timm:resnet18", WeightsNotFoundError, "timm:resnet18"),
    ("hf:bert-base-uncased", WeightsNotFoundError, "hf:bert-base-uncased"),
    ("st:no-such-model", WeightsNotFoundError, "st:no-such-model"),
    ("effnet:lite9", UnknownBackboneError, "effnet:lite9"),
])
def test_bad_specs_fail_with_one_line_naming_the_spec(spec, err, words):
    with pytest.raises(err) as info:
        load_backbone(spec)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_bad_pooling_is_named():
    with pytest.raises(TransferkitError, match="pooling 'max'"):
        load_backbone("effnet:lite0", pooling="max", image_size=64)
    with pytest.raises(TransferkitError, match="no layer named"):
        load_backbone("effnet:lite0", pooling="layer:nope", image_size=64)


def test_listing_offline_backbones_and_sources():
    offline = {r["spec"]: r for r in offline_backbones()}
    assert offline["effnet:lite0"]["available"] and offline["st:all-MiniLM-L6-v2"]["available"]
    assert {s["prefix"] for s in sources()} == {"effnet", "timm", "tv", "hf", "st", "run"}


def test_parameter_counts_follow_requires_grad():
    b = load_backbone("effnet:lite0", pretrained=False, image_size=32)
    total = sum(p.numel() for p in b.model.parameters())
    assert b.total_parameters() == b.trainable_parameters() == total
    for p in b.model.parameters():
        p.requires_grad_(False)
    last = b.block_parameters(-1)
    for p in last:
        p.requires_grad_(True)
    assert b.trainable_parameters() == sum(p.numel() for p in last) > 0


def test_a_timm_transformer_is_built_for_the_image_size_asked_for():
    import numpy as np

    from transferkit.backbones import load_backbone

    vit = load_backbone("timm:vit_tiny_patch16_224", pretrained=False, image_size=64)  # was an AssertionError
    assert vit.model.patch_embed.img_size == (64, 64)
    assert vit.embed([np.zeros((40, 50, 3), np.uint8)] * 2).shape == (2, 192)
    cnn = load_backbone("timm:resnet18", pretrained=False, image_size=64)  # no fixed size: built as it is
    assert cnn.embed([np.zeros((64, 64, 3), np.uint8)]).shape == (1, 512)
