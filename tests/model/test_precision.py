"""A model is served the way it was made: the precision its features (or weights) were computed in is recorded in
the folder and used again at prediction, whatever `auto` would mean on the host that predicts."""

import numpy as np
import pytest

from transferkit import datasets
from transferkit.backbones import load_backbone
from transferkit.data import stratified_sample
from transferkit.features import embed_items, extract_features
from transferkit.heads.probe import probe_features
from transferkit.heads.probe_model import load_head_of
from transferkit.model import load_model


@pytest.fixture(scope="module")
def bf16_probe(tmp_path_factory, minilm):
    """A probe made on bf16 features (bf16 runs everywhere: natively on AVX512-BF16/AMX, emulated elsewhere)."""
    root = tmp_path_factory.mktemp("bf16")
    ds = datasets.load("sentiment-tweets")
    ds = ds.subset(stratified_sample(ds.labels, 160, seed=0))
    fs = extract_features(minilm, ds, out=root / "f", precision="bf16", progress=False)
    probe_features(fs, head="logreg", save=root / "m")
    return root / "m"


def test_the_recorded_precision_is_used_to_predict(bf16_probe, minilm, monkeypatch):
    from transferkit import runtime

    monkeypatch.setattr(runtime, "precision_decision", lambda device: ("fp32", "an AVX2-only host"))
    model = load_model(bf16_probe)  # auto on this (pretend) fp32 host still means the folder's bf16
    assert model.info.precision == "bf16"
    texts = ["what a lovely day", "the worst service I have had", "it was fine, I guess", "never again"]
    head = load_head_of(bf16_probe, model.info)
    bf16 = head.predict_proba(embed_items(minilm, texts, precision="bf16"))
    fp32 = head.predict_proba(embed_items(minilm, texts, precision="fp32"))
    assert not np.array_equal(bf16, fp32)  # the two precisions do differ on these items
    np.testing.assert_array_equal(model.outputs(texts), bf16)
    np.testing.assert_array_equal(load_model(bf16_probe, precision="fp32").outputs(texts), fp32)  # an override


def test_extraction_and_embed_items_compute_the_same_features(minilm):
    texts = [t for t in datasets.load("sentiment-tweets").items[:40]]
    from transferkit.data import Dataset

    for precision in ("fp32", "bf16"):
        fs = extract_features(minilm, Dataset(texts, None, (), "text", "t"), precision=precision, progress=False,
                              out=None)
        np.testing.assert_array_equal(fs.features(), embed_items(minilm, texts, precision=precision))


def test_a_fine_tuned_run_predicts_in_its_own_precision(tmp_path):
    from transferkit.finetune import FinetuneConfig, finetune, load_run

    ds = datasets.load("digits")
    ds = ds.subset(stratified_sample(ds.labels, 80, seed=0))
    finetune(load_backbone("effnet:lite0", image_size=32), ds, tmp_path / "r",
             FinetuneConfig(strategy="head", epochs=1, batch_size=16, precision="bf16"), progress=False)
    run = load_run(tmp_path / "r")
    assert run.precision == "bf16" and load_model(tmp_path / "r").info.precision == "bf16"
    items = list(ds.items[:8])
    np.testing.assert_array_equal(run.outputs(items), run.outputs(items, precision="bf16"))
    assert not np.array_equal(run.outputs(items), run.outputs(items, precision="fp32"))
