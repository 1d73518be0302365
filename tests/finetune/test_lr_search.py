"""lr="auto": successive halving over short trials chooses on validation, resumes a half-done search, records the
choice in the run folder, and a resumed run keeps the rate it chose."""

import json
import math
from types import SimpleNamespace

import pytest

from transferkit.finetune import FinetuneConfig, FinetuneError, finetune
from transferkit.finetune import lr_search as S
from transferkit.finetune.config import DEFAULT_LR


def test_candidates_and_rungs():
    assert S.candidates("lora") == [0.000333, 0.001, 0.003, 0.01]
    assert S.candidates("full")[1] == DEFAULT_LR["full"]
    assert S.plan(4, 3) == [(4, 3), (2, 6)]  # halve the candidates, double the steps, until one is left
    assert S.plan(3, 5) == [(3, 5), (2, 10)]
    assert S.rung_steps(16, 32) == 3 and S.rung_steps(550, 32) == 5 and S.rung_steps(100_000, 32) == 25


class FakeTrainer:
    """Scores each rate by a fixed table (by rung), counting the trials it runs."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def __call__(self, backbone, out, config):
        rung = 0 if config.max_steps == self.first else 1
        self.calls.append((rung, config.lr, config.max_steps, config.time_limit_s))
        acc, loss = self.table[rung][config.lr]
        return SimpleNamespace(history=[{"epoch": 1, "val_accuracy": acc, "val_loss": loss}], steps=config.max_steps,
                               info={}, wall_time_s=0.1)


def _fake(tmp_path, table, **cfg):
    config = FinetuneConfig(strategy="lora", lr="auto", batch_size=32, **cfg)
    trainer = FakeTrainer(table)
    trainer.first = S.rung_steps(200, 32)
    return trainer, config


def test_the_better_half_goes_on_and_the_best_of_the_last_rung_wins(tmp_path):
    lo, mid, hi, top = S.candidates("lora")
    table = [{lo: (0.70, 0.6), mid: (0.80, 0.5), hi: (0.80, 0.4), top: (0.50, 2.0)},  # hi beats mid on the loss
             {mid: (0.90, 0.3), hi: (0.85, 0.2)}]
    trainer, config = _fake(tmp_path, table, time_limit_s=100)
    rec = S.search_lr(trainer, object(), tmp_path, config, n_train=200)
    assert [(r, lr) for r, lr, _, _ in trainer.calls] == [(0, lo), (0, mid), (0, hi), (0, top), (1, hi), (1, mid)]
    assert rec["chosen"] == mid  # rung 2 decides, on accuracy first
    steps = [s for _, _, s, _ in trainer.calls]
    assert steps == [3, 3, 3, 3, 6, 6]
    # the search spends at most its share of the time limit, each trial in proportion to its steps
    assert sum(t for *_, t in trainer.calls) == pytest.approx(100 * S.TIME_SHARE)
    assert json.loads((tmp_path / S.RECORD).read_text())["chosen"] == mid


def test_an_interrupted_search_reuses_its_finished_trials(tmp_path):
    lo, mid, hi, top = S.candidates("lora")
    table = [{lo: (0.7, 1), mid: (0.8, 1), hi: (0.6, 1), top: (0.5, 1)}, {lo: (0.9, 1), mid: (0.8, 1)}]
    trainer, config = _fake(tmp_path, table)

    class Boom(Exception):
        pass

    def breaks_at_the_third(backbone, out, cfg):
        if len(trainer.calls) == 2:
            raise Boom
        return trainer(backbone, out, cfg)

    with pytest.raises(Boom):
        S.search_lr(breaks_at_the_third, object(), tmp_path, config, n_train=200, key={"data": "a"})
    assert len(trainer.calls) == 2
    rec = S.search_lr(trainer, object(), tmp_path, config, n_train=200, key={"data": "a"})
    assert len(trainer.calls) == 2 + 2 + 2 and rec["chosen"] == lo  # two trials were not run again
    S.search_lr(trainer, object(), tmp_path, config, n_train=200, key={"data": "other"})
    assert len(trainer.calls) == 6 + 6  # other data: the recorded trials do not count


def test_auto_is_recorded_and_a_resumed_run_keeps_its_rate(tmp_path, monkeypatch):
    from transferkit import datasets
    from transferkit.backbones import load_backbone
    from transferkit.data import stratified_sample
    from transferkit.finetune import Interrupted

    ds = datasets.load("digits")
    ds = ds.subset(stratified_sample(ds.labels, 120, seed=0))
    config = FinetuneConfig(strategy="head", lr="auto", epochs=2, batch_size=16, checkpoint_every=2)
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        finetune(load_backbone("effnet:lite0", image_size=32), ds, out, config, progress=False, stop_after_steps=3)
    info = json.loads((out / "run.json").read_text())
    chosen = info["lr_search"]["chosen"]
    assert info["config"]["lr"] == chosen and chosen in S.candidates("head")
    assert len(info["lr_search"]["trials"]) == 6 and not (out / "lr-search").exists()  # trial folders are gone
    monkeypatch.setattr("transferkit.finetune.loop.search_lr", lambda *a, **k: pytest.fail("searched again"))
    done = finetune(load_backbone("effnet:lite0", image_size=32), ds, out, config, progress=False, resume=True)
    assert done.info["config"]["lr"] == chosen and done.info["lr_search"]["chosen"] == chosen
    assert done.steps == 2 * math.ceil(done.info["data"]["train"] / 16)  # the whole run, on the rate it chose


def test_bad_rates_are_refused_in_one_line():
    with pytest.raises(FinetuneError, match="'auto' to search"):
        FinetuneConfig(lr="fast")
    with pytest.raises(FinetuneError, match="> 0"):
        FinetuneConfig(lr=-1.0)
    assert FinetuneConfig(lr="3e-4").lr == 3e-4
    with pytest.raises(FinetuneError, match="chosen by the learning-rate search"):
        FinetuneConfig(lr="auto").head_rate  # noqa: B018


def test_a_trial_run_writes_no_model_and_skips_the_test_split(tmp_path):
    from transferkit import datasets
    from transferkit.backbones import load_backbone
    from transferkit.data import stratified_sample

    ds = datasets.load("digits")
    ds = ds.subset(stratified_sample(ds.labels, 120, seed=0))
    config = FinetuneConfig(strategy="head", lr=1e-3, epochs=1, batch_size=16)
    res = finetune(load_backbone("effnet:lite0", image_size=32), ds, tmp_path / "t", config, progress=False,
                   trial=True)
    assert set(res.metrics) == {"val"} and res.history and "val_loss" in res.history[-1]
    assert not (tmp_path / "t" / "model.safetensors").exists() and not (tmp_path / "t" / "model.json").exists()


def test_an_uninterrupted_auto_run_writes_its_model_and_test_scores(tmp_path):
    """The run that searched (not only one resumed after the search) is a whole model folder."""
    from transferkit import datasets
    from transferkit.backbones import load_backbone
    from transferkit.data import stratified_sample

    ds = datasets.load("digits")
    ds = ds.subset(stratified_sample(ds.labels, 120, seed=0))
    config = FinetuneConfig(strategy="head", lr="auto", epochs=1, batch_size=16)
    res = finetune(load_backbone("effnet:lite0", image_size=32), ds, tmp_path / "a", config, progress=False)
    assert set(res.metrics) == {"val", "test"} and res.info["lr_search"]["chosen"] in S.candidates("head")
    assert (tmp_path / "a" / "model.safetensors").exists() and (tmp_path / "a" / "model.json").exists()
