"""The contrastive (SetFit-style) strategy: balanced pairs of training items only, the cosine loss, a head that is
the logistic regression of the tuned features, exact resume, and a run folder that predicts like any other."""

import numpy as np
import pytest
import torch

from transferkit.data import stratified_split
from transferkit.finetune import FinetuneConfig, FinetuneError, Interrupted, finetune, load_run
from transferkit.finetune.contrastive import HEAD_C, PairTerm, head_features
from transferkit.finetune.terms import TermBatch


def _term(n=60, k=3, seed=0):
    from transferkit.data import from_arrays

    labels = np.arange(n) % k
    ds = from_arrays([f"item {i}" for i in range(n)], labels.tolist())
    train = np.arange(0, n, 2)  # every other item trains; the rest must never be drawn
    return PairTerm(ds, np.asarray(ds.labels), train, seed=seed), np.asarray(ds.labels), train


def test_partners_are_training_items_half_of_them_of_the_same_class():
    term, labels, train = _term()
    same, total = 0, 0
    for position in range(40):
        source = np.random.default_rng(position).choice(train, 16, replace=False)
        partners = term.extra_items(3, position, source)
        assert len(partners) == len(source) and set(partners) <= set(train)
        assert not np.any(partners == source)  # an item is never its own positive while its class has others
        same += int((labels[partners] == labels[source]).sum())
        total += len(source)
        assert np.array_equal(partners, term.extra_items(3, position, source))  # a pure function: resume draws them
    assert 0.42 < same / total < 0.58, same / total  # balanced, although only a third of random pairs would match
    assert not np.array_equal(term.extra_items(3, 0, source), term.extra_items(4, 0, source))


def test_the_loss_is_the_squared_cosine_error_against_same_class():
    term, labels, train = _term()
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(8, 5)), rng.normal(size=(8, 5))
    src, part = train[:8], train[8:16]
    batch = TermBatch(torch.zeros(8, 3), torch.as_tensor(u, dtype=torch.float32), torch.zeros(8, 3),
                      torch.as_tensor(v, dtype=torch.float32), source_index=src, index=part)
    cos = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    want = ((cos - (labels[src] == labels[part])) ** 2).sum()
    assert float(term.loss(batch, 0.0)) == pytest.approx(want, rel=1e-5)


@pytest.fixture(scope="module")
def tweets_96():
    from transferkit import datasets
    from transferkit.data import stratified_sample

    ds = datasets.load("sentiment-tweets")
    return ds.subset(stratified_sample(ds.labels, 96, seed=3))


CONFIG = dict(strategy="contrastive", epochs=2, batch_size=16, lr=2e-5, val=0.25, test=0.25, checkpoint_every=2)


@pytest.fixture(scope="module")
def reference(tweets_96, tmp_path_factory):
    from transferkit.backbones import load_backbone

    out = tmp_path_factory.mktemp("contrastive") / "run"
    return finetune(load_backbone("st:all-MiniLM-L6-v2"), tweets_96, out, FinetuneConfig(**CONFIG), progress=False)


def test_the_body_trains_and_the_head_is_the_fitted_logistic_regression(reference, tweets_96):
    from sklearn.linear_model import LogisticRegression

    from transferkit.backbones import load_backbone

    fresh = load_backbone("st:all-MiniLM-L6-v2")
    run = load_run(reference.out)
    moved = [n for n, p in fresh.model.named_parameters()
             if not torch.equal(p, dict(run.model.backbone.named_parameters())[n])]
    assert len(moved) > 50  # the whole body, not only a head, was tuned on the pairs
    from transferkit.runtime import autocast

    split = stratified_split(tweets_96.labels, val=0.25, test=0.25, seed=0)
    cpu = torch.device("cpu")

    def feats(idx):  # in the precision the run trained (and fitted its head) in
        return head_features(run.model, tweets_96, idx, run.backbone.collate, cpu, lambda: autocast(cpu, run.precision))

    lr = LogisticRegression(C=HEAD_C, max_iter=2000, random_state=0).fit(feats(split.train),
                                                                        tweets_96.labels[split.train])
    zt = feats(split.test)
    test = tweets_96.subset(split.test)
    assert np.array_equal(run.predict(test), lr.predict(zt))  # the folder's head is that regression
    assert float((run.predict(test) == test.labels).mean()) == reference.metrics["test"]["accuracy"]
    assert reference.history[-1]["val_loss"] > 0 and "lr_search" not in reference.info


def test_resume_matches_an_uninterrupted_run(reference, tweets_96, tmp_path):
    from transferkit.backbones import load_backbone
    from transferkit.finetune.checkpoint import load_tensors

    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        finetune(load_backbone("st:all-MiniLM-L6-v2"), tweets_96, out, FinetuneConfig(**CONFIG), progress=False,
                 stop_after_steps=4)
    resumed = finetune(load_backbone("st:all-MiniLM-L6-v2"), tweets_96, out, FinetuneConfig(**CONFIG),
                       progress=False, resume=True)
    a, b = load_tensors(reference.out / "model.safetensors"), load_tensors(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics == reference.metrics


def test_regression_is_refused_in_one_line(tmp_path):
    from transferkit.backbones import load_backbone
    from transferkit.data import from_arrays

    ds = from_arrays([f"text {i}" for i in range(20)], [float(i) for i in range(20)], task="regression")
    with pytest.raises(FinetuneError, match="needs class labels"):
        finetune(load_backbone("st:all-MiniLM-L6-v2"), ds, tmp_path / "r", FinetuneConfig(strategy="contrastive"),
                 progress=False)
