"""L2-regularised multinomial logistic regression by L-BFGS, warm-started along a path of C values.

Same objective as scikit-learn's ``LogisticRegression(solver="lbfgs")``::

    mean cross-entropy + ||W||² / (2 C n)        (intercept not penalised)

with the same stopping rule (max |gradient| <= tol, or a relative decrease below 64 machine eps).
Why it is faster when sweeping C: each fit starts from the solutions already found (interpolated,
or extrapolated, in log C: the path is smooth, so few iterations remain); all-zero feature columns
are dropped (their weights are exactly 0 at the optimum); and the two big matrix products per
iteration run in float32 while the optimiser state, the loss and the soft-max stay in float64.
Binary problems use one weight vector (sigmoid), like scikit-learn.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy.special import expit


@dataclass
class SoftmaxFit:
    """One solution: coef (n_outputs, n_features), intercept (n_outputs,), L-BFGS iterations used."""

    C: float
    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int


class SoftmaxPath:
    """Fits the multinomial (or binary) logistic loss on one training set for any number of C values."""

    def __init__(
        self,
        X: np.ndarray,
        y_index: np.ndarray,
        n_classes: int,
        max_iter: int = 1000,
        tol: float = 1e-4,
        precision: str = "float32",
    ) -> None:
        n, d = X.shape
        self._setup(n, d, np.flatnonzero(np.any(X != 0, axis=0)), n_classes, max_iter, tol, precision)
        self.Z = np.ascontiguousarray(X[:, self.active], dtype=self.dtype)
        self.y_index = np.asarray(y_index)

    def _setup(self, n: int, d: int, active: np.ndarray, n_classes: int, max_iter: int, tol: float,
               precision: str) -> None:
        if precision not in ("float32", "float64"):
            raise ValueError(f"precision must be 'float32' or 'float64', not {precision!r}")
        self.n, self.d, self.n_classes = n, d, n_classes
        self.n_out = 1 if n_classes == 2 else n_classes
        self.active, self.dtype = active, np.dtype(precision)
        self.max_iter, self.tol = max_iter, tol
        self.fits: list[SoftmaxFit] = []

    def blocks(self) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """The training rows as (Z, class index) blocks, Z holding the active columns in `dtype`: here one block in
        memory; a subclass streams them (`heads.streamed.StreamedSoftmaxPath`). The loss and gradient are sums over
        the blocks, so both give the same fits."""
        return ((self.Z, self.y_index),)

    def _loss_grad(self, theta: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
        k, r = self.n_out, self.active.size
        W = theta[: r * k].reshape(r, k)
        b = theta[r * k :]
        total, gW, gb = 0.0, np.zeros((r, k)), np.zeros(k)
        for Z, y_index in self.blocks():
            rows = np.arange(Z.shape[0])
            z = (Z @ W.astype(Z.dtype)).astype(np.float64) + b
            if self.n_out == 1:  # sigmoid as a 2-way soft-max: a zero column first
                z = np.hstack([np.zeros((Z.shape[0], 1)), z])
            zmax = z.max(axis=1, keepdims=True)
            e = np.exp(z - zmax)
            s = e.sum(axis=1)
            total += float(np.sum(zmax[:, 0] + np.log(s) - z[rows, y_index]))
            G = e / s[:, None]
            G[rows, y_index] -= 1.0
            G /= self.n
            if self.n_out == 1:
                G = G[:, 1:]
            gW += (Z.T @ G.astype(Z.dtype)).astype(np.float64)
            gb += G.sum(axis=0)
        loss = total / self.n + 0.5 * lam * float(np.sum(W * W))
        return loss, np.concatenate([(gW + lam * W).ravel(), gb])

    def _theta(self, fit: SoftmaxFit) -> np.ndarray:
        return np.concatenate([fit.coef[:, self.active].T.ravel(), fit.intercept])

    def _warm_start(self, C: float) -> np.ndarray:
        """Start for a new C: zeros at first; between two fitted C values, their interpolation in log C;
        beyond them, the linear extrapolation of the two nearest in log C when it lowers the new
        objective, else the nearest solution."""
        if not self.fits:
            return np.zeros(self.active.size * self.n_out + self.n_out)
        t = np.log(C)
        below = [f for f in self.fits if np.log(f.C) < t]
        above = [f for f in self.fits if np.log(f.C) > t]
        if below and above:
            lo = max(below, key=lambda f: f.C)
            hi = min(above, key=lambda f: f.C)
            w = (t - np.log(lo.C)) / (np.log(hi.C) - np.log(lo.C))
            return (1 - w) * self._theta(lo) + w * self._theta(hi)
        side = sorted(below or above, key=lambda f: abs(np.log(f.C) - t))
        near = self._theta(side[0])
        if len(side) < 2:
            return near
        far = self._theta(side[1])
        w = (t - np.log(side[0].C)) / (np.log(side[0].C) - np.log(side[1].C))
        guess = near + w * (near - far)
        lam = 1.0 / (C * self.n)
        return guess if self._loss_grad(guess, lam)[0] < self._loss_grad(near, lam)[0] else near

    def fit(self, C: float, init: SoftmaxFit | None = None) -> SoftmaxFit:
        """Solve for one C, starting from ``init`` or else from the C values fitted so far (see _warm_start)."""
        if init is not None:
            theta0 = self._theta(init)
        else:
            theta0 = self._warm_start(C)
        lam = 1.0 / (C * self.n)
        res = optimize.minimize(
            self._loss_grad,
            theta0,
            args=(lam,),
            method="L-BFGS-B",
            jac=True,
            options={"maxiter": self.max_iter, "maxls": 50, "gtol": self.tol, "ftol": 64 * np.finfo(float).eps},
        )
        r, k = self.active.size, self.n_out
        coef = np.zeros((k, self.d))
        coef[:, self.active] = res.x[: r * k].reshape(r, k).T
        fit = SoftmaxFit(C=float(C), coef=coef, intercept=res.x[r * k :].copy(), n_iter=int(res.nit))
        self.fits.append(fit)
        return fit


def softmax_scores(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Decision values X @ coef.T + intercept, shape (n, n_outputs)."""
    return X @ coef.T + intercept


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Class probabilities from decision values: sigmoid for one output column, soft-max otherwise."""
    if scores.shape[1] == 1:
        p1 = expit(scores[:, 0])
        return np.column_stack([1.0 - p1, p1])
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
