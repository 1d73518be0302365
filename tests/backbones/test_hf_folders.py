"""`hf:` backbones from local folders (what offline users pass): a tiny BERT and a tiny ViT saved in the test."""

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm):
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(minilm.info["folder"])  # a real WordPiece vocabulary, offline
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_hf_text_folder_poolings_and_blocks(tiny_bert):
    from transferkit.backbones import load_backbone

    mean = load_backbone(f"hf:{tiny_bert}")
    cls = load_backbone(f"hf:{tiny_bert}", pooling="cls")
    texts = ["hello world", "a longer sentence to pad the batch out"]
    a, b = mean.embed(texts, precision="fp32"), cls.embed(texts)
    assert a.shape == b.shape == (2, 32) and not np.allclose(a, b)
    assert mean.modality == "text" and mean.pooling == "mean"
    assert [blk.name for blk in mean.blocks][:4] == ["embeddings", "encoder.layer.0", "encoder.layer.1",
                                                      "encoder.layer.2"]
    # padding must not change an item's features: embed one by one vs batched
    np.testing.assert_allclose(mean.embed(texts[:1], precision="fp32"), a[:1], atol=1e-5)


def test_hf_vision_folder(tiny_vit):
    from transferkit.backbones import load_backbone

    b = load_backbone(f"hf:{tiny_vit}")
    img = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    assert b.modality == "image" and b.pooling == "cls" and b.embed([img]).shape == (1, 32)
    assert load_backbone(f"hf:{tiny_vit}", pooling="mean").embed([img]).shape == (1, 32)
    assert b.preprocessing["size"] == 32


def test_hf_random_init_from_folder_config(tiny_bert):
    from transferkit.backbones import load_backbone

    a = load_backbone(f"hf:{tiny_bert}")
    r = load_backbone(f"hf:{tiny_bert}", pretrained=False)
    assert not r.pretrained and a.weights_digest() != r.weights_digest()
