"""Which pretrained backbone to start from: transferability scores computed from one forward pass.

    from transferkit.select import rank
    rows = rank(["effnet:lite0", "effnet:lite2"], "bundled:digits", metric="all", sample=500)
    rows[0]["model"], rows[0]["logme"], rows[0]["features"]    # the best, its score, its cached features

Scores on (features, labels): ``logme`` (also regression), ``hscore``; on the backbone's source-task
probabilities: ``leep``, ``nce`` (``source_probabilities`` gives them from cached features).
"""

from transferkit.data.splits import stratified_sample
from transferkit.select.hscore import hscore
from transferkit.select.leep import leep, source_head_unavailable, source_probabilities
from transferkit.select.logme import LogMEFit, log_evidence, logme
from transferkit.select.nce import nce
from transferkit.select.rank import METRICS, UnknownMetricError, metrics_for, rank

__all__ = [
    "METRICS",
    "LogMEFit",
    "UnknownMetricError",
    "hscore",
    "leep",
    "log_evidence",
    "logme",
    "metrics_for",
    "nce",
    "rank",
    "source_head_unavailable",
    "source_probabilities",
    "stratified_sample",
]
