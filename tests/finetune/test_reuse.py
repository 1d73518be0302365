"""A run is a backbone (`run:PATH`), `pretrain` trains one from scratch, and the scikit-learn estimator."""

import numpy as np
import pytest
from sklearn.base import clone

from transferkit.backbones import load_backbone
from transferkit.finetune import FinetuneConfig, finetune


def test_pretrain_then_transfer_through_run_spec(mnist_200, tmp_path):
    """Train from random weights on MNIST, then use the run as the backbone of a new task (UCI digits)."""
    import torch

    from transferkit import datasets
    from transferkit.data import stratified_sample
    from transferkit.features import extract_features
    from transferkit.select import logme

    torch.manual_seed(0)
    scratch = load_backbone("effnet:lite0", pretrained=False, image_size=32)
    first = finetune(scratch, mnist_200, tmp_path / "src", FinetuneConfig(strategy="full", epochs=2, lr=1e-3,
                                                                          batch_size=16), progress=False,
                     backbone_options={"pretrained": False, "image_size": 32})
    assert len(first.info["saved_parameters"]) > 100  # random init: every weight is saved
    bb = load_backbone(f"run:{tmp_path / 'src'}")
    assert bb.spec.startswith("run:") and bb.source_classes == [str(i) for i in range(10)]
    digits = datasets.load("digits")
    digits = digits.subset(stratified_sample(digits.labels, 100, seed=0))
    fs = extract_features(bb, digits, out=tmp_path / "feats", progress=False)
    assert fs.features().shape == (100, 1280) and np.isfinite(logme(fs.features(), digits.labels))
    # the run backbone's identity is its trained weights, not the random architecture's
    assert bb.weights_digest() != scratch.weights_digest()
    second = finetune(bb, digits, tmp_path / "next", FinetuneConfig(strategy="head", epochs=1), progress=False)
    assert second.info["backbone"]["spec"] == bb.spec


def test_lora_run_merges_into_a_backbone(tweets_240, tmp_path):
    mini = load_backbone("st:all-MiniLM-L6-v2")
    finetune(mini, tweets_240, tmp_path / "lora", FinetuneConfig(strategy="lora", epochs=1, max_steps=3, lr=1e-3),
             progress=False)
    from transferkit.finetune import load_run

    run = load_run(tmp_path / "lora")
    before = run.outputs(["a fine day", "awful service"])
    merged = load_backbone(f"run:{tmp_path / 'lora'}")
    assert not any("lora_" in n for n, _ in merged.model.named_parameters())
    # merged weights compute the same features as base + adapters
    feats_run = run.model.features(run.backbone.collate(["a fine day", "awful service"])).detach().numpy()
    np.testing.assert_allclose(merged.embed(["a fine day", "awful service"], precision="fp32"), feats_run, atol=1e-5)
    assert before.shape == (2, 2)


def test_finetuned_classifier_is_a_scikit_learn_estimator(tmp_path):
    from transferkit import FineTunedClassifier, datasets
    from transferkit.data import stratified_sample

    ds = datasets.load("mnist")
    idx = stratified_sample(ds.labels, 120, seed=0)
    X, y = ds.items[idx], np.array([f"digit-{v}" for v in ds.labels[idx]])
    est = FineTunedClassifier("effnet:lite0", strategy="head", epochs=2, image_size=32, lr=1e-3)
    assert clone(est).get_params() == est.get_params()
    est.fit(X, y)
    assert list(est.classes_) == sorted(set(y))
    proba = est.predict_proba(X[:10])
    assert proba.shape == (10, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert set(est.predict(X[:10])) <= set(y)
    assert est.score(X, y) > 0.3
    saved = est.save(tmp_path / "saved")
    again = FineTunedClassifier.load(saved)
    np.testing.assert_allclose(again.predict_proba(X[:10]), proba, atol=1e-6)
    assert list(again.classes_) == list(est.classes_)
    with pytest.raises(Exception, match="strategy"):
        FineTunedClassifier(strategy="bogus").fit(X[:20], y[:20])
