"""The strong simple baselines on real bundled data: they learn, choose on validation only, and round-trip
through a model folder (no pickle) to the very same answers."""

import numpy as np
import pytest

from transferkit import datasets
from transferkit.baselines import BaselineError, fit_baseline, save_baseline
from transferkit.data import stratified_sample, stratified_split
from transferkit.model import load_model


def _task(name, n=None, seed=0):
    ds = datasets.load(name)
    if n:
        ds = ds.subset(stratified_sample(ds.labels, n, seed=seed))
    return ds, stratified_split(ds.labels, val=0.15, test=0.15, seed=seed, class_names=ds.class_names)


def _accuracy(fitted, ds, idx):
    return float((fitted.predict([ds.items[i] for i in idx]) == ds.labels[idx]).mean())


def _save_and_load(fitted, ds, folder):
    save_baseline(folder, fitted, class_names=list(ds.class_names), metrics={}, data={"name": ds.name})
    return load_model(folder)


def test_tfidf_learns_sms_spam_and_round_trips_exactly(tmp_path):
    ds, split = _task("sms-spam", 1500)
    fitted = fit_baseline("auto", ds, split)
    assert fitted.method == "tfidf" and fitted.featurizer.dim > 10_000  # word and character n-grams
    acc = _accuracy(fitted, ds, split.test)
    assert acc > 0.95  # majority class ≈ 0.87; measured 0.98
    assert {r["family"] for r in fitted.search} == {"svm", "logreg"} and fitted.val_score == max(
        r["val_score"] for r in fitted.search)
    loaded = _save_and_load(fitted, ds, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "model.json", "model.safetensors"]
    items = [ds.items[i] for i in split.test]
    np.testing.assert_array_equal(loaded.predict_proba(items), fitted.predict_proba(items))
    np.testing.assert_allclose(loaded.predict_proba(items).sum(1), 1.0, atol=1e-9)


def test_an_unseen_word_and_accents_are_handled_as_when_fitted(tmp_path):
    ds, split = _task("sentiment-movies", 400)
    fitted = fit_baseline("tfidf", ds, split)
    loaded = _save_and_load(fitted, ds, tmp_path / "m")
    odd = ["Ça c'est très bien — naïve café", "zzqxj unseenword", "", "GREAT great GrEaT!!!"]
    np.testing.assert_array_equal(loaded.predict_proba(odd), fitted.predict_proba(odd))


def test_pixels_learn_digits_and_round_trip_exactly(tmp_path):
    ds, split = _task("digits")
    fitted = fit_baseline("auto", ds, split)
    assert fitted.method == "pixels" and fitted.featurizer.grey and fitted.featurizer.size == 8
    assert _accuracy(fitted, ds, split.test) > 0.9  # measured 0.94
    loaded = _save_and_load(fitted, ds, tmp_path / "m")
    items = [ds.items[i] for i in split.test[:50]]
    np.testing.assert_array_equal(loaded.predict_proba(items), fitted.predict_proba(items))


def test_the_choice_never_reads_the_test_split():
    ds, split = _task("sentiment-movies", 600)
    a = fit_baseline("tfidf", ds, split)
    labels = ds.labels.copy()
    labels[split.test] = (labels[split.test] + 1) % 2  # scramble only the test labels
    scrambled = type(ds)(ds.items, labels, ds.class_names, ds.modality, ds.name)
    b = fit_baseline("tfidf", scrambled, split)
    assert a.chosen == b.chosen and a.search == b.search


def test_wrong_modality_regression_and_no_validation_are_one_line_errors():
    ds, split = _task("digits")
    with pytest.raises(BaselineError, match="baseline:pixels"):
        fit_baseline("tfidf", ds, split)
    reg = type(ds)(ds.items, ds.labels.astype(float), (), "image", "r")
    with pytest.raises(BaselineError, match="class labels"):
        fit_baseline("pixels", reg, split)
    no_val = type(split)(split.train, split.val[:0], split.test)
    with pytest.raises(BaselineError, match="validation"):
        fit_baseline("pixels", ds, no_val)


def test_refit_through_transferkit_load(tmp_path):
    from sklearn.base import clone

    import transferkit

    ds, split = _task("sms-spam", 800)
    fitted = fit_baseline("tfidf", ds, split)
    _save_and_load(fitted, ds, tmp_path / "m")
    est = clone(transferkit.load(tmp_path / "m"))
    texts = [ds.items[i] for i in split.train]
    names = [ds.class_names[c] for c in ds.labels[split.train]]
    est.fit(texts, names)
    test = [ds.items[i] for i in split.test]
    assert est.score(test, [ds.class_names[c] for c in ds.labels[split.test]]) > 0.93  # majority 0.87
    assert est.model_.info.data == {"name": "fit(X, y)", "n": len(texts)}  # refitted, not the loaded model
