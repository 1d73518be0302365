"""`transferkit fit`: the best model for the user's data within a time budget, chosen on validation, never worse
than the strong simple baseline.

fit is `compare` with a portfolio: the data's baseline (TF-IDF or pixels + a linear model), every probe head on
the frozen features (chosen on validation), then fine-tuning strategies with per-strategy defaults, early
stopping on validation and a time limit taken from what is left of the budget. Strategies run cheapest first, so
a short budget still ends with the baseline and the probes. The choice is `compare`'s rule on validation
accuracy (the cheapest route within `tolerance` of the best; the test split is only reported), so a transfer
route has to beat the baseline on held-out data to be picked, and the report says plainly when it did not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from transferkit.io import write_json
from transferkit.report import CompareSettings, publish_best, run_compare
from transferkit.report.runner import RESULTS
from transferkit.report.specs import CompareError

#: the portfolio per modality, cheapest first
PORTFOLIO = {
    "text": ("baseline:tfidf", "probe:auto", "probe:hybrid", "finetune:lora", "finetune:full", "ensemble:caruana"),
    "image": ("baseline:pixels", "probe:auto", "finetune:last-k", "finetune:full", "ensemble:caruana"),
}
#: fine-tuning settings of fit's strategies unless the user gives them: epochs end by early stopping on
#: validation (the best epoch's weights are kept); image training items are augmented (light), texts are not
FINETUNE = {"epochs": 6, "patience": 2, "augment": "auto"}
#: learning rate per fine-tuning strategy (the backbone's; the new head trains at 10x)
STRATEGY_LR = {"head": 1e-3, "lora": 1e-3, "last-k": 2e-4, "gradual": 1e-4, "full": 5e-5}
DEFAULT_BUDGET_S = 15 * 60.0


def portfolio(modality: str) -> str:
    """fit's strategies for a modality, as a --strategies string."""
    if modality not in PORTFOLIO:
        raise CompareError(f"fit has no portfolio for {modality!r} data: give image or text data")
    return ",".join(PORTFOLIO[modality])


def run_fit(settings: CompareSettings, out: str | Path, *, budget_s: float | None = DEFAULT_BUDGET_S,
            strategies: str | None = None, finetune_options: dict | None = None, resume: bool = False,
            tolerance: float = 0.01, progress: bool = False, log: Callable[[str], None] = lambda m: None,
            trust: dict | None = None) -> dict:
    """Run fit's portfolio (or `strategies`) into `out`, publish the chosen model to `out/best`; the results
    document (its "best" entry names the model folder)."""
    t0 = time.perf_counter()
    options = {**FINETUNE, **(finetune_options or {})}

    def leaderboard(doc: dict) -> None:
        from transferkit.report.summary import recommend

        rec = recommend(doc, tolerance)
        spent = time.perf_counter() - t0
        if rec is not None:
            log(f"leader so far: {rec['name']} ({rec['metric']} {rec['score']:.4f}); {spent:.0f} s"
                + (f" of {budget_s:.0f} s" if budget_s else "") + " spent")

    doc = run_compare(settings, strategies or portfolio, out, budget_s=budget_s, resume=resume,
                      finetune_options=options, strategy_options=_per_strategy(options), progress=progress,
                      log=log, trust=trust, deadline=None if budget_s is None else t0 + budget_s,
                      on_record=leaderboard)
    doc["fit"] = {"budget_s": budget_s, "tolerance": tolerance, "wall_s": round(time.perf_counter() - t0, 3)}
    write_json(Path(out) / RESULTS, doc)  # saved even when nothing finished (publish_best then writes nothing)
    publish_best(doc, out, tolerance)
    return doc


def _per_strategy(options: dict) -> Callable[[str], dict]:
    """Options of one fine-tuning strategy: the user's, else the strategy's own learning rate."""
    def of(method: str) -> dict:
        return {**({"lr": STRATEGY_LR[method]} if "lr" not in options and method in STRATEGY_LR else {}), **options}
    return of
