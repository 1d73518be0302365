"""Classical heads on cached features, hyperparameters chosen on a validation split.

    head = fit_head("auto", X_train, y_train, X_val, y_val, task="classification", seed=0)
    head.name, head.params, head.val_scores, head.fit_time_s     # what was chosen, and why
    head.evaluate(X_test, y_test)                                # {"accuracy": ..., "macro_f1": ...}
    save_head(head, "out/head")      # out/head/head.json + out/head/arrays.safetensors, no pickle
    head = load_head("out/head")     # predicts exactly like the saved head

Heads: ``logreg``, ``svm``, ``rbf-svm``, ``ridge``, ``knn`` and ``auto`` (regression: ``ridge``, ``knn``).
``LogisticProbe`` is the fast logistic-regression probe as a scikit-learn classifier.
"""

from transferkit.heads.base import FittedHead
from transferkit.heads.logreg import LogisticProbe
from transferkit.heads.metrics import PRIMARY_METRIC, TASKS, score_all
from transferkit.heads.persist import load_head, save_head
from transferkit.heads.search import DEFAULT_C_GRID, SearchResult, log_grid_search
from transferkit.heads.select import FAMILIES, HEAD_NAMES, HeadSpec, fit_head, heads_for, make_head

__all__ = [
    "DEFAULT_C_GRID",
    "FAMILIES",
    "HEAD_NAMES",
    "PRIMARY_METRIC",
    "TASKS",
    "FittedHead",
    "HeadSpec",
    "LogisticProbe",
    "SearchResult",
    "fit_head",
    "heads_for",
    "load_head",
    "log_grid_search",
    "make_head",
    "save_head",
    "score_all",
]
