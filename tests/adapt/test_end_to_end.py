"""End-to-end DANN / CDAN / MMD through the fine-tuning loop, on a tiny real task (100 MNIST → 100 UCI digits,
EfficientNet-Lite0 at 32 px, last block + head, 2 × 5 steps): the domain loss changes the backbone, a stopped and
resumed run is bit-identical to an uninterrupted one, the folder is a fine-tuning run that `predict` reads without
the discriminator, and bad targets are one-line errors."""

import json

import numpy as np
import pytest
import torch

from transferkit import datasets
from transferkit.adapt.end_to_end import DomainTerm, adapt_end_to_end
from transferkit.backbones import load_backbone
from transferkit.data import stratified_sample
from transferkit.errors import AdaptError, TransferkitError
from transferkit.finetune import FinetuneConfig, FinetuneError, Interrupted, finetune, load_run
from transferkit.finetune.checkpoint import load_tensors

pytestmark = pytest.mark.slow

# 80 training items / batch 16 = 5 steps per epoch; dropout in the discriminator makes the RNG part of the state
CONFIG = dict(strategy="last-k", last_k=1, epochs=2, batch_size=16, lr=3e-4, val=0.2, test=0.0, checkpoint_every=4)


def _bb():
    return load_backbone("effnet:lite0", image_size=32)


@pytest.fixture(scope="module")
def source():
    ds = datasets.load("mnist")
    return ds.subset(stratified_sample(ds.labels, 100, seed=0), name="mnist[100]")


@pytest.fixture(scope="module")
def target():
    ds = datasets.load("digits")
    return ds.subset(stratified_sample(ds.labels, 100, seed=0), name="digits[100]")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, source, target):
    root = tmp_path_factory.mktemp("e2e")
    out = {"source-only": finetune(_bb(), source, root / "source-only", FinetuneConfig(**CONFIG), progress=False,
                                   backbone_options={"image_size": 32})}
    for method in ("dann-e2e", "cdan-e2e", "mmd-e2e"):
        out[method] = adapt_end_to_end(method, _bb(), source, target, root / method, FinetuneConfig(**CONFIG),
                                       target_labels=target.labels, backbone_options={"image_size": 32},
                                       progress=False)
    out["target"] = target
    return out


@pytest.mark.parametrize("method", ["dann-e2e", "cdan-e2e", "mmd-e2e"])
def test_domain_loss_changes_the_backbone(method, runs):
    base = load_tensors(runs["source-only"].out / "model.safetensors")
    adapted = load_tensors(runs[method].out / "model.safetensors")
    assert base.keys() == adapted.keys()
    trained = [k for k in base if k.startswith("backbone.") and base[k].is_floating_point() and "running" not in k]
    assert trained, "last-k should train backbone parameters"
    assert any(not torch.equal(base[k], adapted[k]) for k in trained)
    info = runs[method].info
    assert "domain_loss" not in info["config"]  # the loop's config knows nothing of domain adaptation
    assert info["terms"]["domain"]["method"] == method.removesuffix("-e2e")
    assert info["terms"]["domain"]["target_items"] == 100
    assert info["adaptation"]["method"] == method
    model = load_run(runs[method].out)  # the recorded target accuracy is the written model's
    assert info["adaptation"]["metrics"]["target_accuracy"] == pytest.approx(
        float((model.predict(runs["target"]) == runs["target"].labels).mean()))


def test_written_run_is_backbone_and_head_only_and_predict_reads_it(runs, target, tmp_path):
    from typer.testing import CliRunner

    from transferkit.cli import app

    run = runs["dann-e2e"].out
    saved = load_tensors(run / "model.safetensors")
    assert not any(k.startswith("domain.") or "disc" in k for k in saved)
    assert not (run / "state").exists()
    model = load_run(run)
    assert not any("disc" in n for n, _ in model.model.named_parameters())
    acc = float((model.predict(target) == target.labels).mean())
    assert acc == pytest.approx(json.loads((run / "run.json").read_text())["adaptation"]["metrics"]
                                ["target_accuracy"])
    from PIL import Image

    folder = tmp_path / "digits"
    for c in range(10):
        (folder / str(c)).mkdir(parents=True)
        for i in np.flatnonzero(target.labels == c)[:2]:
            Image.fromarray(target.items[i]).save(folder / str(c) / f"{i}.png")
    r = CliRunner().invoke(app, ["predict", str(run), "--data", str(folder), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.csv").read_text().count("\n") == 21  # header + 20 digits


def test_stop_and_resume_is_bit_identical(runs, source, target, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted, match="--resume"):
        adapt_end_to_end("dann-e2e", _bb(), source, target, out, FinetuneConfig(**CONFIG),
                         backbone_options={"image_size": 32}, progress=False, stop_after_steps=7)
    state = load_tensors(next((out / "state").glob("weights-*.safetensors")))
    assert any(k.startswith("domain.disc.") for k in state)  # the discriminator is part of the resume state
    with pytest.raises(FinetuneError, match="target data differ"):
        adapt_end_to_end("dann-e2e", _bb(), source, target.subset(range(90)), out, FinetuneConfig(**CONFIG),
                         backbone_options={"image_size": 32}, progress=False, resume=True)
    resumed = adapt_end_to_end("dann-e2e", _bb(), source, target, out, FinetuneConfig(**CONFIG),
                               backbone_options={"image_size": 32}, progress=False, resume=True)
    ref = load_tensors(runs["dann-e2e"].out / "model.safetensors")
    got = load_tensors(out / "model.safetensors")
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in runs["dann-e2e"].history]


def test_bad_targets_are_one_line_errors(source, target, tmp_path):
    from typer.testing import CliRunner

    from transferkit.cli import app
    from transferkit.data.dataset import Dataset

    cfg = FinetuneConfig(**CONFIG)
    text = Dataset(["a fine film", "a dull film"], None, (), "text", name="reviews")
    with pytest.raises(AdaptError, match="reads image items but the target 'reviews' holds text items"):
        adapt_end_to_end("mmd-e2e", _bb(), source, text, tmp_path / "b", cfg, progress=False)
    with pytest.raises(FinetuneError, match="is named 'head'"):
        term = DomainTerm("dann", target, 1280, 10)
        term.name = "head"  # would clash with the model's own tensors in the resume files
        finetune(_bb(), source, tmp_path / "c", cfg, terms=[term], progress=False)
    with pytest.raises(AdaptError, match="backbone must train"):
        adapt_end_to_end("dann-e2e", _bb(), source, target, tmp_path / "c", FinetuneConfig(**{**CONFIG,
                         "strategy": "head"}), progress=False)
    with pytest.raises(AdaptError, match="unknown end-to-end method"):
        adapt_end_to_end("dann", _bb(), source, target, tmp_path / "d", cfg, progress=False)
    assert not any((tmp_path / n).exists() for n in "bcd")
    # an empty target folder through the command: a TransferkitError (main() prints it as one line)
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["adapt", "--method", "dann-e2e", "--source", "bundled:digits", "--target",
                                 str(tmp_path / "empty"), "--out", str(tmp_path / "e")])
    assert isinstance(r.exception, TransferkitError) and "is empty" in str(r.exception)
    assert "\n" not in str(r.exception)


def test_target_batches_are_seeded_and_split_across_processes_like_source_batches():
    from transferkit.adapt.end_to_end import target_batch
    from transferkit.finetune.batches import global_batches, local_micro_batches

    n_source, n_target, bs = 70, 45, 16
    for epoch in (0, 1):
        batches = global_batches(n_source, bs, 0, epoch)
        tbs = [target_batch(n_target, len(b), bs, 0, epoch, i) for i, b in enumerate(batches)]
        assert [len(t) for t in tbs] == [len(b) for b in batches]
        # within an epoch the target items are a cycled permutation: every item once before any repeats
        flat = np.concatenate(tbs)
        assert sorted(flat[:n_target].tolist()) == list(range(n_target))
        assert np.array_equal(tbs[2], target_batch(n_target, len(batches[2]), bs, 0, epoch, 2))  # pure function
        for b, t in zip(batches, tbs):
            for world, accum in ((1, 1), (2, 2), (4, 1)):
                src = [local_micro_batches(b, r, world, accum) for r in range(world)]
                tgt = [local_micro_batches(t, r, world, accum) for r in range(world)]
                assert [[len(m) for m in ms] for ms in src] == [[len(m) for m in ms] for ms in tgt]
                assert sorted(i for ms in tgt for m in ms for i in m) == sorted(t.tolist())
    assert not np.array_equal(target_batch(n_target, 16, bs, 0, 0, 0), target_batch(n_target, 16, bs, 0, 1, 0))


def _domain_gap(run_dir, source, target):
    """How far apart the two domains' features are, as the head reads them: the squared distance of the domain
    means over the mean per-feature variance (scale-free, so runs whose features have other scales compare), and the
    proxy A-distance of a domain classifier."""
    from transferkit.finetune.contrastive import head_features
    from transferkit.shift import proxy_a_distance

    run = load_run(run_dir)
    cpu = torch.device("cpu")
    zs = head_features(run.model, source, np.arange(len(source)), run.backbone.collate, cpu)
    zt = head_features(run.model, target, np.arange(len(target)), run.backbone.collate, cpu)
    spread = float(np.concatenate([zs, zt]).var(0).mean())
    return float(((zs.mean(0) - zt.mean(0)) ** 2).sum() / spread), proxy_a_distance(zs, zt, seed=0)["pad"]


@pytest.fixture(scope="module")
def aligned(tmp_path_factory, source, target):
    """Source-only and MMD with enough steps to move the features (4 epochs, lr 1e-3)."""
    root = tmp_path_factory.mktemp("align")
    cfg = FinetuneConfig(**{**CONFIG, "epochs": 4, "lr": 1e-3})
    out = {"source-only": finetune(_bb(), source, root / "so", cfg, progress=False,
                                   backbone_options={"image_size": 32}).out}
    for method in ("mmd-e2e",):
        out[method] = adapt_end_to_end(method, _bb(), source, target, root / method, cfg, progress=False,
                                       backbone_options={"image_size": 32}).out
    return out


def test_the_domain_terms_really_align_the_domains(aligned, source, target):
    """The gap between the domains' mean features after MMD is well below source-only's.

    DANN is not held to it: at this size (100 items a domain, 4 epochs, the last block) its adversarial alignment
    is too weak to show reliably. Measured on a 2-core Xeon with AMX, gap after DANN / source-only's: 0.85 in bf16,
    but 1.02, 1.08 (6 epochs) and 1.80 (lr 3e-3) in fp32, while MMD's was 0.26–0.77 in all four. The sign of
    DANN's gradient reversal is tested directly (`test_gradient_reversal_negates_and_scales_gradients`)."""
    base, _ = _domain_gap(aligned["source-only"], source, target)
    gap, _ = _domain_gap(aligned["mmd-e2e"], source, target)
    assert gap < 0.95 * base, ("mmd-e2e", gap, base)


def test_guard_compares_with_the_unadapted_run(runs, source, target, tmp_path):
    """With the source-only run as reference, both networks go through the target-only validators; the record
    holds both panels (the reference's equals its own panel computed here) and both target accuracies."""
    from transferkit.adapt.source_free import network_panel

    ref = runs["source-only"].out
    res = adapt_end_to_end("mmd-e2e", _bb(), source, target, tmp_path / "g", FinetuneConfig(**CONFIG),
                           target_labels=target.labels, backbone_options={"image_size": 32}, progress=False,
                           reference_run=ref)
    rec = res.info["adaptation"]
    v = rec["validators"]
    assert v["judge"] == "classami" and v["items"] == len(target)
    assert v["before"] == pytest.approx(network_panel(load_run(ref), target, 0))
    kept = rec["kept"]
    adapted = tmp_path / "g" / "adapted" if kept == "unadapted" else tmp_path / "g"  # where the adapted run is kept
    assert v["after"] == pytest.approx(network_panel(load_run(adapted), target, 0))
    assert (v["expected"] == "hurt") == (v["after"]["classami"] < v["before"]["classami"])
    before = float((load_run(ref).predict(target) == target.labels).mean())
    assert rec["metrics"]["target_accuracy_before"] == pytest.approx(before)
    assert kept == ("unadapted" if v["expected"] == "hurt" else "adapted")
    assert (tmp_path / "g" / "adapted").exists() == (kept == "unadapted")


def test_guard_hands_over_the_unadapted_model_when_harm_is_expected(runs, source, target, tmp_path, monkeypatch):
    """When the judge expects harm the folder holds the reference's weights (predict reads it), the adapted run is
    kept whole in OUT/adapted/, and the command says so; --keep-adapted writes the adapted model."""
    from typer.testing import CliRunner

    import transferkit.adapt.source_free as sf
    from transferkit.cli import app

    real = sf.verdict
    monkeypatch.setattr(sf, "verdict", lambda b, a, n: {**real(b, a, n), "expected": "hurt"})
    ref = runs["source-only"].out
    folder = tmp_path / "digits"
    from PIL import Image

    for c in range(10):
        (folder / str(c)).mkdir(parents=True)
        for i in np.flatnonzero(target.labels == c)[:3]:
            Image.fromarray(target.items[i]).save(folder / str(c) / f"{i}.png")
    src = tmp_path / "mnist"
    for c in range(10):
        (src / str(c)).mkdir(parents=True)
        for i in np.flatnonzero(source.labels == c):
            Image.fromarray(source.items[i]).save(src / str(c) / f"{i}.png")
    out = tmp_path / "g"
    args = ["adapt", "--method", "mmd-e2e", "--source", str(src), "--target", str(folder), "--model", "effnet:lite0",
            "--image-size", "32", "--strategy", "last-k", "--epochs", "2", "--param", "last_k=1",
            "--param", "batch_size=16", "--param", "val=0.2", "--param", "test=0.0", "--source-run", str(ref),
            "--target-labels"]
    r = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "expect mmd-e2e to hurt" in r.output and "unadapted source model was written" in r.output
    assert "unadapted model written to" in r.output
    info = json.loads((out / "run.json").read_text())
    assert info["adaptation"]["kept"] == "unadapted"
    assert info["adaptation"]["adapted_run"] == str((out / "adapted").resolve())
    for k, t in load_tensors(ref / "model.safetensors").items():
        assert torch.equal(t, load_tensors(out / "model.safetensors")[k])
    adapted = load_run(out / "adapted")  # nothing lost: the adapted run is a complete run folder
    own = json.loads((out / "adapted" / "run.json").read_text())["adaptation"]
    acc = info["adaptation"]["metrics"]
    assert acc["target_accuracy"] == acc["target_accuracy_before"]
    # on its own the adapted folder describes the adapted model
    assert own["method"] == "mmd-e2e" and own["kept"] == "adapted" and "handed_over" in own
    assert own["metrics"]["target_accuracy"] == acc["target_accuracy_adapted"]
    r = CliRunner().invoke(app, [*args, "--out", str(out)])  # the handed-over folder is not trained over
    assert r.exit_code != 0 and "handed over" in f"{r.output}{r.exception}"
    assert adapted.predict(target).shape == (len(target),)
    r = CliRunner().invoke(app, ["predict", str(out), "--data", str(folder), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "k"), "--keep-adapted"])
    assert r.exit_code == 0, r.output
    assert "written anyway (--keep-adapted)" in r.output
    assert json.loads((tmp_path / "k" / "run.json").read_text())["adaptation"]["kept"] == "adapted"
    assert not (tmp_path / "k" / "adapted").exists()


def test_guard_refuses_an_adapted_reference_and_keep_adapted_without_one(runs, source, target, tmp_path):
    from typer.testing import CliRunner

    from transferkit.cli import app

    with pytest.raises(AdaptError, match="is itself adapted"):
        adapt_end_to_end("mmd-e2e", _bb(), source, target, tmp_path / "x", FinetuneConfig(**CONFIG),
                         reference_run=runs["mmd-e2e"].out, progress=False)
    assert not (tmp_path / "x").exists()  # refused before training
    r = CliRunner().invoke(app, ["adapt", "--method", "mmd-e2e", "--source", "bundled:digits", "--target",
                                 "bundled:digits", "--out", str(tmp_path / "y"), "--keep-adapted"])
    assert r.exit_code != 0 and "only gives with --source-run" in f"{r.output}{r.exception}"


def test_guard_refuses_a_reference_of_other_classes(runs, source, target, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(runs["source-only"].out, other)
    info = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**info, "class_names": [f"c{i}" for i in range(10)]}))
    with pytest.raises(AdaptError, match="predicts classes"):
        adapt_end_to_end("mmd-e2e", _bb(), source, target, tmp_path / "x", FinetuneConfig(**CONFIG),
                         reference_run=other, progress=False)
