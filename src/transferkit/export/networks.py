"""A loaded model as one torch network, raw-input tensors in and the model's outputs out — what ONNX export
traces. Heads and adapted classifiers (numpy arrays in transferkit) become small torch modules that compute
exactly what their numpy predictors compute."""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.errors import TransferkitError


class ExportError(TransferkitError):
    """A model that cannot be exported as asked (no network to trace, an unknown format, …)."""


def _t(a: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


class Affine(nn.Module):
    """(x - mean) / scale @ W.T + b, the linear heads' scores (mean/scale optional)."""

    def __init__(self, weight: Any, bias: Any, mean: Any = None, scale: Any = None) -> None:
        super().__init__()
        self.register_buffer("weight", _t(np.atleast_2d(weight)))
        self.register_buffer("bias", _t(np.atleast_1d(bias)))
        self.register_buffer("mean", _t(mean) if mean is not None else torch.zeros(()))
        self.register_buffer("scale", _t(scale) if scale is not None else torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.scale) @ self.weight.T + self.bias


def two_columns(s: torch.Tensor) -> torch.Tensor:
    """One score column (binary: positive means class 1) as two class columns [-s, s]."""
    return torch.cat([-s, s], 1) if s.shape[1] == 1 else s


class SigmoidOrSoftmax(nn.Module):
    """Probabilities from scores: sigmoid for one column (as `heads.softmax.probabilities`), soft-max otherwise."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if s.shape[1] == 1:
            p1 = torch.sigmoid(s)
            return torch.cat([1 - p1, p1], 1)
        return torch.softmax(s / self.temperature, 1)


class RBFScores(nn.Module):
    """The RBF-SVM head's per-class scores (binary ±decision; multiclass votes + squashed confidences)."""

    def __init__(self, p: Any) -> None:
        super().__init__()
        self.register_buffer("mean", _t(p.mean))
        self.register_buffer("scale", _t(p.scale))
        self.register_buffer("sv", _t(p.support_vectors))
        self.register_buffer("dual", _t(p.dual_coef))
        self.register_buffer("intercept", _t(p.intercept))
        self.gamma, self.k = float(p.gamma), int(p.classes_.size)
        self.starts = [int(v) for v in np.concatenate([[0], np.cumsum(p.n_support)])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.scale
        sq = (z * z).sum(1, keepdim=True) + (self.sv * self.sv).sum(1)[None, :] - 2.0 * z @ self.sv.T
        K = torch.exp(-self.gamma * sq.clamp_min(0.0))
        if self.k == 2:
            d = K @ self.dual[0] + self.intercept[0]
            return torch.stack([-d, d], 1)
        votes, conf = [torch.zeros_like(K[:, 0]) for _ in range(self.k)], [torch.zeros_like(K[:, 0])
                                                                           for _ in range(self.k)]
        for p, (i, j) in enumerate(combinations(range(self.k), 2)):
            si, sj = slice(self.starts[i], self.starts[i + 1]), slice(self.starts[j], self.starts[j + 1])
            d = K[:, si] @ self.dual[j - 1, si] + K[:, sj] @ self.dual[i, sj] + self.intercept[p]
            win = (d > 0).to(K.dtype)
            votes[i], votes[j] = votes[i] + win, votes[j] + (1 - win)
            conf[i], conf[j] = conf[i] + d, conf[j] - d
        v, c = torch.stack(votes, 1), torch.stack(conf, 1)
        return v + c / (3 * (c.abs() + 1))


class KNNShares(nn.Module):
    """The kNN head: shares of the k nearest stored items per class (or their mean target)."""

    def __init__(self, p: Any) -> None:
        super().__init__()
        if p.metric not in ("euclidean", "cosine"):
            raise ExportError(f"a kNN head with metric {p.metric!r} cannot be exported: refit it with euclidean or "
                              "cosine")
        self.register_buffer("fit", _t(p.X_fit))
        self.register_buffer("mean", _t(p.mean) if p.mean is not None else torch.zeros(()))
        self.register_buffer("scale", _t(p.scale) if p.scale is not None else torch.ones(()))
        self.metric, self.k = p.metric, int(p.k)
        self.n_classes = None if p.classes_ is None else int(p.classes_.size)
        y = np.asarray(p.y_fit)
        self.register_buffer("targets", torch.nn.functional.one_hot(torch.as_tensor(y, dtype=torch.long),
                                                                    self.n_classes).float()
                             if self.n_classes else _t(y)[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.scale
        if self.metric == "cosine":
            a = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
            b = self.fit / self.fit.norm(dim=1, keepdim=True).clamp_min(1e-12)
            dist = 1 - a @ b.T
        else:
            dist = (z * z).sum(1, keepdim=True) + (self.fit * self.fit).sum(1)[None, :] - 2.0 * z @ self.fit.T
        idx = torch.topk(-dist, self.k, dim=1).indices
        out = self.targets[idx].mean(1)
        return out if self.n_classes else out[:, 0]


def head_network(head: Any, n_classes: int, temperature: float | None) -> nn.Module:
    """A fitted transferkit head as a torch module: features in, the probe model's outputs out."""
    p, kind = head.predictor, head.predictor.kind
    if kind == "logreg":
        net: nn.Module = nn.Sequential(Affine(p.coef_, p.intercept_, p.scaler_mean_, p.scaler_scale_),
                                       SigmoidOrSoftmax())
    elif kind == "linear":
        lin = Affine(p.coef, p.intercept, p.mean, p.scale)
        if head.task == "regression":
            return _Column(lin)
        net = nn.Sequential(lin, _Fn(two_columns))
        if temperature is not None:
            net = nn.Sequential(net, SigmoidOrSoftmax(temperature))
    elif kind == "rbf-svm":
        net = RBFScores(p)
        if temperature is not None:
            net = nn.Sequential(net, SigmoidOrSoftmax(temperature))
    elif kind == "knn":
        net = KNNShares(p)
        if head.task == "regression":
            return net
    else:
        raise ExportError(f"a head of kind {kind!r} cannot be exported")
    ids = np.asarray(head.classes_, dtype=np.int64)
    if len(ids) != n_classes or not (ids == np.arange(n_classes)).all():
        net = nn.Sequential(net, _Scatter(ids, n_classes, 0.0 if head.has_proba or temperature else -1e9))
    return net


class _Fn(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class _Column(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[:, 0]


class _Scatter(nn.Module):
    """Columns of the classes a head knows, placed among all the model's classes (the others get `fill`)."""

    def __init__(self, ids: np.ndarray, n_classes: int, fill: float) -> None:
        super().__init__()
        m = torch.zeros(len(ids), n_classes)
        m[torch.arange(len(ids)), torch.as_tensor(ids)] = 1.0
        base = torch.full((n_classes,), fill)
        base[torch.as_tensor(ids)] = 0.0
        self.register_buffer("m", m)
        self.register_buffer("base", base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.m + self.base


class FeatureClassifierNet(nn.Module):
    """An adapted classifier (`adapt.model.FeatureClassifier`): standardise → [project] → [ReLU layer] → softmax."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        a = model.arrays
        self.register_buffer("mean", _t(a["mean"]))
        self.register_buffer("std", _t(a["std"]))
        self.register_buffer("proj", _t(a["proj"]) if "proj" in a else torch.zeros(0))
        self.mlp = model.kind == "mlp"
        if self.mlp:
            self.hidden = Affine(a["hidden_weight"], a["hidden_bias"])
        self.out = Affine(a["weight"], a["bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std
        if self.proj.numel():
            z = z @ self.proj
        if self.mlp:
            z = torch.relu(self.hidden(z))
        return torch.softmax(self.out(z), 1)


class FeaturesThen(nn.Module):
    """A backbone's pooled features (its own `encode`) followed by `head`; inputs in the collate's order."""

    def __init__(self, backbone: Any, head: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.head, self.names, self._encode = backbone.model, head, names, backbone.encode

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self._encode(self.model, dict(zip(self.names, inputs))).float())


class _TunedHead(nn.Module):
    """A fine-tuned run's head: the fixed standardisation, the linear layer, then probabilities or values."""

    def __init__(self, run: Any) -> None:
        super().__init__()
        m = run.model
        self.register_buffer("mean", m.feature_mean.detach().clone())
        self.register_buffer("scale", m.feature_scale.detach().clone())
        self.linear = m.head
        self.task = run.task
        scale = run.info.get("target_scale") or {"mean": 0.0, "std": 1.0}
        self.t_mean, self.t_std = float(scale["mean"]), float(scale["std"])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.linear((features.float() - self.mean) / self.scale)
        return torch.softmax(out, 1) if self.task == "classification" else out[:, 0] * self.t_std + self.t_mean


class FinetunedNet(nn.Module):
    """A fine-tuned TransferModel: its backbone's features, then its head (named `head`, like every exported head,
    so int8 quantisation leaves it fp32)."""

    def __init__(self, run: Any, names: list[str]) -> None:
        super().__init__()
        self.model, self.head, self.names = run.model, _TunedHead(run), names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.features(dict(zip(self.names, inputs))))


def model_network(loaded: Any, names: list[str]) -> tuple[nn.Module, Any]:
    """(the torch network of a loaded model, its backbone) for inputs named `names` (the collate's keys)."""
    from transferkit.adapt.run import AdaptPredictor
    from transferkit.finetune.run import FinetunePredictor
    from transferkit.heads.probe_model import ProbePredictor

    p = loaded.predictor
    if isinstance(p, ProbePredictor):
        head = head_network(p.head, len(loaded.class_names), p.temperature)
        return FeaturesThen(p.backbone, head, names).eval(), p.backbone
    if isinstance(p, AdaptPredictor):
        return FeaturesThen(p.backbone, FeatureClassifierNet(p.model), names).eval(), p.backbone
    if isinstance(p, FinetunePredictor):
        return FinetunedNet(p.run, names).eval(), p.run.backbone
    raise ExportError(f"a {loaded.info.kind} model has no single network to export (it is not built on a "
                      "backbone transferkit can trace)")
