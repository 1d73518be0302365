"""A fine-tuning run with a time limit (how `fit` spends its budget) stops there, validates the part of the epoch
it did, keeps its best weights and says why it stopped."""

from transferkit.finetune import FinetuneConfig, finetune, load_run


def test_the_time_limit_ends_the_run_inside_its_first_epoch(lite0_64, mnist_200, tmp_path):
    config = FinetuneConfig(strategy="head", epochs=3, batch_size=16, lr=1e-3, time_limit_s=1e-3)
    result = finetune(lite0_64, mnist_200, tmp_path / "run", config, backbone_options={"image_size": 64},
                      progress=False)
    assert result.steps == 1 and "time limit 0.001 s reached in epoch 1" in result.info["stopped"]
    (row,) = result.history
    assert row["partial"] and row["batches"] == 1 and 0 < row["epoch"] < 1 and "val_accuracy" in row
    run = load_run(tmp_path / "run")
    test = mnist_200.subset(list(range(10)))
    assert run.predict(test).shape == (10,)


def test_without_a_time_limit_the_same_run_goes_on(lite0_64, mnist_200, tmp_path):
    config = FinetuneConfig(strategy="head", epochs=1, batch_size=16, lr=1e-3, max_steps=3, time_limit_s=3600)
    result = finetune(lite0_64, mnist_200, tmp_path / "run", config, backbone_options={"image_size": 64},
                      progress=False)
    assert result.steps == 3 and "max_steps=3" in result.info["stopped"]


def test_a_run_that_trails_the_leader_stops_after_a_third_of_its_epochs(lite0_64, mnist_200, tmp_path):
    config = FinetuneConfig(strategy="head", epochs=5, batch_size=32, lr=1e-3, max_steps=None, stop_below=1.01)
    result = finetune(lite0_64, mnist_200, tmp_path / "run", config, backbone_options={"image_size": 64},
                      progress=False)
    assert len(result.history) == 2 and result.info["stopped"].startswith("racing: best val accuracy")
    from transferkit.finetune.config import race_after

    assert race_after(5) == 2 and race_after(20) == 7  # a contrastive run's one-step epochs get a third of its 20
    reachable = FinetuneConfig(strategy="head", epochs=3, batch_size=32, lr=1e-3, stop_below=0.0)
    assert len(finetune(lite0_64, mnist_200, tmp_path / "r2", reachable, backbone_options={"image_size": 64},
                        progress=False).history) == 3


def test_the_race_threshold_is_the_leader_less_its_noise():
    from transferkit.report.runner import race_threshold

    doc = {"strategies": [{"status": "ok", "metrics": {"val_accuracy": 0.9}},
                          {"status": "failed"}, {"status": "ok", "metrics": {"val_accuracy": 0.8}}]}
    p = (0.9 * 100 + 1) / 102
    assert race_threshold(doc, 100) == round(0.9 - 2 * (p * (1 - p) / 100) ** 0.5, 4)  # about 0.84
    assert race_threshold(doc, 10**6) == 0.88  # at least 2 points below the leader
    perfect = {"strategies": [{"status": "ok", "metrics": {"val_accuracy": 1.0}}]}
    assert race_threshold(perfect, 5) < 0.75  # 5 of 5 on validation is not certainty
    assert race_threshold({"strategies": []}, 100) is None
