"""Strong simple baselines as model kinds: TF-IDF + a linear model for text, pixels + logistic regression for
images. `compare` and `fit` run them beside every transfer route, so a route that loses to them is seen losing."""

from transferkit.baselines.model import (
    BASELINES,
    BaselineError,
    FittedBaseline,
    baseline_for,
    fit_baseline,
    load_predictor,
    save_baseline,
)

__all__ = ["BASELINES", "BaselineError", "FittedBaseline", "baseline_for", "fit_baseline", "load_predictor",
           "save_baseline"]
