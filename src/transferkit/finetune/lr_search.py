"""`lr="auto"`: choose the learning rate by a short search on validation, with successive halving.

Candidates are the strategy's default rate times `FACTORS` (a 30× span). Rung 0 trains each candidate for a
short run (`rung_steps`: about a quarter epoch, at least 3 optimizer steps) from the same starting weights; the
better half by validation accuracy (ties: lower validation loss) goes on to a run twice as long, and so on until
one is left (Jamieson & Talwalkar 2016; Li et al. 2018). Every trial is an ordinary, complete run of the loop (its
own warm-up and schedule over its steps) on a copy of the backbone, so the real run starts from untouched weights.

Trials are recorded in RUN/lr-search.json as they finish, so an interrupted search resumes where it stopped;
their folders are deleted once scored. With a time limit the search spends at most `TIME_SHARE` of it, each
trial its share of that in proportion to its steps.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from transferkit.finetune.config import DEFAULT_LR, FinetuneConfig, FinetuneError
from transferkit.io import read_json, write_json

FACTORS = (1 / 3, 1.0, 3.0, 10.0)
TIME_SHARE = 0.35
RECORD = "lr-search.json"


def candidates(strategy: str) -> list[float]:
    """The rates tried for a strategy: its default times FACTORS, rounded to 3 significant digits."""
    base = DEFAULT_LR[strategy]
    return [float(f"{base * f:.3g}") for f in FACTORS]


def rung_steps(n_train: int, batch_size: int) -> int:
    """Optimizer steps of a rung-0 trial: about a quarter of an epoch, 3 at least, 25 at most."""
    per_epoch = math.ceil(n_train / batch_size)
    return max(3, min(25, math.ceil(per_epoch / 4)))


def plan(n_candidates: int, first: int) -> list[tuple[int, int]]:
    """(how many candidates, steps each) per rung: halve the candidates, double the steps, until one is left."""
    rungs, k, s = [], n_candidates, first
    while k > 1:
        rungs.append((k, s))
        k, s = math.ceil(k / 2), s * 2
    return rungs


def _rank(trial: dict) -> tuple[float, float]:
    return (-trial["val_score"], trial["val_loss"])


def search_lr(train: Callable[..., Any], backbone: Any, folder: Path, config: FinetuneConfig, n_train: int,
              metric: str = "accuracy", key: dict | None = None, log: Callable[[str], None] = lambda m: None) -> dict:
    """Run the search (see the module docstring); returns its record with the chosen rate under "chosen".

    train(backbone, out, config) runs one complete fine-tuning run and returns its FinetuneResult; `key` (the run's
    settings and data) must match a recorded search for its finished trials to be reused."""
    if config.strategy not in DEFAULT_LR:
        raise FinetuneError(f"lr='auto' has no candidate rates for strategy {config.strategy!r}")
    rates = candidates(config.strategy)
    rungs = plan(len(rates), rung_steps(n_train, config.batch_size))
    total_steps = sum(k * s for k, s in rungs)
    budget = config.time_limit_s * TIME_SHARE if config.time_limit_s else None
    record_file = folder / RECORD
    record = read_json(record_file) if record_file.exists() else {}
    key = key or {}
    if record.get("key") != key or record.get("candidates") != rates or record.get("rungs") != [list(r) for r in rungs]:
        record = {"key": key, "candidates": rates, "rungs": [list(r) for r in rungs], "trials": []}
    done = {(t["rung"], t["lr"]): t for t in record["trials"]}
    alive = list(rates)
    t0 = time.perf_counter()
    for r, (_, steps) in enumerate(rungs):
        for lr in alive:
            if (r, lr) in done:
                continue
            out = folder / "lr-search" / f"rung{r}-lr{lr:g}"
            shutil.rmtree(out, ignore_errors=True)
            trial_cfg = replace(config, lr=lr, epochs=max(1, math.ceil(steps / math.ceil(n_train / config.batch_size))),
                                max_steps=steps, patience=None, stop_below=None, checkpoint_every=10**9,
                                time_limit_s=max(1.0, budget * steps / total_steps) if budget else None)
            res = train(copy.deepcopy(backbone), out, trial_cfg)
            best = _best_row(res.history, metric)
            trial = {"rung": r, "lr": lr, "steps": res.steps, "metric": metric,
                     "val_score": best.get("val_" + metric, -math.inf), "val_loss": best.get("val_loss", math.inf),
                     "stopped": res.info.get("stopped"),
                     "wall_s": round(res.wall_time_s, 3)}
            record["trials"].append(trial)
            done[(r, lr)] = trial
            write_json(record_file, record)
            shutil.rmtree(out, ignore_errors=True)
            log(f"lr search, rung {r + 1}/{len(rungs)} ({steps} steps): lr {lr:g} -> val {metric} "
                f"{trial['val_score']:.4f}, val loss {trial['val_loss']:.4f}")
        scored = sorted((done[(r, lr)] for lr in alive), key=_rank)
        alive = [t["lr"] for t in scored[: math.ceil(len(alive) / 2)]]
    shutil.rmtree(folder / "lr-search", ignore_errors=True)
    record["chosen"] = alive[0]
    record["search_s"] = round(time.perf_counter() - t0, 3)
    write_json(record_file, record)
    log(f"lr search chose {alive[0]:g} (from {', '.join(f'{x:g}' for x in rates)})")
    return record


def _best_row(history: list[dict], metric: str) -> dict:
    """A trial's best validated epoch (highest validation `metric`, then lowest loss); {} without validation."""
    rows = [h for h in history if "val_" + metric in h]
    if not rows:
        return {}
    return min(rows, key=lambda h: (-h["val_" + metric], h.get("val_loss", math.inf)))
