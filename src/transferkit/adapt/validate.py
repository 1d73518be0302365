"""Unsupervised validators: score an adapted model without target labels, to choose a method and its settings.

- DEV, deep embedded validation (You et al., ICML 2019): the source-validation loss importance-weighted by a
  domain classifier's density ratio p(target|x)/p(source|x) in the model's embedding, with the control variate
  η = -Cov(weighted loss, w)/Var(w) to cut its variance. Lower is better.
- SND, soft neighbourhood density (Saito et al., ICCV 2021): the mean entropy of each target item's softmax
  similarity (temperature 0.05) to the other target items' normalised class-probability vectors. Higher is better.
"""

from __future__ import annotations

import warnings

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


def dev_risk(model: FeatureClassifier, Xs_train: np.ndarray, Xs_val: np.ndarray, ys_val: np.ndarray,
             Xt: np.ndarray, *, seed: int = 0, max_items: int = 2000) -> float:
    """Deep embedded validation risk of `model` (lower is better): importance-weighted source-validation
    cross-entropy with a control variate. Items beyond `max_items` per set are subsampled for speed."""
    rng = np.random.default_rng(seed)

    def cap(X: np.ndarray) -> np.ndarray:
        return X if len(X) <= max_items else X[rng.choice(len(X), max_items, replace=False)]

    # source items through the map the classifier was trained on, target items through the target's
    w = _domain_density_ratio(model.source_embed(cap(Xs_train)), model.embed(cap(Xt)), model.source_embed(Xs_val),
                              seed)
    proba = model.source_predict_proba(Xs_val)
    loss = -np.log(np.clip(proba[np.arange(len(ys_val)), ys_val], 1e-12, None))
    weighted = w * loss
    var_w = np.var(w, ddof=1) if len(w) > 1 else 0.0
    eta = -np.cov(weighted, w)[0, 1] / var_w if var_w > 1e-12 else 0.0
    return float(weighted.mean() + eta * w.mean() - eta)


def snd_score(model: FeatureClassifier, Xt: np.ndarray, *, temperature: float = 0.05, seed: int = 0,
              max_items: int = 2000) -> float:
    """Soft neighbourhood density of the target predictions (higher is better)."""
    rng = np.random.default_rng(seed)
    X = Xt if len(Xt) <= max_items else Xt[rng.choice(len(Xt), max_items, replace=False)]
    p = model.predict_proba(X)
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    sim = p @ p.T
    np.fill_diagonal(sim, -np.inf)
    z = sim / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    q = e / e.sum(1, keepdims=True)
    return float(np.mean(-(q * np.log(q + 1e-12)).sum(1)))


VALIDATORS = {"dev": ("lower", dev_risk), "snd": ("higher", snd_score)}
