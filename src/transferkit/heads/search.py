"""Log-scale hyperparameter search on a validation score: a coarse grid, then halving refinement.

This is the CLIP linear-probe protocol: sweep a wide log grid, then repeatedly try the two points
half a step either side of the best one, halving the step each round. The search only sees an
``evaluate(value) -> score`` callback, so any fitter (ours or plain scikit-learn) can share it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: Default coarse grid for the inverse regularisation C: 1e-6 .. 1e6, one point per decade.
DEFAULT_C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-6, 6, 13))


@dataclass
class SearchResult:
    """The chosen value, its score, and every (value, score) pair in the order evaluated."""

    best: float
    best_score: float
    history: list[tuple[float, float]]


def _better(score: float, value: float, best_score: float, best_value: float) -> bool:
    """Higher score wins; an equal score wins only with a smaller value (stronger regularisation)."""
    score = score if np.isfinite(score) else -np.inf
    if score != best_score:
        return score > best_score
    return value < best_value


def log_grid_search(
    evaluate: Callable[[float], float],
    grid: Sequence[float] = DEFAULT_C_GRID,
    refine_steps: int = 3,
) -> SearchResult:
    """Maximise ``evaluate`` over a positive log grid, then refine around the best ``refine_steps`` times.

    The coarse grid is evaluated in ascending order (so warm-starting fitters go from strong to weak
    regularisation). Refinement starts at half the median log10 spacing of the grid and never leaves the
    grid's range; with a one-per-decade grid, 3 steps reach 8 points per decade. Ties prefer the
    smaller value.
    """
    values = sorted({float(v) for v in grid})
    if not values or values[0] <= 0:
        raise ValueError("grid must hold positive values")
    history: list[tuple[float, float]] = []
    seen: dict[float, float] = {}

    def run(v: float) -> float:
        if v not in seen:
            seen[v] = float(evaluate(v))
            history.append((v, seen[v]))
        return seen[v]

    best_v, best_s = values[0], -np.inf
    for v in values:
        s = run(v)
        if _better(s, v, best_s, best_v):
            best_v, best_s = v, (s if np.isfinite(s) else -np.inf)
    logs = np.log10(values)
    step = float(np.median(np.diff(logs))) / 2 if len(values) > 1 else 0.0
    lo, hi = logs[0], logs[-1]
    for _ in range(refine_steps if step > 0 else 0):
        centre = np.log10(best_v)
        for cand in (centre - step, centre + step):
            if lo - 1e-12 <= cand <= hi + 1e-12:
                v = float(f"{10.0**cand:.12g}")
                s = run(v)
                if _better(s, v, best_s, best_v):
                    best_v, best_s = v, (s if np.isfinite(s) else -np.inf)
        step /= 2
    return SearchResult(best=best_v, best_score=float(best_s), history=history)
