"""Optimisation options: layer-wise rates, schedules, accumulation, class weights, regression targets."""

import numpy as np
import pytest

from transferkit.backbones import load_backbone
from transferkit.finetune import FinetuneConfig, FinetuneError, finetune
from transferkit.finetune.model import TransferModel
from transferkit.finetune.optim import lr_factor, param_groups


def test_layer_decay_gives_each_block_its_rate():
    bb = load_backbone("effnet:lite0", image_size=32)
    model = TransferModel(bb, 3)
    cfg = FinetuneConfig(lr=1e-3, head_lr=5e-2, layer_decay=0.5)
    groups = param_groups(model, bb, cfg, {n for n, _ in model.named_parameters()})
    rate = {n: g["lr"] for g in groups for n in g["names"]}
    n = len(bb.blocks)
    assert rate["head.weight"] == 5e-2
    assert rate["backbone._conv_head.weight"] == pytest.approx(1e-3)  # last block: lr
    assert rate["backbone._conv_stem.weight"] == pytest.approx(1e-3 * 0.5 ** (n - 1))  # first block
    decay = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert decay["head.bias"] == 0.0 and decay["backbone._bn0.weight"] == 0.0 and decay["head.weight"] > 0


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
def test_schedules_start_peak_and_end_where_they_should(schedule):
    cfg = FinetuneConfig(schedule=schedule, warmup=0.1)
    f = [lr_factor(cfg, s, 100) for s in range(101)]
    assert max(f) == pytest.approx(1.0, abs=0.02)
    if schedule == "constant":
        assert set(f) == {1.0}
    else:
        assert f[0] < 0.2 and f[-1] < 0.01 and np.argmax(f) in range(5, 35)


def test_options_run_together_on_real_data(tmp_path):
    from transferkit import datasets
    from transferkit.data import stratified_sample

    ds = datasets.load("digits")
    ds = ds.subset(stratified_sample(ds.labels, 100, seed=0))
    opts = dict(strategy="last-k", last_k=1, optimizer="sgd", schedule="onecycle", layer_decay=0.7,
                label_smoothing=0.1, grad_accum=2, batch_size=16, class_weights="balanced", epochs=2, lr=1e-2)
    cfg = FinetuneConfig(**opts)
    r = finetune(load_backbone("effnet:lite0", image_size=32), ds, tmp_path / "run", cfg, progress=False)
    # 60 training items (6 a class) in global batches of 16: 4 optimizer steps an epoch (grad_accum splits a
    # batch into micro-batches; it never adds steps)
    assert r.info["data"]["train"] == 60
    assert r.steps == 8 and [h["step"] for h in r.history] == [4, 8] and "val_accuracy" in r.history[0]
    # the one-cycle schedule at the head's rate (10 × lr: the last, fastest group) after steps 4 and 8
    assert [h["lr"] for h in r.history] == pytest.approx([10 * 1e-2 * lr_factor(cfg, s, 8) for s in (4, 8)])
    assert r.history[-1]["lr"] < 1e-4 < r.history[0]["lr"]
    # only the last block and the head train
    bb = load_backbone("effnet:lite0", image_size=32)
    assert r.trainable_parameters == 1280 * 10 + 10 + sum(p.numel() for p in bb.block_parameters(-1))
    # and the options change what is learned: the same run with the default recipe trains another way
    plain = finetune(load_backbone("effnet:lite0", image_size=32), ds, tmp_path / "plain",
                     FinetuneConfig(strategy="last-k", last_k=1, batch_size=16, epochs=2, lr=1e-2), progress=False)
    assert [h["train_loss"] for h in plain.history] != pytest.approx([h["train_loss"] for h in r.history], rel=1e-3)
    with_smoothing = finetune(load_backbone("effnet:lite0", image_size=32), ds, tmp_path / "s0",
                              FinetuneConfig(**{**opts, "label_smoothing": 0.0}), progress=False)
    assert with_smoothing.history[0]["train_loss"] != pytest.approx(r.history[0]["train_loss"], rel=1e-4)


def test_regression_target(tmp_path):
    """The real-valued VADER sentiment score of tweets as the target: held-out R², float predictions."""
    from transferkit import datasets
    from transferkit.data import Dataset, stratified_sample
    from transferkit.finetune import load_run

    ds = datasets.load("sentiment-tweets")
    idx = stratified_sample(ds.labels, 200, seed=0)
    scores = np.asarray(ds.meta["scores"], dtype=np.float64)[idx]
    reg = Dataset([ds.items[i] for i in idx], scores, (), "text", name="tweet-scores")
    r = finetune(load_backbone("st:all-MiniLM-L6-v2"), reg, tmp_path / "run",
                 FinetuneConfig(strategy="head", epochs=5, lr=1e-4), progress=False)
    assert r.info["task"] == "regression" and set(r.metrics["test"]) == {"r2", "mae"}
    assert r.metrics["test"]["r2"] > 0.3
    pred = load_run(tmp_path / "run").predict(reg.subset(np.arange(5)))
    assert pred.dtype.kind == "f" and pred.shape == (5,)


def test_bad_settings_name_the_option():
    for kw, word in [({"epochs": 0}, "epochs"), ({"layer_decay": 1.5}, "layer_decay"), ({"warmup": 1.0}, "warmup"),
                     ({"optimizer": "lion"}, "optimizer"), ({"class_weights": "inverse"}, "class_weights")]:
        with pytest.raises(FinetuneError, match=word):
            FinetuneConfig(**kw)


def test_one_class_and_unlabelled_data_are_refused(tmp_path):
    from transferkit.data import Dataset
    from transferkit.errors import DataError

    items = [np.zeros((8, 8), np.uint8)] * 6
    with pytest.raises(DataError, match="only one class"):
        finetune(load_backbone("effnet:lite0", image_size=32), Dataset(items, np.zeros(6, int), ("a", "b"), "image"),
                 tmp_path / "a", FinetuneConfig(), progress=False)
    with pytest.raises(DataError, match="no labels"):
        finetune(load_backbone("effnet:lite0", image_size=32), Dataset(items, None, (), "image"), tmp_path / "b",
                 FinetuneConfig(), progress=False)


def test_runs_of_another_precision_follow_each_other_in_one_process(tmp_path):
    """Accelerate keeps one state per process: a bf16 run then an fp32 run (a notebook, a refit) both work."""
    from transferkit import datasets
    from transferkit.data import stratified_sample

    ds = datasets.load("digits")
    ds = ds.subset(stratified_sample(ds.labels, 60, seed=0))
    done = [finetune(load_backbone("effnet:lite0", image_size=32), ds, tmp_path / f"{i}-{p}",
                     FinetuneConfig(strategy="head", epochs=1, precision=p), progress=False).info["precision"]
            for i, p in enumerate(("bf16", "fp32", "bf16"))]
    assert done == ["bf16", "fp32", "bf16"]


def test_auto_trains_a_cnn_on_the_cpu_in_fp32_and_a_transformer_as_the_policy_says(lite0_small, minilm, monkeypatch):
    """bf16 autocast diverged when fine-tuning EfficientNet-Lite0 on an AMX CPU and was not faster
    (`training_precision`), so "auto" keeps CNNs on the CPU in fp32 even where bf16 is native."""
    from transferkit.finetune import loop

    monkeypatch.setattr(loop, "resolve_precision", lambda precision, device: "bf16" if precision != "fp32" else "fp32")
    assert loop.training_precision("auto", "cpu", lite0_small.model) == "fp32"
    assert loop.training_precision("bf16", "cpu", lite0_small.model) == "bf16"  # asked for by name
    assert loop.training_precision("auto", "cpu", minilm.model) == "bf16"
    monkeypatch.setattr(loop, "resolve_precision", lambda precision, device: "fp32")  # an AVX2-only host
    assert loop.training_precision("auto", "cpu", minilm.model) == "fp32"
