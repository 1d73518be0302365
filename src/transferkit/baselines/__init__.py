"""Strong simple baselines as model kinds: TF-IDF + a linear model for text, pixels + logistic regression for
images. `compare` and `fit` run them beside every transfer route, so a route that loses to them is seen losing.
probe:hybrid (TF-IDF beside a frozen encoder's embeddings in one linear model) is built from the same parts."""

from transferkit.baselines.model import (
    BASELINES,
    BaselineError,
    FittedBaseline,
    baseline_for,
    fit_baseline,
    fit_hybrid,
    load_predictor,
    save_baseline,
)

__all__ = ["BASELINES", "BaselineError", "FittedBaseline", "baseline_for", "fit_baseline", "fit_hybrid",
           "load_predictor", "save_baseline"]
