"""Domain-adaptation losses as plain torch functions, usable on cached features or inside an end-to-end loop.

Every function takes torch tensors (any device, any float dtype) and returns a tensor that autograd can
differentiate. References: DAN (Long et al. 2015) for multi-kernel MMD, Deep CORAL (Sun & Saenko 2016),
DANN (Ganin et al. 2016) for gradient reversal, CDAN(+E) (Long et al. 2018), MCC (Jin et al. 2020).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _GradientReversal(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the incoming gradient by -coeff."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:  # noqa: ANN001
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Gradient reversal (DANN): returns x, but gradients flowing back through it are scaled by -coeff."""
    return _GradientReversal.apply(x, float(coeff))


class GradientReversal(nn.Module):
    """`grad_reverse` as a layer; set `.coeff` during training (e.g. from `dann_schedule`)."""

    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        self.coeff = float(coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.coeff)


def dann_schedule(progress: float, gamma: float = 10.0) -> float:
    """The DANN ramp 2/(1+exp(-gamma·p)) - 1 for training progress p in [0, 1]: 0 at the start, →1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def _sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances (never negative)."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * x @ y.T + (y * y).sum(1)[None, :]
    return d.clamp_min(0.0)


def mk_bandwidths(source: torch.Tensor, target: torch.Tensor, kernel_mul: float = 2.0,
                  kernel_num: int = 5) -> torch.Tensor:
    """DAN's bandwidth family: the mean pairwise squared distance of the pooled batch times kernel_mul**k,
    k = -(kernel_num//2) .. kernel_num - kernel_num//2 - 1 (no gradient flows through the bandwidths)."""
    z = torch.cat([source, target]).detach()
    n = z.shape[0]
    base = _sq_dists(z, z).sum() / max(n * n - n, 1)
    base = base.clamp_min(torch.finfo(z.dtype).tiny)
    ks = torch.arange(kernel_num, dtype=z.dtype, device=z.device) - kernel_num // 2
    return base * kernel_mul**ks


def multi_kernel_mmd(source: torch.Tensor, target: torch.Tensor, *, kernel_mul: float = 2.0, kernel_num: int = 5,
                     bandwidths: torch.Tensor | None = None) -> torch.Tensor:
    """Squared MMD (biased V-statistic) under the sum of Gaussian kernels exp(-||a-b||²/σ²), σ² in `bandwidths`.

    Sizes of source (n, d) and target (m, d) may differ. This is the DAN loss with equal kernel weights.
    """
    if bandwidths is None:
        bandwidths = mk_bandwidths(source, target, kernel_mul, kernel_num)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = _sq_dists(a, b)
        return sum(torch.exp(-d / s) for s in bandwidths)

    return k(source, source).mean() + k(target, target).mean() - 2.0 * k(source, target).mean()


def covariance(x: torch.Tensor) -> torch.Tensor:
    """Unbiased (n-1) covariance of the rows of x."""
    xc = x - x.mean(0, keepdim=True)
    return xc.T @ xc / max(x.shape[0] - 1, 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Deep CORAL: ||C_s - C_t||²_F / (4 d²) between the feature covariances of the two batches."""
    d = source.shape[1]
    diff = covariance(source) - covariance(target)
    return (diff * diff).sum() / (4.0 * d * d)


def multilinear_map(features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """CDAN conditioning f ⊗ g: flattened outer product (N, C·D), out[n, c·D + j] = probs[n, c]·features[n, j]."""
    return torch.bmm(probs.unsqueeze(2), features.unsqueeze(1)).reshape(features.shape[0], -1)


class RandomizedMultilinearMap:
    """CDAN's randomized multilinear map for large feature × class dimensions: (f·Rf) ⊙ (g·Rg) / √dim with fixed
    Gaussian Rf (D, dim), Rg (C, dim); its inner products approximate those of the full map f ⊗ g."""

    def __init__(self, feature_dim: int, n_classes: int, dim: int = 1024,
                 generator: torch.Generator | None = None) -> None:
        self.dim = int(dim)
        self.Rf = torch.randn(feature_dim, self.dim, generator=generator)
        self.Rg = torch.randn(n_classes, self.dim, generator=generator)

    def __call__(self, features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        Rf, Rg = self.Rf.to(features), self.Rg.to(features)
        return (features @ Rf) * (probs @ Rg) / math.sqrt(self.dim)


def entropy(probs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-row Shannon entropy (nats) of class probabilities."""
    return -(probs * torch.log(probs + eps)).sum(1)


def information_maximization(logits: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """SHOT's information-maximisation loss (Liang et al. 2020): the mean per-item prediction entropy minus the
    entropy of the mean prediction; low when each prediction is confident and the classes are used evenly."""
    p = torch.softmax(logits.float(), 1)
    mean = p.mean(0)
    return (-(p * torch.log(p + eps)).sum(1)).mean() + (mean * torch.log(mean + eps)).sum()


def entropy_weights(probs: torch.Tensor) -> torch.Tensor:
    """CDAN+E example weights 1 + exp(-H(p)) (detached): confident predictions count more."""
    return 1.0 + torch.exp(-entropy(probs.detach()))


def domain_adversarial_loss(domain_logits: torch.Tensor, is_source: torch.Tensor,
                            weights: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of a domain discriminator (source = 1, target = 0).

    With `weights` (e.g. `entropy_weights`), each domain's weights are normalised to sum to one within that
    domain, then the weighted losses are averaged, as in CDAN+E, so neither domain dominates.
    """
    logits = domain_logits.reshape(-1)
    labels = is_source.to(logits.dtype).reshape(-1)
    losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    if weights is None:
        return losses.mean()
    w = weights.detach().to(logits.dtype).reshape(-1)
    src = labels > 0.5
    w = torch.where(src, w / w[src].sum().clamp_min(1e-12), w / w[~src].sum().clamp_min(1e-12))
    return (w * losses).sum() / w.sum()


def mcc_loss(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum Class Confusion on (unlabelled target) logits: the normalised off-diagonal mass of the
    entropy-weighted class-correlation matrix of the temperature-scaled predictions, divided by the class count."""
    n, c = logits.shape
    p = torch.softmax(logits / temperature, dim=1)
    w = 1.0 + torch.exp(-entropy(p).detach())
    w = n * w / w.sum()
    conf = (p * w[:, None]).T @ p
    conf = conf / conf.sum(dim=1)  # column j divided by the sum of row j (symmetric, as in the paper's code)
    return (conf.sum() - torch.trace(conf)) / c
