"""Source-free adaptation of a fine-tuned CNN run (AdaBN, TENT): the written run folder is a fine-tuning run that
`predict` reads, its batch-norm statistics are the target's, TENT moves only norm affine parameters, and user
errors are clear. A tiny run (EfficientNet-Lite0 at 32 px, head strategy, 120 MNIST digits, one epoch) keeps it fast."""

import json

import numpy as np
import pytest
import torch

from transferkit import datasets
from transferkit.adapt.source_free import adapt_run
from transferkit.data import load_image_folder, stratified_sample
from transferkit.errors import AdaptError
from transferkit.finetune import load_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    from transferkit.backbones import load_backbone
    from transferkit.finetune import FinetuneConfig, finetune

    mnist = datasets.load("mnist")
    mnist = mnist.subset(stratified_sample(mnist.labels, 120, seed=0), name="mnist[120]")
    out = tmp_path_factory.mktemp("sf") / "source"
    finetune(load_backbone("effnet:lite0", image_size=32), mnist, out,
             FinetuneConfig(strategy="head", epochs=1, batch_size=32, seed=0), backbone_options={"image_size": 32},
             progress=False)
    return out


@pytest.fixture(scope="module")
def target():
    ds = datasets.load("digits")
    return ds.subset(stratified_sample(ds.labels, 128, seed=0), name="digits[128]")


def _assert_accuracies_are_the_models(rec, src, adapted, target):
    """The record's before/after target accuracies are those of the source run and of the written folder."""
    y = np.asarray(target.labels)
    assert rec["metrics"]["target_accuracy_before"] == pytest.approx(float((src.predict(target) == y).mean()))
    assert rec["metrics"]["target_accuracy"] == pytest.approx(float((adapted.predict(target) == y).mean()))


def _first_bn(model):
    return next(m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


def test_adabn_writes_a_run_whose_bn_statistics_are_the_targets(source_run, target, tmp_path):
    rec = adapt_run("adabn", source_run, target, tmp_path / "adabn", batch_size=64,
                    target_labels=np.asarray(target.labels), keep_adapted=True)
    assert rec["target_items"] == 128
    src, ada = load_run(source_run), load_run(tmp_path / "adabn")
    _assert_accuracies_are_the_models(rec, src, ada, target)
    assert ada.info["adaptation"]["method"] == "adabn" and ada.class_names == src.class_names
    # the first BN layer's running mean is the mean of its input over the target (two equal batches of 64)
    seen = []
    bn = _first_bn(src.model)
    hook = bn.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().double().mean((0, 2, 3))))
    with torch.no_grad():
        for s in (0, 64):
            src.model(src.backbone.collate(list(target.items[s:s + 64])))
    hook.remove()
    expected = (seen[0] + seen[1]) / 2
    got = _first_bn(ada.model).running_mean.double()
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-4)
    assert not torch.allclose(bn.running_mean.double(), expected, rtol=1e-2, atol=1e-3)  # source's were different
    assert ada.predict(target).shape == (128,)


def test_tent_moves_only_norm_affine_parameters(source_run, target, tmp_path):
    adapt_run("tent", source_run, target, tmp_path / "tent", batch_size=32, keep_adapted=True)
    src, ten = load_run(source_run), load_run(tmp_path / "tent")
    a, b = dict(src.model.named_parameters()), dict(ten.model.named_parameters())
    norm_params = {f"{n}.{k}" for n, m in src.model.named_modules()
                   if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for k in ("weight", "bias")}
    changed = {n for n in a if not torch.equal(a[n], b[n])}
    assert changed and changed <= norm_params


def test_shot_pseudo_labels_are_the_nearest_refined_centroids():
    from transferkit.adapt.source_free import shot_pseudo_labels

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 6)) + np.repeat(np.eye(6)[:4] * 3, 10, axis=0)
    probs = rng.dirichlet(np.ones(4), size=40)
    # direct float64 computation of SHOT's obtain_label: augmented unit features, soft then hard centroids
    f = np.hstack([feats, np.ones((40, 1))])
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    c = probs.T @ f / probs.sum(0)[:, None]
    lab = np.argmax(f @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T, 1)
    onehot = np.eye(4)[lab]
    c = onehot.T @ f / (onehot.sum(0)[:, None] + 1e-8)
    lab = np.argmax(f @ (c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)).T, 1)
    got = shot_pseudo_labels(torch.as_tensor(feats, dtype=torch.float32), torch.as_tensor(probs))
    assert got.tolist() == lab.tolist()
    assert len(set(lab.tolist())) > 1


def test_shot_trains_the_backbone_only_and_lowers_information_maximization(source_run, target, tmp_path):
    from transferkit.adapt.losses import information_maximization

    rec = adapt_run("shot", source_run, target, tmp_path / "shot", batch_size=32, epochs=1, keep_adapted=True,
                    target_labels=np.asarray(target.labels))
    assert rec["method"] == "shot" and rec["hyperparameters"]["beta"] == 0.3
    src, shot = load_run(source_run), load_run(tmp_path / "shot")
    _assert_accuracies_are_the_models(rec, src, shot, target)
    a, b = dict(src.model.named_parameters()), dict(shot.model.named_parameters())
    assert torch.equal(a["head.weight"], b["head.weight"]) and torch.equal(a["head.bias"], b["head.bias"])
    assert any(not torch.equal(a[n], b[n]) for n in a if n.startswith("backbone."))
    for x, y in zip(src.model.buffers(), shot.model.buffers()):  # batch-norm statistics stay the source run's
        assert torch.equal(x, y)

    def im(run):
        return float(information_maximization(torch.as_tensor(run.outputs(target))))

    assert im(shot) < im(src)
    assert shot.predict(target).shape == (128,)


def test_source_free_user_errors_are_clear(source_run, target, tmp_path):
    with pytest.raises(AdaptError, match="unknown source-free method"):
        adapt_run("jigsaw", source_run, target, tmp_path / "x")
    with pytest.raises(AdaptError, match="at least 2 target items"):
        adapt_run("adabn", source_run, target.subset([0]), tmp_path / "y")
    with pytest.raises(AdaptError, match="already holds a run"):
        adapt_run("adabn", source_run, target, source_run)


def test_cli_adapt_adabn_writes_a_run_that_predict_reads(source_run, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from transferkit.cli import app

    ds = datasets.load("digits")
    folder = tmp_path / "digits"
    for c in range(10):
        (folder / str(c)).mkdir(parents=True)
        for i in np.flatnonzero(ds.labels == c)[:4]:
            Image.fromarray(ds.items[i]).save(folder / str(c) / f"{i}.png")
    runner = CliRunner()
    out = tmp_path / "cli-adabn"
    r = runner.invoke(app, ["adapt", "--method", "adabn", "--source-run", str(source_run), "--target",
                            str(folder), "--target-labels", "--out", str(out), "--json", "--keep-adapted"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    assert rec["method"] == "adabn" and rec["target_items"] == 40 and rec["kept"] == "adapted"
    labels = np.array([int(p.parent.name) for p in sorted(folder.rglob("*.png"))])
    assert rec["metrics"]["target_accuracy"] == pytest.approx(
        float((load_run(out).predict(load_image_folder(folder)) == labels).mean()))
    r = runner.invoke(app, ["predict", str(out), "--data", str(folder), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.csv").read_text().count("\n") == 41  # header + 40 digits
    r = runner.invoke(app, ["adapt", "--method", "adabn", "--target", str(folder), "--out", str(tmp_path / "z")])
    assert "--source-run" in str(r.exception)


@pytest.mark.parametrize("expected", ["hurt", "help"])
def test_when_the_validators_expect_harm_the_unadapted_model_is_handed_over(expected, source_run, target, tmp_path,
                                                                          monkeypatch):
    """The judge (ClassAMI) scores the network before and after; a worse score keeps the source model, and says so."""
    import transferkit.adapt.source_free as sf

    real, calls = sf.network_panel, []

    def scripted(run, items, seed=0):
        scores = real(run, items, seed)
        calls.append(scores)
        if len(calls) == 2:  # after adapting: worse or better than before, as the test says
            scores = {**scores, "classami": calls[0]["classami"] + (-0.1 if expected == "hurt" else 0.1)}
        return scores

    monkeypatch.setattr(sf, "network_panel", scripted)
    y = np.asarray(target.labels)
    rec = adapt_run("adabn", source_run, target, tmp_path / "a", target_labels=y)
    v = rec["validators"]
    assert v["judge"] == "classami" and v["expected"] == expected and set(v["before"]) == set(v["after"])
    assert {"entropy", "im", "bnm", "classami", "snd"} == set(v["before"])
    src, out = _first_bn(load_run(source_run).model), _first_bn(load_run(tmp_path / "a").model)
    if expected == "hurt":  # the source's own batch-norm statistics
        assert rec["kept"] == "unadapted" and torch.equal(src.running_mean, out.running_mean)
        assert rec["metrics"]["target_accuracy"] == rec["metrics"]["target_accuracy_before"]
    else:
        assert rec["kept"] == "adapted" and not torch.equal(src.running_mean, out.running_mean)
        assert rec["metrics"]["target_accuracy"] == rec["metrics"]["target_accuracy_adapted"]
    assert load_run(tmp_path / "a").predict(target).shape == (len(target),)
