"""Closed-form feature alignment on cached features, each followed by a logistic-regression classifier.

- source-only: standardise with source statistics, fit on source (the baseline every method must beat).
- CORAL (Sun, Feng & Saenko 2016): z-score each domain, whiten the source covariance and recolour it with the
  target's: Xs · (Cs + λI)^(-1/2) · (Ct + λI)^(1/2).
- subspace alignment (Fernando et al. 2013): PCA bases Ps, Pt of each z-scored domain (d components); the
  source is mapped by Ps·M with M = Psᵀ Pt, the target by Pt.
- bbse (Lipton et al. 2018): source-only with its class prior moved to the target's estimated one (label shift).
The returned classifier reads target-domain features (it carries the target's standardisation) and keeps the map
its source items went through (`FeatureClassifier.source_embed`).
"""

from __future__ import annotations

import warnings

import numpy as np

from transferkit.adapt.model import FeatureClassifier

STD_FLOOR = 0.1  # × the median per-feature std


def zscore_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation, the std floored at STD_FLOOR × the median feature std.

    Frozen-backbone features often have units that are (nearly) dead on one domain: on MNIST 230 of
    EfficientNet-Lite0's 1,280 have std < 0.01 (76 exactly 0). Dividing by such a std turns a small activation on
    another domain into a z-score of 10^4, which swamps the classifier (MNIST → UCI digits source-only fell to
    chance, 0.117). The floor keeps them at the scale of a typical feature; constant features get std 1.
    """
    mean = X.mean(0)
    std = X.std(0)
    live = std[std > 1e-8]
    floor = STD_FLOOR * float(np.median(live)) if live.size else 0.0
    std = np.where(std > 1e-8, np.maximum(std, floor), 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def fit_logreg(Z: np.ndarray, y: np.ndarray, n_classes: int, C: float, seed: int,
               sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression (L2, strength 1/C); (weight (n_classes, d), bias (n_classes,)).

    Classes absent from y get a weight row of zeros and a bias of -30, so they are never predicted.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=C, max_iter=300, random_state=seed).fit(Z, y, sample_weight=sample_weight)
    W = np.zeros((n_classes, Z.shape[1]), np.float32)
    b = np.full(n_classes, -30.0, np.float32)
    coef, icpt = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # sklearn keeps one row for two classes: softmax([-a/2, a/2]) = sigmoid(a)
        coef = np.vstack([-coef / 2, coef / 2])
        icpt = np.array([-icpt[0] / 2, icpt[0] / 2])
    W[clf.classes_] = coef
    b[clf.classes_] = icpt
    return W, b


def _sym_power(C: np.ndarray, power: float) -> np.ndarray:
    """C^power for a symmetric positive definite matrix, by eigendecomposition."""
    vals, vecs = np.linalg.eigh(C)
    vals = np.clip(vals, 1e-10, None)
    return (vecs * vals**power) @ vecs.T


def source_only(Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray, class_names: list[str], *, C: float = 1.0,
                seed: int = 0) -> FeatureClassifier:
    """Logistic regression on source features standardised with source statistics; Xt is not used."""
    mean, std = zscore_stats(Xs)
    W, b = fit_logreg((Xs - mean) / std, ys, len(class_names), C, seed)
    return FeatureClassifier("linear", {"mean": mean, "std": std, "weight": W, "bias": b}, list(class_names))


#: BBSE's class weights are clipped to this range before they move the classifier's prior (log w in the bias)
BBSE_CLIP = (0.05, 20.0)


def bbse_weights(Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray, class_names: list[str], *, C: float = 1.0,
                 folds: int = 5, seed: int = 0) -> tuple[np.ndarray, dict, FeatureClassifier]:
    """BBSE's class weights w = q(y)/p(y), clipped to BBSE_CLIP; the estimate (`transferkit.shift.bbse`); and the
    source-only logistic regression whose predictions estimated them.

    The confusion matrix C[i, j] = P(ŷ = i, y = j) comes from `folds`-fold cross-fitted predictions on the source
    (every source item predicted by a model that did not see it), the target's predicted-class frequencies μ̂ from
    the model fitted on all source items; w solves C·w = μ̂."""
    from sklearn.model_selection import StratifiedKFold

    from transferkit.shift.labels import bbse

    k = len(class_names)
    ys = np.asarray(ys, np.int64)
    base = source_only(Xs, ys, Xt, class_names, C=C, seed=seed)
    n_folds = int(max(2, min(folds, np.bincount(ys, minlength=k)[np.bincount(ys, minlength=k) > 0].min())))
    pred = np.empty(len(ys), np.int64)
    for tr, ho in StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(Xs, ys):
        pred[ho] = source_only(Xs[tr], ys[tr], Xt, class_names, C=C, seed=seed).predict(Xs[ho])
    conf = np.zeros((k, k))
    np.add.at(conf, (pred, ys), 1.0 / len(ys))
    mu = np.bincount(base.predict(Xt), minlength=k) / len(Xt)
    est = bbse(conf, mu, np.bincount(ys, minlength=k) / len(ys))
    return np.clip(est["weights"], *BBSE_CLIP), est, base


def shift_prior(model: FeatureClassifier, w: np.ndarray, target_prior: np.ndarray) -> FeatureClassifier:
    """`model` with its class prior moved by the weights w (log w added to the bias, so p_target(y|x) ∝
    w_y · p_source(y|x)); the source side keeps the old bias (`source_bias`) and the weights are recorded."""
    extra = {**model.extra, "bbse_weights": np.asarray(w, np.float32),
             "bbse_target_prior": np.asarray(target_prior, np.float32)}
    extra.setdefault("source_bias", model.arrays["bias"])
    arrays = {**model.arrays, "bias": (model.arrays["bias"] + np.log(w)).astype(np.float32)}
    return FeatureClassifier(model.kind, arrays, list(model.class_names), extra=extra)


def label_shift(Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray, class_names: list[str], *, C: float = 1.0,
                folds: int = 5, seed: int = 0) -> FeatureClassifier:
    """BBSE (Lipton et al. 2018): source-only logistic regression with its class prior moved to the target's.

    w = q(y)/p(y) comes from `bbse_weights` (cross-fitted confusion matrix), clipped to BBSE_CLIP and added to the
    bias as log w, so p_target(y|x) ∝ w_y · p_source(y|x). It assumes p(x|y) is the same in both domains: it
    corrects a change of class proportions (tweets are 68 % positive, movie snippets 50 %), not of features."""
    w, est, base = bbse_weights(Xs, ys, Xt, class_names, C=C, folds=folds, seed=seed)
    return shift_prior(base, w, est["target_prior"])


def oracle(Xt: np.ndarray, yt: np.ndarray, class_names: list[str], *, C: float = 1.0,
           seed: int = 0) -> FeatureClassifier:
    """Logistic regression trained on labelled target data: the ceiling adaptation is measured against."""
    return source_only(Xt, yt, Xt, class_names, C=C, seed=seed)


def coral(Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray, class_names: list[str], *, lam: float = 1.0,
          C: float = 1.0, seed: int = 0) -> FeatureClassifier:
    """CORAL: recolour z-scored source features with the target covariance, then logistic regression."""
    ms, ss = zscore_stats(Xs)
    mt, st = zscore_stats(Xt)
    Zs, Zt = (Xs - ms) / ss, (Xt - mt) / st
    eye = np.eye(Xs.shape[1])
    A = _sym_power(np.cov(Zs, rowvar=False) + lam * eye, -0.5) @ _sym_power(np.cov(Zt, rowvar=False) + lam * eye, 0.5)
    W, b = fit_logreg((Zs @ A).astype(np.float32), ys, len(class_names), C, seed)
    return FeatureClassifier("linear", {"mean": mt, "std": st, "weight": W, "bias": b}, list(class_names),
                             extra={"coral_transform": A.astype(np.float32), "source_mean": ms, "source_std": ss,
                                    "source_map": A.astype(np.float32)})


def _pca_basis(Z: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """The top `dim` principal directions of centred Z, as columns (D, dim) (randomized SVD)."""
    from sklearn.utils.extmath import randomized_svd

    _, _, vt = randomized_svd(Z - Z.mean(0), dim, random_state=seed)
    return vt.T


def subspace_alignment(Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray, class_names: list[str], *, dim: int = 64,
                       C: float = 1.0, seed: int = 0) -> FeatureClassifier:
    """Subspace alignment: classifier on source features mapped by Ps·Psᵀ·Pt, applied to target features · Pt."""
    ms, ss = zscore_stats(Xs)
    mt, st = zscore_stats(Xt)
    Zs, Zt = (Xs - ms) / ss, (Xt - mt) / st
    d = int(min(dim, Xs.shape[1], len(Xs) - 1, len(Xt) - 1))
    Ps, Pt = _pca_basis(Zs, d, seed), _pca_basis(Zt, d, seed)
    M = Ps.T @ Pt
    scale = (Zt @ Pt).std(0)  # unit variance along the target basis keeps the classifier well conditioned
    scale = np.where(scale > 1e-8, scale, 1.0)
    W, b = fit_logreg((Zs @ Ps @ M / scale).astype(np.float32), ys, len(class_names), C, seed)
    proj = (Pt / scale).astype(np.float32)
    return FeatureClassifier("linear", {"mean": mt, "std": st, "proj": proj, "weight": W, "bias": b},
                             list(class_names), extra={"sa_source_basis": Ps.astype(np.float32),
                                                       "sa_alignment": M.astype(np.float32),
                                                       "source_mean": ms, "source_std": ss,
                                                       "source_map": (Ps @ M / scale).astype(np.float32)})
