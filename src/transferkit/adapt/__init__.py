"""Domain adaptation on frozen-backbone features: closed-form alignment, adapters, unsupervised model selection."""

from transferkit.adapt.fit import (
    GRID,
    METHODS,
    AdaptResult,
    adapt_features,
    check_class_names,
    check_domains,
    fit_method,
    parse_hyperparameters,
)
from transferkit.adapt.model import FeatureClassifier
from transferkit.adapt.run import AdaptRun, load_run, save_run
from transferkit.adapt.validate import dev_risk, snd_score

__all__ = ["GRID", "METHODS", "AdaptResult", "AdaptRun", "FeatureClassifier", "adapt_features", "check_class_names",
           "check_domains", "dev_risk", "fit_method", "load_run", "parse_hyperparameters", "save_run", "snd_score"]
