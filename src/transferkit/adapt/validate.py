"""Unsupervised validators: score an adapted model without target labels, to choose a method and its settings.

A panel, each computed for every candidate (`panel`), source items always read through the classifier's source
map (`FeatureClassifier.source_embed`):

- source-acc: accuracy on held-out source items. Higher is better.
- entropy: mean entropy of the target predictions (Morerio et al. 2018). Lower is better.
- im, information maximisation (Shi & Sha 2012; SHOT's objective): entropy of the mean target prediction less the
  mean entropy, confident and diverse. Higher is better.
- bnm, batch nuclear-norm (Cui et al., CVPR 2020): the nuclear norm of the target probability matrix over √(N·C)
  (discriminable and diverse). Higher is better.
- classami (Yang et al. 2023): adjusted mutual information between the predicted classes of target items and a
  k-means clustering (k = classes) of their embedding. Higher is better.
- SND, soft neighbourhood density (Saito et al., ICCV 2021): the mean entropy of each target item's softmax
  similarity (temperature 0.05) to the other target items' normalised class-probability vectors. Higher is better.
- DEV, deep embedded validation (You et al., ICML 2019): the source-validation loss importance-weighted by a
  domain classifier's density ratio p(target|x)/p(source|x) in the model's embedding, with the control variate
  η = -Cov(weighted loss, w)/Var(w) to cut its variance. Lower is better.
- devn: DEV with self-normalised weights (w / mean w, no control variate): stays a weighted mean of the source loss
  when the domain classifier separates the domains almost perfectly and raw DEV's weights all go to ~0. Lower is
  better.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from transferkit.adapt.model import FeatureClassifier


def _domain_density_ratio(emb_train_s: np.ndarray, emb_t: np.ndarray, emb_val_s: np.ndarray, seed: int) -> np.ndarray:
    """w(x) = p(target|x)/p(source|x) at the source-validation items, from a class-balanced logistic regression."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    Z = np.concatenate([emb_train_s, emb_t])
    d = np.concatenate([np.zeros(len(emb_train_s)), np.ones(len(emb_t))])
    scaler = StandardScaler().fit(Z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=1.0, max_iter=300, class_weight="balanced", random_state=seed)
        clf.fit(scaler.transform(Z), d)
    p = np.clip(clf.predict_proba(scaler.transform(emb_val_s))[:, 1], 1e-3, 1 - 1e-3)
    return p / (1 - p)


def _weighted_source_loss(model: FeatureClassifier, Xs_train: np.ndarray, Xs_val: np.ndarray, ys_val: np.ndarray,
                          Xt: np.ndarray, seed: int, max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(density ratio w, cross-entropy) at each source validation item: DEV's two ingredients. Source items go
    through the map the classifier was trained on, target items through the target's; items beyond `max_items` per
    set are subsampled for the domain classifier."""
    rng = np.random.default_rng(seed)

    def cap(X: np.ndarray) -> np.ndarray:
        return X if len(X) <= max_items else X[rng.choice(len(X), max_items, replace=False)]

    w = _domain_density_ratio(model.source_embed(cap(Xs_train)), model.embed(cap(Xt)), model.source_embed(Xs_val),
                              seed)
    proba = model.source_predict_proba(Xs_val)
    return w, -np.log(np.clip(proba[np.arange(len(ys_val)), ys_val], 1e-12, None))


def dev_risk(model: FeatureClassifier, Xs_train: np.ndarray, Xs_val: np.ndarray, ys_val: np.ndarray,
             Xt: np.ndarray, *, seed: int = 0, max_items: int = 2000) -> float:
    """Deep embedded validation risk of `model` (lower is better): importance-weighted source-validation
    cross-entropy with a control variate."""
    w, loss = _weighted_source_loss(model, Xs_train, Xs_val, ys_val, Xt, seed, max_items)
    weighted = w * loss
    var_w = np.var(w, ddof=1) if len(w) > 1 else 0.0
    eta = -np.cov(weighted, w)[0, 1] / var_w if var_w > 1e-12 else 0.0
    return float(weighted.mean() + eta * w.mean() - eta)


def snd_score(model: FeatureClassifier, Xt: np.ndarray, *, temperature: float = 0.05, seed: int = 0,
              max_items: int = 2000) -> float:
    """Soft neighbourhood density of the target predictions (higher is better)."""
    rng = np.random.default_rng(seed)
    X = Xt if len(Xt) <= max_items else Xt[rng.choice(len(Xt), max_items, replace=False)]
    return soft_neighbourhood_density(model.predict_proba(X), temperature)


def soft_neighbourhood_density(p: np.ndarray, temperature: float = 0.05) -> float:
    """SND of a target probability matrix (higher is better)."""
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    sim = p @ p.T
    np.fill_diagonal(sim, -np.inf)
    z = sim / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    q = e / e.sum(1, keepdims=True)
    return float(np.mean(-(q * np.log(q + 1e-12)).sum(1)))


def devn_risk(model: FeatureClassifier, Xs_train: np.ndarray, Xs_val: np.ndarray, ys_val: np.ndarray,
              Xt: np.ndarray, *, seed: int = 0, max_items: int = 2000) -> float:
    """DEV with self-normalised importance weights: Σ w·loss / Σ w over the source validation items (lower is
    better)."""
    w, loss = _weighted_source_loss(model, Xs_train, Xs_val, ys_val, Xt, seed, max_items)
    return float((w * loss).sum() / max(w.sum(), 1e-12))


def _target_proba(model: FeatureClassifier, Xt: np.ndarray, seed: int, max_items: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = Xt if len(Xt) <= max_items else Xt[rng.choice(len(Xt), max_items, replace=False)]
    return model.predict_proba(X)


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(-1)


def mean_entropy(p: np.ndarray) -> float:
    """Mean entropy of the rows of a probability matrix (lower: more confident)."""
    return float(_entropy(p).mean())


def information_maximisation(p: np.ndarray) -> float:
    """H(mean prediction) − mean H(prediction) (higher: confident and diverse)."""
    return float(_entropy(p.mean(0)) - _entropy(p).mean())


def batch_nuclear_norm(p: np.ndarray) -> float:
    """‖P‖_* / √(N·C) (higher: discriminable and diverse predictions)."""
    n, c = p.shape
    return float(np.linalg.svd(p, compute_uv=False).sum() / np.sqrt(n * c))


def class_ami(model: FeatureClassifier, Xt: np.ndarray, *, seed: int = 0, max_items: int = 2000) -> float:
    """AMI between the predicted classes of target items and k-means clusters (k = classes) of their embedding."""
    rng = np.random.default_rng(seed)
    X = Xt if len(Xt) <= max_items else Xt[rng.choice(len(Xt), max_items, replace=False)]
    return class_ami_of(model.embed(X), model.predict(X), len(model.class_names), seed)


def class_ami_of(z: np.ndarray, pred: np.ndarray, k: int, seed: int = 0) -> float:
    """ClassAMI of target embeddings `z` and their predicted classes (higher is better)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score

    clusters = KMeans(n_clusters=min(k, len(z)), n_init=3, random_state=seed).fit_predict(z)
    return float(adjusted_mutual_info_score(clusters, pred))


@dataclass
class Evidence:
    """What the validators may look at: labelled source items (train and held-out validation), unlabelled target."""

    Xs_train: np.ndarray
    Xs_val: np.ndarray
    ys_val: np.ndarray
    Xt: np.ndarray
    seed: int = 0


def _source_acc(m: FeatureClassifier, e: Evidence) -> float:
    return float((m.source_predict(e.Xs_val) == e.ys_val).mean())


#: name -> (which way is better, score(model, evidence)); the order is the order of the tables
VALIDATORS: dict[str, tuple[str, Callable[[FeatureClassifier, Evidence], float]]] = {
    "source-acc": ("higher", _source_acc),
    "entropy": ("lower", lambda m, e: mean_entropy(_target_proba(m, e.Xt, e.seed))),
    "im": ("higher", lambda m, e: information_maximisation(_target_proba(m, e.Xt, e.seed))),
    "bnm": ("higher", lambda m, e: batch_nuclear_norm(_target_proba(m, e.Xt, e.seed))),
    "classami": ("higher", lambda m, e: class_ami(m, e.Xt, seed=e.seed)),
    "snd": ("higher", lambda m, e: snd_score(m, e.Xt, seed=e.seed)),
    "dev": ("lower", lambda m, e: dev_risk(m, e.Xs_train, e.Xs_val, e.ys_val, e.Xt, seed=e.seed)),
    "devn": ("lower", lambda m, e: devn_risk(m, e.Xs_train, e.Xs_val, e.ys_val, e.Xt, seed=e.seed)),
}


#: the validators that need no source items: what a source-free method can be judged by
TARGET_ONLY = ("entropy", "im", "bnm", "classami", "snd")


def target_panel(proba: np.ndarray, z: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The target-only validators of a model from its target class probabilities and embeddings (any network)."""
    return {"entropy": mean_entropy(proba), "im": information_maximisation(proba), "bnm": batch_nuclear_norm(proba),
            "classami": class_ami_of(z, proba.argmax(1), proba.shape[1], seed),
            "snd": soft_neighbourhood_density(proba)}


def panel(model: FeatureClassifier, evidence: Evidence) -> dict[str, float]:
    """Every validator's score of one model."""
    return {name: fn(model, evidence) for name, (_, fn) in VALIDATORS.items()}


def best_index(scores: list[float], validator: str) -> int:
    """The index of the best score by `validator` (first of ties); NaN scores never win."""
    order = VALIDATORS[validator][0]
    v = np.asarray(scores, dtype=np.float64)
    v = np.where(np.isfinite(v), v, np.inf if order == "lower" else -np.inf)
    return int(np.argmin(v) if order == "lower" else np.argmax(v))


def agreement(rows: list[dict]) -> dict[str, dict[str, float | None]]:
    """Spearman rank correlation between every two validators' scores across candidates (each oriented so that
    higher is better): how much they agree on which candidate is better; None where it is undefined (fewer
    than 3 candidates, or one validator scores them all the same)."""
    from scipy.stats import spearmanr

    names = [n for n in VALIDATORS if all(n in r for r in rows)]
    oriented = {n: np.array([r[n] if VALIDATORS[n][0] == "higher" else -r[n] for r in rows], np.float64)
                for n in names}
    out: dict[str, dict[str, float | None]] = {}
    for a in names:
        out[a] = {}
        for b in names:
            if len(rows) < 3 or np.ptp(oriented[a]) == 0 or np.ptp(oriented[b]) == 0:
                out[a][b] = None
            else:
                rho = float(spearmanr(oriented[a], oriented[b]).statistic)
                out[a][b] = rho if np.isfinite(rho) else None
    return out
