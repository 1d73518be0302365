"""Feature-level adaptation: every method runs and predicts, run folders round-trip, validators behave, and
user errors are clear. Synthetic shifted blobs keep these fast; real benchmarks live in test_benchmarks.py."""

import json

import numpy as np
import pytest

from transferkit.adapt import (
    METHODS,
    adapt_features,
    check_class_names,
    fit_method,
    load_run,
    parse_hyperparameters,
    save_run,
)
from transferkit.adapt.validate import dev_risk, snd_score
from transferkit.errors import AdaptError
from transferkit.params import ParamError

CLASSES = ["a", "b", "c"]
FAST = {"steps": 30}


def blobs(n, shift, seed, scale=1.0):
    """Three Gaussian classes in 8-D; the target is the source rotated/scaled and translated by `shift`."""
    rng = np.random.default_rng(seed)
    centres = np.array([[3, 0, 0, 0, 0, 0, 0, 0], [0, 3, 0, 0, 0, 0, 0, 0], [0, 0, 3, 0, 0, 0, 0, 0]], float)
    y = rng.integers(0, 3, n)
    X = centres[y] + rng.normal(size=(n, 8))
    return (X * scale + shift).astype(np.float32), y


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """8-D blobs and a 128-wide adapter: thread hand-offs cost more than they save, worst on a loaded machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def domains():
    Xs, ys = blobs(300, 0.0, 0)
    Xt, yt = blobs(200, 2.0, 1, scale=1.5)
    return Xs, ys, Xt, yt


@pytest.mark.parametrize("method", METHODS)
def test_every_method_fits_and_predicts_probabilities(method, domains):
    Xs, ys, Xt, yt = domains
    closed_form = ("source-only", "coral", "sa", "bbse", "kliep")
    hp = FAST if method not in closed_form else ({"dim": 4} if method == "sa" else {})
    model = fit_method(method, Xs, ys, Xt, CLASSES, hyperparameters=hp, seed=0)
    p = model.predict_proba(Xt)
    assert p.shape == (len(Xt), 3) and np.allclose(p.sum(1), 1.0)
    assert (model.predict(Xt) == yt).mean() > 0.5  # an easy shift: every method should beat chance (1/3) well
    again = fit_method(method, Xs, ys, Xt, CLASSES, hyperparameters=hp, seed=0)
    assert np.allclose(again.predict_proba(Xt), p)  # same seed, same numbers


def test_coral_undoes_a_scale_and_offset_shift_better_than_source_only():
    Xs, ys = blobs(400, 0.0, 0)
    Xt, yt = blobs(400, 4.0, 1, scale=2.0)
    base = (fit_method("source-only", Xs, ys, Xt, CLASSES).predict(Xt) == yt).mean()
    coral = (fit_method("coral", Xs, ys, Xt, CLASSES).predict(Xt) == yt).mean()
    assert coral > 0.95 and coral > base + 0.05  # measured: 0.9725 vs 0.895 (seed 0)


def test_run_folder_round_trip(domains, tmp_path):
    Xs, ys, Xt, _ = domains
    for method in ("coral", "sa", "dann"):
        hp = FAST if method == "dann" else {}
        model = fit_method(method, Xs, ys, Xt, CLASSES, hyperparameters=hp)
        backbone = {"spec": "effnet:lite0", "pooling": "mean", "image_size": 112, "pretrained": True}
        save_run(tmp_path / method, model, backbone=backbone, method=method, hyperparameters=hp,
                 metrics={"target_accuracy": 0.5})
        assert sorted(p.name for p in (tmp_path / method).iterdir()) == ["README.md", "model.json",
                                                                          "model.safetensors"]
        doc = json.loads((tmp_path / method / "model.json").read_text())
        assert doc["kind"] == "adapt-features" and doc["class_names"] == CLASSES
        assert doc["training"]["method"] == method and doc["metrics"] == {"target": {"accuracy": 0.5}}
        run = load_run(tmp_path / method)
        assert run.class_names == CLASSES and run.backbone_spec == "effnet:lite0"
        assert run.backbone_options == {"pooling": "mean", "image_size": 112}  # what differs from the defaults
        assert np.allclose(run.predict_proba(Xt), model.predict_proba(Xt), atol=1e-6)
    assert "coral_transform" in load_run(tmp_path / "coral").model.extra
    assert "sa_source_basis" in load_run(tmp_path / "sa").model.extra


def test_load_run_rejects_what_is_not_a_run(tmp_path):
    with pytest.raises(AdaptError, match="not an adaptation run folder"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text('{"kind": "finetune", "status": "complete"}')
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(AdaptError, match="not an adaptation run folder"):
        load_run(tmp_path)


def test_wrong_feature_width_at_prediction_is_named(domains):
    Xs, ys, Xt, _ = domains
    model = fit_method("source-only", Xs, ys, Xt, CLASSES)
    with pytest.raises(AdaptError, match=r"\(N, 8\)"):
        model.predict_proba(Xt[:, :5])


def test_auto_chooses_without_target_labels_and_reports_them_only_for_evaluation(domains):
    Xs, ys, Xt, yt = domains
    grid = [("source-only", {}), ("coral", {}), ("dann", FAST)]
    res = adapt_features(Xs, ys, Xt, CLASSES, method="auto", grid=grid, yt_eval=yt)
    assert [r["method"] for r in res.candidates] == ["source-only", "coral", "dann"]
    from transferkit.adapt.fit import AUTO_VALIDATOR
    from transferkit.adapt.validate import VALIDATORS

    assert sum(r["chosen"] for r in res.candidates) == 1 and res.validator == AUTO_VALIDATOR
    assert all(v in r for r in res.candidates for v in VALIDATORS)  # the whole panel, for every candidate
    chosen = next(r for r in res.candidates if r["chosen"])
    better = max if VALIDATORS[AUTO_VALIDATOR][0] == "higher" else min
    assert chosen[AUTO_VALIDATOR] == better(r[AUTO_VALIDATOR] for r in res.candidates)
    assert res.agreement[AUTO_VALIDATOR][AUTO_VALIDATOR] == pytest.approx(1.0) or len(res.candidates) < 3
    assert "target_accuracy" in res.metrics
    blind = adapt_features(Xs, ys, Xt, CLASSES, method="auto", grid=grid)  # the same choice without labels
    assert blind.method == res.method and "target_accuracy" not in blind.metrics
    snd = adapt_features(Xs, ys, Xt, CLASSES, method="auto", grid=grid, validator="snd")
    assert next(r for r in snd.candidates if r["chosen"])["snd"] == max(r["snd"] for r in snd.candidates)


def test_validators_prefer_a_good_model_to_a_broken_one(domains):
    Xs, ys, Xt, _ = domains
    good = fit_method("coral", Xs, ys, Xt, CLASSES)
    bad = fit_method("coral", Xs, ys, Xt, CLASSES)
    bad.arrays["weight"] = bad.arrays["weight"][[1, 2, 0]]  # permuted classes: wrong everywhere
    bad.arrays["bias"] = bad.arrays["bias"][[1, 2, 0]]
    assert dev_risk(good, Xs[:200], Xs[200:], ys[200:], Xt) < dev_risk(bad, Xs[:200], Xs[200:], ys[200:], Xt)
    assert np.isfinite(snd_score(good, Xt))
    from transferkit.adapt.validate import VALIDATORS, Evidence, panel

    e = Evidence(Xs[:200], Xs[200:], ys[200:], Xt)
    g, b = panel(good, e), panel(bad, e)
    assert g["source-acc"] > b["source-acc"] + 0.5 and g["devn"] < b["devn"]
    assert g["classami"] > b["classami"] - 1e-9  # target-only validators cannot see a class permutation ...
    assert g["im"] == pytest.approx(b["im"]) and g["entropy"] == pytest.approx(b["entropy"])  # ... nor these
    assert set(g) == set(VALIDATORS)


@pytest.mark.parametrize("n_target", [0, 1])
def test_empty_or_single_item_target_is_a_clear_error(n_target, domains):
    Xs, ys, Xt, _ = domains
    with pytest.raises(AdaptError, match="target"):
        adapt_features(Xs, ys, Xt[:n_target], CLASSES, method="coral")


def test_other_user_errors_are_clear(domains):
    Xs, ys, Xt, _ = domains
    with pytest.raises(AdaptError, match="unknown adaptation method 'fancy'"):
        adapt_features(Xs, ys, Xt, CLASSES, method="fancy")
    with pytest.raises(ParamError, match="method 'coral' has no such setting; it takes C, label_shift, lam"):
        fit_method("coral", Xs, ys, Xt, CLASSES, hyperparameters={"tradeoff": 1.0})
    with pytest.raises(AdaptError, match="same backbone"):
        adapt_features(Xs, ys, Xt[:, :4], CLASSES, method="coral")
    with pytest.raises(AdaptError, match="one class"):
        adapt_features(Xs, np.zeros_like(ys), Xt, CLASSES, method="coral")
    with pytest.raises(AdaptError, match="validator"):
        adapt_features(Xs, ys, Xt, CLASSES, validator="oracle")
    with pytest.raises(ParamError, match="NAME=VALUE"):
        parse_hyperparameters("dann", ["tradeoff"])
    assert parse_hyperparameters("dann", ["tradeoff=0.3", "steps=10"]) == {"tradeoff": 0.3, "steps": 10}
    with pytest.raises(ParamError, match="steps='abc' is not a whole number"):
        parse_hyperparameters("dann", ["steps=abc"])
    with pytest.raises(AdaptError, match="norm=.3. is not one of domain, source"):  # a word setting: its words only
        fit_method("dann", Xs, ys, Xt, CLASSES, hyperparameters={"norm": "3", "steps": 2})


def test_differing_class_sets_are_refused():
    assert check_class_names(["cat", "dog"], []) == ["cat", "dog"]  # unlabelled target: fine
    with pytest.raises(AdaptError, match="only in target: \\['fox'\\].*partial-set"):
        check_class_names(["cat", "dog"], ["cat", "dog", "fox"])
    with pytest.raises(AdaptError, match="only in source: \\['dog'\\]"):
        check_class_names(["cat", "dog"], ["cat"])


def test_target_validators_on_known_prediction_matrices():
    from transferkit.adapt.validate import batch_nuclear_norm, best_index, information_maximisation, mean_entropy

    confident_diverse = np.eye(3)[np.arange(30) % 3]
    collapsed = np.eye(3)[np.zeros(30, int)]
    uniform = np.full((30, 3), 1 / 3)
    assert information_maximisation(confident_diverse) == pytest.approx(np.log(3))
    assert information_maximisation(collapsed) == pytest.approx(0.0, abs=1e-9)
    assert information_maximisation(uniform) == pytest.approx(0.0, abs=1e-9)
    assert mean_entropy(confident_diverse) == pytest.approx(0.0, abs=1e-9) and mean_entropy(uniform) == pytest.approx(
        np.log(3))
    # ‖P‖_* / √(NC): 3 singular values √10 for the diverse one, one √30 for the collapsed one
    assert batch_nuclear_norm(confident_diverse) == pytest.approx(3 * np.sqrt(10) / np.sqrt(90))
    assert batch_nuclear_norm(collapsed) == pytest.approx(np.sqrt(30) / np.sqrt(90))
    assert best_index([1.0, float("nan"), 0.5], "dev") == 2 and best_index([float("nan"), 0.1, 0.3], "im") == 2


def test_the_validator_option_chooses(domains):
    Xs, ys, Xt, _ = domains
    grid = [("source-only", {}), ("coral", {}), ("sa", {"dim": 4})]
    for v in ("source-acc", "im", "devn"):
        res = adapt_features(Xs, ys, Xt, CLASSES, method="auto", grid=grid, validator=v)
        assert res.validator == v and next(r for r in res.candidates if r["chosen"]) is res.candidates[
            [r[v] for r in res.candidates].index((max if v != "devn" else min)(r[v] for r in res.candidates))]
    with pytest.raises(AdaptError, match="unknown validator 'vibes'"):
        adapt_features(Xs, ys, Xt, CLASSES, method="auto", grid=grid, validator="vibes")


def _label_shifted(seed: int = 0):
    """Label shift alone: two Gaussian classes, p(x|y) the same in both domains; 2,000 items each, the source
    balanced, the target 80 % class a."""
    rng = np.random.default_rng(seed)
    centres = np.array([[1.0, 0.0], [0.0, 1.0]])

    def draw(n, p_a):
        y = (rng.random(n) > p_a).astype(np.int64)
        return (centres[y] + rng.normal(scale=0.7, size=(n, 2))).astype(np.float32), y

    return (*draw(2000, 0.5), *draw(2000, 0.8))


def test_bbse_recovers_the_target_prior_and_corrects_the_classifier():
    """Label shift alone (p(x|y) unchanged): the source is balanced, the target 80 % class a; BBSE estimates that
    and moving the prior lowers the target error of the source-only classifier."""
    Xs, ys, Xt, yt = _label_shifted()
    so = fit_method("source-only", Xs, ys, Xt, ["a", "b"])
    model = fit_method("bbse", Xs, ys, Xt, ["a", "b"])
    assert model.extra["bbse_target_prior"][0] == pytest.approx(0.8, abs=0.05)
    acc_so, acc = (so.predict(Xt) == yt).mean(), (model.predict(Xt) == yt).mean()
    assert acc > acc_so + 0.02, (acc, acc_so)  # measured about 0.87 vs 0.84
    # on source items it keeps the source's prior: the same predictions as source-only there
    assert (model.source_predict(Xs) == so.predict(Xs)).mean() > 0.99


@pytest.mark.parametrize("method", ["coral", "source-only-mlp", "dann"])
def test_label_shift_option_corrects_other_methods(method):
    """label_shift=bbse on another method: the same label-shifted pair (target 80 % class a). A closed-form
    classifier's prior moves (its source side keeps the old one); an adapter's source cross-entropy is weighted
    by the estimated q(y)/p(y). Either way more target items go to class a and the target error falls."""
    Xs, ys, Xt, yt = _label_shifted()
    hp = {"steps": 300} if method != "coral" else {}
    plain = fit_method(method, Xs, ys, Xt, ["a", "b"], hyperparameters=hp)
    fixed = fit_method(method, Xs, ys, Xt, ["a", "b"], hyperparameters={**hp, "label_shift": "bbse"})
    assert fixed.extra["bbse_weights"][0] > 1.3 > 0.7 > fixed.extra["bbse_weights"][1]
    share_plain, share = (plain.predict(Xt) == 0).mean(), (fixed.predict(Xt) == 0).mean()
    assert share > share_plain + 0.05, (share, share_plain)
    acc_plain, acc = (plain.predict(Xt) == yt).mean(), (fixed.predict(Xt) == yt).mean()
    assert acc > acc_plain + 0.01, (acc, acc_plain)
    # the source side predicts for the source's balanced classes, as the uncorrected classifier does
    assert abs((fixed.source_predict(Xs) == 0).mean() - (plain.source_predict(Xs) == 0).mean()) < 0.06


def test_label_shift_option_is_checked():
    Xs, ys = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32), np.arange(40) % 2
    with pytest.raises(AdaptError, match="label_shift='kmm' is not one of none, bbse"):
        fit_method("coral", Xs, ys, Xs, ["a", "b"], hyperparameters={"label_shift": "kmm"})
    from transferkit.params import ParamError

    with pytest.raises(ParamError, match="label_shift: method 'bbse' has no such setting"):  # it is the correction
        fit_method("bbse", Xs, ys, Xs, ["a", "b"], hyperparameters={"label_shift": "bbse"})


def test_kliep_weights_follow_the_density_ratio_and_help_under_covariate_shift():
    """Covariate shift with a curved boundary (p(y|x) the same in both domains): the source spreads around 0, the
    target sits at x0 ≈ 1.5 where the boundary bends; a linear fit to the whole source is wrong there, one that
    weights the source items near the target is less wrong."""
    from scipy.stats import multivariate_normal as mvn

    from transferkit.adapt.reweight import kliep_weights

    rng = np.random.default_rng(0)

    def label(X):
        return (X[:, 1] > 0.8 * X[:, 0] ** 2 - 1.0).astype(np.int64)

    Xs = rng.normal(size=(2000, 2)).astype(np.float32) * [1.5, 1.5]
    Xt = (rng.normal(size=(1000, 2)) * 0.5 + [1.5, 0.8]).astype(np.float32)
    ys, yt = label(Xs), label(Xt)
    w = kliep_weights(Xs, Xt, pca_dim=2)
    true = mvn([1.5, 0.8], np.diag([0.25, 0.25])).pdf(Xs) / mvn([0, 0], np.diag([2.25, 2.25])).pdf(Xs)
    assert w.mean() == pytest.approx(1.0) and np.corrcoef(w, np.minimum(true, 20))[0, 1] > 0.9  # measured 0.97
    so = fit_method("source-only", Xs, ys, Xt, ["a", "b"])
    kl = fit_method("kliep", Xs, ys, Xt, ["a", "b"], hyperparameters={"pca_dim": 2})
    acc_so, acc_kl = (so.predict(Xt) == yt).mean(), (kl.predict(Xt) == yt).mean()
    assert acc_kl > acc_so + 0.2, (acc_kl, acc_so)  # measured 0.989 vs 0.549
    assert 50 < kl.extra["kliep_effective_items"][0] < 2000  # it leans on part of the source, not one item
