"""Every strategy learns on real data, trains exactly the parameters it says, and leaves the rest untouched."""

import numpy as np
import pytest
import torch

from transferkit.finetune import FinetuneConfig, finetune, load_run
from transferkit.finetune.model import TransferModel, init_head


def _start_accuracy(backbone, data, seed=0):
    """Test-split accuracy of the untrained model (calibrated standardisation, seeded random head)."""
    from transferkit.data import stratified_split

    split = stratified_split(data.labels, val=0.15, test=0.15, seed=seed)
    model = TransferModel(backbone, len(data.class_names))
    init_head(model.head, seed)
    model.calibrate(torch.as_tensor(backbone.embed([data.items[i] for i in split.train])))
    model.eval()
    with torch.no_grad():
        out = model(backbone.collate([data.items[i] for i in split.test]))
    return float((out.argmax(1).numpy() == data.labels[split.test]).mean())


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["head", "full", "last-k", "gradual", "lora"])
def test_strategy_learns_and_freezes_the_rest(strategy, lite0_64, mnist_200, tmp_path):
    start = _start_accuracy(lite0_64, mnist_200)
    before = {n: p.detach().clone() for n, p in lite0_64.model.named_parameters()}
    config = FinetuneConfig(strategy=strategy, epochs=4, batch_size=16, lr=1e-4, last_k=3)
    result = finetune(lite0_64, mnist_200, tmp_path / "run", config, backbone_options={"image_size": 64},
                      progress=False)
    acc = result.metrics["test"]["accuracy"]
    assert acc > start + 0.2, f"{strategy}: test accuracy {acc:.3f} vs {start:.3f} before training"
    saved = set(result.info["saved_parameters"])
    assert result.trainable_parameters == sum(
        p.numel() for n, p in TransferModel(lite0_64, 10).named_parameters() if n in saved)
    # every backbone weight outside the trained set is bit-identical after training
    after = dict(lite0_64.model.named_parameters())
    for name, old in before.items():
        key = "backbone." + name
        wrapped = key.rsplit(".", 1)[0] + ".base_layer." + key.rsplit(".", 1)[1]
        if key not in saved and wrapped not in saved:
            now = after.get(name)
            if now is None:  # LoRA wrapped the layer: the frozen base weight moved under .base_layer
                now = after[name.rsplit(".", 1)[0] + ".base_layer." + name.rsplit(".", 1)[1]]
            assert torch.equal(old, now), f"{strategy} changed frozen parameter {name}"
    # the run folder alone rebuilds the same predictions: the test accuracy it gives is the one training measured
    from transferkit.data import stratified_split

    run = load_run(tmp_path / "run")
    test = mnist_200.subset(stratified_split(mnist_200.labels, val=0.15, test=0.15, seed=0).test)
    assert run.precision == result.info["precision"]
    assert float((run.predict(test) == test.labels).mean()) == acc
    np.testing.assert_allclose(run.predict_proba(test).sum(1), 1.0, atol=1e-6)


def test_trainable_counts_are_ordered(lite0_64, mnist_200, tmp_path):
    counts = {}
    for strategy in ("head", "lora", "last-k", "full"):
        from transferkit.backbones import load_backbone

        bb = load_backbone("effnet:lite0", image_size=64)
        r = finetune(bb, mnist_200, tmp_path / strategy, FinetuneConfig(strategy=strategy, epochs=1, max_steps=1),
                     progress=False)
        counts[strategy] = r.trainable_parameters
        totals = r.total_parameters
    assert counts["head"] == 1280 * 10 + 10
    assert counts["head"] < counts["lora"] < counts["last-k"] < counts["full"]
    assert counts["full"] == counts["head"] + sum(p.numel() for p in lite0_64.model.parameters()
                                                  if p is not lite0_64.source_head.weight
                                                  and p is not lite0_64.source_head.bias)
    assert totals == counts["full"]  # the source classifier is not part of the network being trained


@pytest.mark.slow
def test_lora_on_the_text_encoder_trains_under_5_percent(minilm_fresh, tweets_240, tmp_path):
    config = FinetuneConfig(strategy="lora", epochs=2, batch_size=16, lr=5e-4)
    result = finetune(minilm_fresh, tweets_240, tmp_path / "run", config, progress=False)
    frac = result.trainable_parameters / result.total_parameters
    assert frac < 0.05
    assert result.info["lora_modules"] and all("attention" in m for m in result.info["lora_modules"])
    assert result.metrics["test"]["accuracy"] > 0.75  # majority class is ~0.68
