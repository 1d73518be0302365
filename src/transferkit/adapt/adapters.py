"""Trainable adapters on cached features: a bottleneck (Linear → ReLU → Dropout) and a linear classifier,
trained on labelled source batches plus one unsupervised target term:

- source-only-mlp: no target term (the adapter's own baseline)
- mmd: multi-kernel MMD between source and target bottleneck features (DAN)
- dann: a domain discriminator behind a gradient reversal layer
- cdan / cdan+e: the discriminator reads the multilinear map of features and predictions (+E: entropy weights)
- mcc: minimum class confusion on target predictions
- self-training: cross-entropy on target pseudo labels whose confidence reaches a threshold (after a warm-up)

The adapter reads the top `pca_dim` principal components of the z-scored features (PCA fitted on source and
target together, without labels): it keeps training cheap on CPU and is stored as the predictor's projection.
Learning rate decays as lr/(1+10p)^0.75 and the reversal coefficient ramps with `dann_schedule`, as in DANN/CDAN.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.adapt import losses as L
from transferkit.adapt.align import zscore_stats
from transferkit.adapt.model import FeatureClassifier

TRAINABLE = ("source-only-mlp", "mmd", "dann", "cdan", "cdan+e", "mcc", "self-training")
DEFAULTS: dict[str, float | int] = {
    "pca_dim": 128, "hidden": 128, "steps": 400, "batch_size": 64, "lr": 1e-3, "weight_decay": 5e-4, "dropout": 0.5,
    "tradeoff": 1.0, "temperature": 2.5, "threshold": 0.9, "warmup": 0.2,
}


def _discriminator(dim: int, width: int = 256) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Dropout(0.5), nn.Linear(width, width), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(width, 1))


def _pooled_pca(Zs: np.ndarray, Zt: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Top `dim` principal directions of the pooled z-scored features, scaled to unit variance (D, dim)."""
    rng = np.random.default_rng(seed)
    Z = np.concatenate([Zs, Zt])
    if len(Z) > 4000:
        Z = Z[rng.choice(len(Z), 4000, replace=False)]
    dim = int(min(dim, Z.shape[1], len(Z) - 1))
    from sklearn.utils.extmath import randomized_svd

    _, s, vt = randomized_svd(Z - Z.mean(0), dim, random_state=seed)
    sd = s / np.sqrt(max(len(Z) - 1, 1))
    return (vt[:dim].T / np.where(sd > 1e-8, sd, 1.0)).astype(np.float32)


def train_adapter(method: str, Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray, class_names: list[str], *,
                  seed: int = 0, **hp: float) -> FeatureClassifier:
    """Train a bottleneck adapter + classifier with `method`'s target term; hyperparameters override DEFAULTS."""
    if method not in TRAINABLE:
        raise ValueError(f"not a trainable adapter method: {method}")
    h = {**DEFAULTS, **hp}
    n_classes = len(class_names)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    mean, std = zscore_stats(Xs)
    Zs, Zt = (Xs - mean) / std, (Xt - mean) / std
    proj = _pooled_pca(Zs, Zt, int(h["pca_dim"]), seed)
    zs = torch.from_numpy((Zs @ proj).astype(np.float32))
    zt = torch.from_numpy((Zt @ proj).astype(np.float32))
    ys_t = torch.from_numpy(np.asarray(ys, np.int64))
    hidden = int(h["hidden"])
    bottleneck = nn.Sequential(nn.Linear(zs.shape[1], hidden), nn.ReLU(), nn.Dropout(float(h["dropout"])))
    classifier = nn.Linear(hidden, n_classes)
    disc = None
    if method == "dann":
        disc = _discriminator(hidden)
    elif method in ("cdan", "cdan+e"):
        disc = _discriminator(hidden * n_classes)
    modules = nn.ModuleList([bottleneck, classifier] + ([disc] if disc is not None else []))
    lr0 = float(h["lr"])
    opt = torch.optim.Adam(modules.parameters(), lr=lr0, weight_decay=float(h["weight_decay"]))
    steps, bs, lam = int(h["steps"]), int(h["batch_size"]), float(h["tradeoff"])
    is_src = torch.cat([torch.ones(bs), torch.zeros(bs)])
    modules.train()
    for step in range(steps):
        p = step / max(steps - 1, 1)
        for g in opt.param_groups:
            g["lr"] = lr0 / (1.0 + 10.0 * p) ** 0.75
        i_s = torch.randint(len(zs), (bs,), generator=gen)
        i_t = torch.randint(len(zt), (bs,), generator=gen)
        f = bottleneck(torch.cat([zs[i_s], zt[i_t]]))
        logits = classifier(f)
        fs, ft, ls, lt = f[:bs], f[bs:], logits[:bs], logits[bs:]
        loss = F.cross_entropy(ls, ys_t[i_s])
        if method == "mmd":
            loss = loss + lam * L.multi_kernel_mmd(fs, ft)
        elif method == "dann":
            d = disc(L.grad_reverse(f, L.dann_schedule(p)))
            loss = loss + lam * L.domain_adversarial_loss(d, is_src)
        elif method in ("cdan", "cdan+e"):
            probs = torch.softmax(logits, 1).detach()
            d = disc(L.grad_reverse(L.multilinear_map(f, probs), L.dann_schedule(p)))
            w = L.entropy_weights(probs) if method == "cdan+e" else None
            loss = loss + lam * L.domain_adversarial_loss(d, is_src, w)
        elif method == "mcc":
            loss = loss + lam * L.mcc_loss(lt, float(h["temperature"]))
        elif method == "self-training" and p >= float(h["warmup"]):
            with torch.no_grad():
                bottleneck.eval()
                conf, pseudo = torch.softmax(classifier(bottleneck(zt[i_t])), 1).max(1)
                bottleneck.train()
            mask = (conf >= float(h["threshold"])).float()
            loss = loss + lam * (F.cross_entropy(lt, pseudo, reduction="none") * mask).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    lin = bottleneck[0]
    arrays = {"mean": mean, "std": std, "proj": proj,
              "hidden_weight": lin.weight.detach().numpy().copy(), "hidden_bias": lin.bias.detach().numpy().copy(),
              "weight": classifier.weight.detach().numpy().copy(), "bias": classifier.bias.detach().numpy().copy()}
    return FeatureClassifier("mlp", arrays, list(class_names))
