"""`transferkit fit`: the best model for the user's data within a time budget, chosen on validation, never worse
than the strong simple baseline.

fit is `compare` with a portfolio: the data's baseline (TF-IDF or pixels + a linear model), every probe head on
the frozen features (chosen on validation), then fine-tuning strategies (for text also SetFit-style contrastive
tuning) whose learning rate is searched on validation with successive halving, with early stopping on
validation and a time limit: an equal share of what is left of the budget among the fine-tuning runs still to
come (what one leaves unused goes to the next), then an ensemble. A fine-tuning run that after two validated
epochs still trails the leader so far by more than the noise of the validation split stops there (racing), so
hopeless candidates give their time to the next ones. Strategies run cheapest first, so
a short budget still ends with the baseline and the probes. The choice is `compare`'s rule on validation
accuracy (the cheapest route within `tolerance` of the best; the test split is only reported), so a transfer
route has to beat the baseline on held-out data to be picked, and the report says plainly when it did not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from transferkit.finetune.config import DEFAULT_LR
from transferkit.io import write_json
from transferkit.report import CompareSettings, publish_best, run_compare
from transferkit.report.runner import RESULTS
from transferkit.report.specs import CompareError

#: the portfolio per modality, cheapest first
PORTFOLIO = {
    "text": ("baseline:tfidf", "probe:auto", "probe:hybrid", "finetune:contrastive", "finetune:lora", "finetune:full",
             "ensemble:caruana"),
    "image": ("baseline:pixels", "probe:auto", "finetune:last-k", "finetune:full", "ensemble:caruana"),
}
#: fine-tuning settings of fit's strategies unless the user gives them: each strategy's own learning rate
#: (`--lr auto` searches one on validation; not the default: under a CPU budget of minutes its trials took the
#: time the real runs needed — benchmarks/results/fit_tasks.json, note), epochs end by early stopping on validation
#: (the best epoch's weights are kept); image training items are augmented (light), texts are not
FINETUNE = {"epochs": 6, "patience": 2, "augment": "auto"}
#: per-strategy settings on top: a contrastive epoch pairs every training item once, so it takes more of them
#: (SetFit draws 40 pairs per item) and no early stopping (a few-shot epoch is one step, too little to judge by);
#: the best epoch on validation is kept and the time share ends it
STRATEGY = {"contrastive": {"epochs": 20, "patience": None}}
DEFAULT_BUDGET_S = 15 * 60.0


def portfolio(modality: str) -> str:
    """fit's strategies for a modality, as a --strategies string."""
    if modality not in PORTFOLIO:
        raise CompareError(f"fit has no portfolio for {modality!r} data: give image or text data")
    return ",".join(PORTFOLIO[modality])


def run_fit(settings: CompareSettings, out: str | Path, *, budget_s: float | None = DEFAULT_BUDGET_S,
            strategies: str | None = None, finetune_options: dict | None = None, resume: bool = False,
            tolerance: float = 0.01, progress: bool = False, log: Callable[[str], None] = lambda m: None,
            trust: dict | None = None) -> dict | None:
    """Run fit's portfolio (or `strategies`) into `out`, publish the chosen model to `out/best`; the results
    document (its "best" entry names the model folder; None in a process other than 0 under torchrun)."""
    t0 = time.perf_counter()
    options = {**FINETUNE, **(finetune_options or {})}
    given = dict(finetune_options or {})

    def leaderboard(doc: dict) -> None:
        from transferkit.report.summary import recommend

        rec = recommend(doc, tolerance)
        spent = time.perf_counter() - t0
        if rec is not None:
            log(f"leader so far: {rec['name']} ({rec['metric']} {rec['score']:.4f}); {spent:.0f} s"
                + (f" of {budget_s:.0f} s" if budget_s else "") + " spent")

    doc = run_compare(settings, strategies or portfolio, out, budget_s=budget_s, resume=resume,
                      finetune_options=options, strategy_options=_per_strategy(options, given), progress=progress,
                      log=log, trust=trust, deadline=None if budget_s is None else t0 + budget_s, race=True,
                      on_record=leaderboard)
    if doc is None:  # a process other than 0 under torchrun: it helped extract; process 0 reports
        return None
    doc["fit"] = {"budget_s": budget_s, "tolerance": tolerance, "wall_s": round(time.perf_counter() - t0, 3)}
    write_json(Path(out) / RESULTS, doc)  # saved even when nothing finished (publish_best then writes nothing)
    publish_best(doc, out, tolerance)
    return doc


def _per_strategy(options: dict, given: dict) -> Callable[[str], dict]:
    """Options of one fine-tuning strategy: fit's defaults, the strategy's own on top, the user's (`given`) last;
    a fixed rate the user did not give is the strategy's own default."""
    def of(method: str) -> dict:
        own = {**options, **STRATEGY.get(method, {}), **given}
        if own.get("lr") is None:
            own["lr"] = DEFAULT_LR[method]
        return own
    return of
